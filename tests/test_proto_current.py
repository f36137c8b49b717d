"""The committed generated code matches proto/ (run `make proto` if not)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_current(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("generate", ROOT / "proto" / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    generate.generate(tmp_path)
    assert "flopwatch/vendor/kubelet/podresources/v1" in generate.PACKAGES
    for package in generate.PACKAGES:
        fresh = {p.name: p.read_text() for p in (tmp_path / package).iterdir()}
        committed = {
            p.name: p.read_text()
            for p in (ROOT / package).iterdir()
            if p.name != "__init__.py" and p.suffix in (".py", ".pyi")
        }
        assert sorted(fresh) == sorted(committed), f"{package}: run `make proto`"
        stale = [name for name in fresh if fresh[name] != committed[name]]
        assert not stale, f"{package}: stale generated code {stale}: run `make proto`"
