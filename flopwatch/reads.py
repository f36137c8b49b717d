"""Reading files that come from outside (a bundle, a trace, a key, a config) within a bound.

The size of a file is checked WHILE it is read, never after: at most `limit + 1` bytes are
read, so `/dev/zero`, a FIFO that never ends or a file that grows while it is read costs that
much memory and no more, and the caller still tells "over the limit" from "exactly the limit".

`read_at_most` hands the bytes to a caller whose own parser refuses what is too large, with its
own reason (a bundle: step 1 of `flopwatch verify`); `read_limited` refuses it here with a
ConfigError.
"""

from __future__ import annotations

from pathlib import Path

from flopwatch.errors import ConfigError

# A key, certificate, token, secret or tree head file: a few KiB; a TOML config: a few dozen.
MAX_SMALL_FILE_BYTES = 1 << 20
# A JOBS.json file of job windows, and a recorded GPU trace (an hour of 8 GPUs is ~100 MB).
MAX_JOBS_FILE_BYTES = 64 << 20
MAX_TRACE_BYTES = 1 << 30


def read_at_most(path: Path, limit: int) -> bytes:
    """Up to `limit + 1` bytes of `path`, from its start. Raises OSError as open() does."""
    with path.open("rb") as f:
        return f.read(limit + 1)


def read_limited(path: Path, limit: int, what: str) -> bytes:
    """All of `path`, if it holds at most `limit` bytes; ConfigError if it holds more.
    Raises OSError as open() does."""
    data = read_at_most(path, limit)
    if len(data) > limit:
        raise ConfigError(f"{what} {path} is larger than {limit} bytes")
    return data
