"""The README's layout tree is true: every folder it names exists, every package folder is named,
and the two set-up commands it promises are make targets."""

import re

from tests.paths import REPO

README = (REPO / "README.md").read_text()


def layout_folders() -> set[str]:
    """Folders named in the layout tree, as paths from the repository root."""
    block = README.split("## Layout", 1)[1].split("```", 2)[1]
    parents: list[tuple[int, str]] = []
    folders: set[str] = set()
    for line in block.splitlines():
        m = re.match(r"^( *)(\S+/)(?:  (\S+/))?", line)
        if not m or len(m.group(1)) > 20:  # not a folder, or a description's next line
            continue
        indent = len(m.group(1))
        while parents and parents[-1][0] >= indent:
            parents.pop()
        base = parents[-1][1] if parents else ""
        for name in filter(None, (m.group(2), m.group(3))):
            folders.add(base + name)
        parents.append((indent, base + m.group(2)))
    return folders


def test_every_folder_in_the_layout_exists() -> None:
    named = layout_folders()
    assert "flopwatch/collector/store/postgres/" in named
    missing = sorted(f for f in named if not (REPO / f).is_dir())
    assert missing == []


def test_every_package_folder_is_in_the_layout() -> None:
    named = layout_folders()
    packages = {
        p.parent.relative_to(REPO).as_posix() + "/"
        for p in (REPO / "flopwatch").rglob("__init__.py")
    }
    # Generated code below v1/ and vendor/ is named by its top folder.
    packages = {p for p in packages if not p.startswith("flopwatch/vendor/") or p.count("/") == 2}
    assert sorted(packages - named) == []


def test_the_two_setup_commands_are_make_targets() -> None:
    makefile = (REPO / "Makefile").read_text()
    for target in ("demo", "test"):
        assert f"make {target}" in README
        assert re.search(rf"^{target}:", makefile, re.M), target
