"""flopwatch.limits lists where every bound of the code is named; the list must stay true."""

import importlib
import re

import flopwatch.limits
from flopwatch.limits import DEFAULT_LIMITS, Limits

LISTED = re.findall(r"^    (flopwatch\.[\w.]+)\.(\w+)\s", flopwatch.limits.__doc__ or "", re.M)


def test_the_docstring_lists_bounds() -> None:
    assert len(LISTED) >= 15


def test_every_bound_listed_exists_where_it_says() -> None:
    missing = []
    for module, name in LISTED:
        try:
            found = hasattr(importlib.import_module(module), name)
        except ImportError:
            found = False
        if not found:
            missing.append(f"{module}.{name}")
    assert missing == []


def test_record_limits_are_positive() -> None:
    assert Limits() == DEFAULT_LIMITS
    for field, value in vars(DEFAULT_LIMITS).items():
        assert value > 0, field
