"""The committed generated code under flopwatch/v1/ matches proto/ (run `make proto` if not)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_current(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    generate.generate(tmp_path)
    fresh = {p.name: p.read_text() for p in (tmp_path / "flopwatch" / "v1").iterdir()}
    committed = {
        p.name: p.read_text()
        for p in (ROOT / "flopwatch" / "v1").iterdir()
        if p.name != "__init__.py" and p.suffix in (".py", ".pyi")
    }
    assert sorted(fresh) == sorted(committed), "run `make proto`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated code {stale}: run `make proto`"
