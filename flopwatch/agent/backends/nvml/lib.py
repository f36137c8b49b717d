"""The one entry point to NVML (nvitop's libnvml habits).

The pynvml module is imported lazily on first use; an answer the GPU does not support is None,
not an error; a missing library is a clear NvmlUnavailableError. Every other NVML module of the
agent goes through `Nvml` so that tests can hand in a fake module.

What an NVML call may raise besides `NVMLError` (all caught as `Nvml.error`):
- `NVMLLibraryMismatchError`, a plain Exception and no NVMLError, which nvidia-ml-py 12.575 and
  later (not 12.535) raise from an unversioned wrapper such as
  nvmlDeviceGetComputeRunningProcesses when the driver lacks the versioned symbol it binds
  (`_v3`); `is_code(e, "NVML_ERROR_FUNCTION_NOT_FOUND")` is true for it, and `call_first`
  then tries the older version (`_v2`) where pynvml offers one;
- `UnicodeDecodeError` from pynvml's own decoding of a string the driver returned.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from flopwatch.errors import NvmlUnavailableError

log = logging.getLogger(__name__)

LIBRARY_NOT_FOUND = "NVML library not found: is the NVIDIA driver installed?"
FUNCTION_NOT_FOUND = "NVML_ERROR_FUNCTION_NOT_FOUND"


class Nvml:
    """Lazy access to pynvml (or an injected stand-in with the same names)."""

    def __init__(self, module: Any = None) -> None:
        self._module = module

    @property
    def lib(self) -> Any:
        if self._module is None:
            try:
                self._module = importlib.import_module("pynvml")
            except ImportError as e:
                raise NvmlUnavailableError("pynvml (nvidia-ml-py) is not installed") from e
        return self._module

    @property
    def error(self) -> tuple[type[BaseException], ...]:
        """What an NVML call raises, for `except` clauses (see the module docstring)."""
        nv = self.lib
        mismatch = getattr(nv, "NVMLLibraryMismatchError", None)
        extra = (mismatch,) if isinstance(mismatch, type) else ()
        return (nv.NVMLError, *extra, UnicodeDecodeError)

    def _mismatch(self, e: BaseException) -> bool:
        mismatch = getattr(self.lib, "NVMLLibraryMismatchError", None)
        return isinstance(mismatch, type) and isinstance(e, mismatch)

    def is_code(self, e: BaseException, *names: str) -> bool:
        """Whether `e` carries one of the NVML return codes named (e.g. "NVML_ERROR_IN_USE")."""
        if FUNCTION_NOT_FOUND in names and self._mismatch(e):
            return True
        return self.code_is(getattr(e, "value", None), *names)

    def code_is(self, code: Any, *names: str) -> bool:
        """Whether the return code `code` (an int, as in a GPM metric's nvmlReturn) is named."""
        return code is not None and any(code == getattr(self.lib, n, object()) for n in names)

    def call_first(self, names: Sequence[str], *args: Any) -> Any:
        """Call the first of the functions `names` (newest version first) that both pynvml and
        the driver have; a function pynvml lacks, or whose symbol the driver lacks, is skipped.
        Raises what the last one tried raised (FUNCTION_NOT_FOUND where none exists)."""
        nv = self.lib
        missing: BaseException = nv.NVMLError(nv.NVML_ERROR_FUNCTION_NOT_FOUND)
        for name in names:
            fn = getattr(nv, name, None)
            if fn is None:
                continue
            try:
                return fn(*args)
            except self.error as e:
                if not self.is_code(e, FUNCTION_NOT_FOUND):
                    raise
                log.debug("NVML %s is not in this driver: %s", name, e)
                missing = e
        raise missing

    def optional(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call an NVML function whose answer is optional: None where it fails or is unsupported."""
        try:
            return fn(*args)
        except self.error as e:
            if not self.is_code(e, "NVML_ERROR_NOT_SUPPORTED", FUNCTION_NOT_FOUND):
                log.debug("NVML %s failed: %s", getattr(fn, "__name__", fn), e)
            return None

    def init(self) -> None:
        """nvmlInit, translating a missing library or a failed start."""
        nv = self.lib
        try:
            nv.nvmlInit()
        except self.error as e:
            if self.is_code(e, "NVML_ERROR_LIBRARY_NOT_FOUND"):
                raise NvmlUnavailableError(LIBRARY_NOT_FOUND) from e
            raise NvmlUnavailableError(f"NVML initialisation failed: {e}") from e

    def shutdown(self) -> None:
        try:
            self.lib.nvmlShutdown()
        except self.error as e:
            log.warning("nvmlShutdown failed: %s", e)


def text(value: Any) -> str:
    """NVML strings come as bytes from older pynvml releases and as str from newer ones."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
