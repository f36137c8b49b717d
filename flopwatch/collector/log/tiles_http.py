"""The log over HTTP(S) as tlog-tiles: /checkpoint, /tile/<L>/<N>[.p/<W>], /tile/entries/<N>[...].

Everything is authenticated: a request needs a client certificate the CA verified (mTLS) or the
bearer token (`Authorization: Bearer <token>`, compared in constant time); anything else gets
401. Entries name jobs and accounts, so the log is not public. Only what the latest published
checkpoint covers is served. Tiles and bundles never change once served, so they carry
`Cache-Control: private, max-age=31536000, immutable` (private: a shared cache must not hand an
authenticated answer to someone else); the checkpoint is cacheable for a few seconds only.
Entry bundles are gzipped when the client accepts gzip.
"""

from __future__ import annotations

import gzip
import hmac
import logging
from dataclasses import dataclass
from typing import Protocol

from flopwatch.errors import FlopwatchError, LogRangeError, VerificationError
from flopwatch.httpserve import BoundedHandler, peer_certificate
from flopwatch.tlog.tiles import TileRef, parse_tile_path

log = logging.getLogger(__name__)

CHECKPOINT_TYPE = "text/plain; charset=utf-8"
TILE_TYPE = "application/octet-stream"
IMMUTABLE = "private, max-age=31536000, immutable"
CHECKPOINT_CACHE = "private, max-age=5"


class TileSource(Protocol):
    """What the server serves: the published checkpoint and what it covers."""

    def checkpoint(self) -> bytes | None:
        """The latest published checkpoint (a signed note), or None before the first."""
        ...

    def tile(self, ref: TileRef) -> bytes:
        """A tile's or bundle's bytes; LogRangeError when the published tree does not hold it."""
        ...


@dataclass(frozen=True)
class TileAuth:
    """Who may read: holders of `token` (when set) and, over mTLS, verified client certs."""

    token: bytes | None
    client_certificates: bool

    def allows(self, handler: BoundedHandler) -> bool:
        if self.client_certificates and peer_certificate(handler):
            return True
        if self.token is None:
            return False
        given = handler.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode("utf-8", "replace"), self.token
        )


def tiles_handler(source: TileSource, auth: TileAuth) -> type[BoundedHandler]:
    """A request handler class serving `source` to those `auth` allows."""

    class TilesHandler(BoundedHandler):
        def do_GET(self) -> None:
            self._serve(head_only=False)

        def do_HEAD(self) -> None:
            self._serve(head_only=True)

        def _serve(self, *, head_only: bool) -> None:
            if not auth.allows(self):
                self.answer(
                    401,
                    b"authentication required: a client certificate or a bearer token\n",
                    headers={"WWW-Authenticate": 'Bearer realm="flopwatch-log"'},
                    head_only=head_only,
                )
                return
            path = self.path.split("?", 1)[0]
            try:
                if path == "/checkpoint":
                    self._checkpoint(head_only)
                elif path.startswith("/tile/"):
                    self._tile(parse_tile_path(path[1:]), head_only)
                else:
                    self.answer(404, b"not found\n", head_only=head_only)
            except VerificationError as e:
                self.answer(400, f"{e}\n".encode(), head_only=head_only)
            except LogRangeError:
                self.answer(404, b"not in the published tree\n", head_only=head_only)
            except FlopwatchError as e:
                log.error("cannot serve %s: %s", path[:200], e)
                self.answer(503, b"the log cannot be read now\n", head_only=head_only)

        def _checkpoint(self, head_only: bool) -> None:
            data = source.checkpoint()
            if data is None:
                self.answer(404, b"no checkpoint published yet\n", head_only=head_only)
                return
            self.answer(
                200,
                data,
                content_type=CHECKPOINT_TYPE,
                headers={"Cache-Control": CHECKPOINT_CACHE},
                head_only=head_only,
            )

        def _tile(self, ref: TileRef, head_only: bool) -> None:
            data = source.tile(ref)
            headers = {"Cache-Control": IMMUTABLE}
            if ref.is_entries:
                headers["Vary"] = "Accept-Encoding"
                if "gzip" in self.headers.get("Accept-Encoding", ""):
                    data = gzip.compress(data, compresslevel=6, mtime=0)
                    headers["Content-Encoding"] = "gzip"
            self.answer(200, data, content_type=TILE_TYPE, headers=headers, head_only=head_only)

    return TilesHandler
