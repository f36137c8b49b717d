"""The one entry point to NVML (nvitop's libnvml habits).

The pynvml module is imported lazily on first use; an answer the GPU does not support is None,
not an error; a missing library is a clear NvmlUnavailableError. Every other NVML module of the
agent goes through `Nvml` so that tests can hand in a fake module.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

from flopwatch.errors import NvmlUnavailableError

log = logging.getLogger(__name__)

LIBRARY_NOT_FOUND = "NVML library not found: is the NVIDIA driver installed?"


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
    def error(self) -> type[BaseException]:
        """pynvml's NVMLError class, for `except` clauses."""
        err: type[BaseException] = self.lib.NVMLError
        return err

    def is_code(self, e: BaseException, *names: str) -> bool:
        """Whether `e` carries one of the NVML return codes named (e.g. "NVML_ERROR_IN_USE")."""
        value = getattr(e, "value", None)
        return any(value == getattr(self.lib, name, object()) for name in names)

    def optional(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call an NVML function whose answer is optional: None where it fails or is unsupported."""
        try:
            return fn(*args)
        except self.error as e:
            if not self.is_code(e, "NVML_ERROR_NOT_SUPPORTED", "NVML_ERROR_FUNCTION_NOT_FOUND"):
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
    return value.decode() if isinstance(value, bytes) else str(value)
