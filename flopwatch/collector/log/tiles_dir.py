"""The log as tlog-tiles files in a directory, for any web server, object store or CDN to serve.

Layout, under the directory: `checkpoint`, `tile/<L>/<N>[.p/<W>]` and `tile/entries/<N>[...]`,
exactly the URL paths of c2sp.org/tlog-tiles. Every file is written to a temporary name, synced
and renamed into place, so a reader never sees half a file; the checkpoint is written last, after
every tile it covers. A crash in between leaves tiles no checkpoint covers yet, which is allowed
(they are rewritten identically next time). Writing resumes from the size of the checkpoint on
disk. Serving the directory must add the access control the collector's own server has.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from flopwatch.errors import ConfigError, VerificationError
from flopwatch.tlog.checkpoint import parse_checkpoint
from flopwatch.tlog.tiles import TileRef

# How many tiles one `write` call writes at most (a catch-up of a large log is done in rounds).
MAX_TILES_PER_WRITE = 4096


class TileDirectory:
    """Writes tiles and the checkpoint under `root` (created mode 0750 if missing)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            root.mkdir(mode=0o750, parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create the tiles directory {root}: {e.strerror}") from e

    def written_size(self) -> int:
        """The size of the checkpoint on disk (0 if none or unreadable)."""
        try:
            checkpoint, _ = parse_checkpoint((self.root / "checkpoint").read_bytes())
        except (OSError, VerificationError):
            return 0
        return checkpoint.size

    def _write(self, relative: str, data: bytes) -> None:
        path = self.root / relative
        path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def write(
        self,
        tiles: list[TileRef],
        read: Callable[[TileRef], bytes | None],
        checkpoint: bytes | None,
    ) -> None:
        """Write `tiles` (bytes from `read`; None: that one is left out), then `checkpoint` if
        given; sync the directory."""
        for ref in tiles:
            data = read(ref)
            if data is not None:
                self._write(ref.path(), data)
        if checkpoint is not None:
            self._write("checkpoint", checkpoint)
        fd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
