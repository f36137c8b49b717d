"""A collector's C2SP log with one real witness on 127.0.0.1:0, for the tests that run a
collector end to end (test_tlog_collector.py, test_published_checkpoint.py): the log key, the
witness (its cosigner, state and HTTP service), the policy naming it, the tiles token, and the
`TlogConfig` that ties them together; `fetch` reads the served tiles with the token."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flopwatch.collector.log.tlog_config import TlogConfig
from flopwatch.httpserve import HttpService
from flopwatch.keys import SigningKey
from flopwatch.tlog.cosignature import Cosigner
from flopwatch.tlog.note import Ed25519NoteSigner, Ed25519Verifier
from flopwatch.witness.service import Witness, witness_handler
from flopwatch.witness.state import WitnessState

TOKEN = "collector-tiles-token-0123"


@dataclass
class WitnessedLog:
    key: SigningKey
    key_path: Path
    log_verifier: Ed25519Verifier
    cosigner: Cosigner
    state: WitnessState
    witness: HttpService
    tlog: TlogConfig

    def close(self) -> None:
        self.witness.close()
        self.state.close()


def witnessed_log(tmp_path: Path, origin: str, **tlog_fields: Any) -> WitnessedLog:
    """Everything under `tmp_path`; `tlog_fields` add to the TlogConfig (e.g. tiles_dir)."""
    key_path = tmp_path / "collector-key.pem"
    key = SigningKey.load_or_create(key_path)[0]
    log_verifier = Ed25519NoteSigner(origin, key.private_key).verifier
    cosigner = Cosigner("w.example", SigningKey.generate().private_key)
    state = WitnessState(tmp_path / "w.db")
    witness = HttpService(
        "127.0.0.1:0",
        witness_handler(Witness(cosigner=cosigner, logs={origin: [log_verifier]}, state=state)),
    )
    policy = tmp_path / "policy"
    policy.write_text(
        f"witness W {cosigner.verifier.vkey()} http://127.0.0.1:{witness.port}\nquorum W\n"
    )
    token = tmp_path / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    tlog = TlogConfig(
        origin=origin,
        tiles_listen="127.0.0.1:0",
        token_file=token,
        witness_policy=policy,
        checkpoint_interval_s=3600,
        **tlog_fields,
    )
    return WitnessedLog(key, key_path, log_verifier, cosigner, state, witness, tlog)


def fetch(port: int, path: str) -> bytes:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    req.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return bytes(r.read())
