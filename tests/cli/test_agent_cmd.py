"""`flopwatch agent` refuses what NVML cannot do before it starts anything."""

from __future__ import annotations

import pytest

from flopwatch.cli.agent_cmd import _check_interval
from flopwatch.cli.main import main
from flopwatch.errors import ConfigError


@pytest.mark.parametrize("interval", ["0.1", "0.05", "0.001"])
def test_an_nvml_interval_of_100_ms_or_less_is_a_usage_error(
    interval: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["agent", "--collector", "127.0.0.1:1", "--interval", interval]) == 2
    err = capsys.readouterr().err
    assert "--interval must be more than 0.1 s with the NVML backend" in err
    assert "more than 100 ms apart" in err


def test_other_backends_and_longer_intervals_pass_the_check() -> None:
    _check_interval("nvml", 0.11)
    _check_interval("sim:2", 0.05)  # no NVML, no GPM
    with pytest.raises(ConfigError):
        _check_interval("nvml", 0.1)
