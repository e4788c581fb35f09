"""Writing generated files: all or nothing, never into a non-empty directory by surprise."""

from __future__ import annotations

from pathlib import Path

import pytest

from dihya.output import OutputError, write_tree


def test_writes_every_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    written = write_tree({"a/b.py": "x\n", "c.txt": "y"}, out)
    assert written == ["a/b.py", "c.txt"]
    assert (out / "a/b.py").read_text() == "x\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out"], "temporary directories left behind"


def test_empty_existing_directory_is_used(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    write_tree({"f": "1"}, tmp_path / "out")
    assert (tmp_path / "out/f").read_text() == "1"


def test_non_empty_directory_is_refused_and_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"not empty.*--force"):
        write_tree({"f": "1"}, out)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_force_replaces_the_content(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    write_tree({"new.txt": "new"}, out, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_unsafe_path_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="refusing"):
        write_tree({"ok.txt": "1", "../evil": "2"}, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_failure_midway_leaves_no_half_written_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # a file and a directory with the same path cannot both exist: writing fails midway
    files = {"a.txt": "1", "a.txt/b": "2"}
    with pytest.raises(OSError):
        write_tree(files, out)
    assert list(tmp_path.iterdir()) == []
