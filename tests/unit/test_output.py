"""Writing generated files: all or nothing, never a user's file, never into a surprise."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from dihya.output import OutputError, write_tree
from dihya.output.manifest import MANIFEST_NAME

FIRST = {"README.md": "# one\n", "app/__init__.py": "x = 1\n", "app/old.py": "gone\n"}
SECOND = {"README.md": "# two\n", "app/__init__.py": "x = 2\n", "docs/API.md": "api\n"}


def tree(root: Path) -> dict[str, str]:
    """Every file under `root` (links as `-> target`), by relative path."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = f"-> {os.readlink(path)}"
        elif path.is_file():
            out[rel] = path.read_text()
    return out


def siblings(root: Path) -> list[str]:
    return sorted(p.name for p in root.parent.iterdir())


def generated(tmp_path: Path, files: dict[str, str] = FIRST) -> Path:
    out = tmp_path / "out"
    write_tree(files, out)
    return out


def test_writes_every_file_and_a_manifest_of_them(tmp_path: Path) -> None:
    out = tmp_path / "out"
    written = write_tree({"a/b.py": "x\n", "c.txt": "y"}, out)
    assert (written.files, written.kept, written.recovered) == (["a/b.py", "c.txt"], [], [])
    assert (out / "a/b.py").read_text() == "x\n"
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["format"] == "dihya-manifest/1"
    assert manifest["files"] == {"a/b.py": hashlib.sha256(b"x\n").hexdigest(),
                                 "c.txt": hashlib.sha256(b"y").hexdigest()}
    assert siblings(out) == ["out"], "temporary directories left behind"


def test_empty_existing_directory_is_used_and_keeps_its_permissions(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir(mode=0o700)
    os.chmod(tmp_path / "out", 0o700)
    write_tree({"f": "1"}, tmp_path / "out")
    assert (tmp_path / "out/f").read_text() == "1"
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o700


def test_non_empty_directory_is_refused_and_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"not empty.*--force") as caught:
        write_tree({"f": "1"}, out)
    assert caught.value.usage
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_force_replaces_a_tree_it_wrote(tmp_path: Path) -> None:
    out = generated(tmp_path)
    write_tree(SECOND, out, force=True)
    assert tree(out) == {**SECOND, MANIFEST_NAME: (out / MANIFEST_NAME).read_text()}
    assert not (out / "app/old.py").exists(), "a file it wrote before and not now stays"
    assert siblings(out) == ["out"]


def test_force_refuses_a_directory_it_did_not_write(tmp_path: Path) -> None:
    """The issue's case: `mkdir x; echo keep > x/notes.txt; generate -o x --force`."""
    out = tmp_path / "x"
    out.mkdir()
    (out / "notes.txt").write_text("keep\n")
    with pytest.raises(OutputError, match=rf"did not generate it.*{MANIFEST_NAME}.*notes\.txt"):
        write_tree(FIRST, out, force=True)
    assert tree(out) == {"notes.txt": "keep\n"}
    assert siblings(out) == ["x"]


def test_force_refuses_a_file_the_user_added_naming_it(tmp_path: Path) -> None:
    out = generated(tmp_path)
    (out / "app/mine.py").write_text("mine\n")
    (out / ".venv/bin").mkdir(parents=True)
    (out / ".venv/bin/python").write_text("venv\n")
    before = tree(out)
    with pytest.raises(OutputError) as caught:
        write_tree(SECOND, out, force=True)
    message = str(caught.value)
    assert ".venv/ (not written by dihya)" in message
    assert "app/mine.py (not written by dihya)" in message and "--update" in message
    assert caught.value.usage and tree(out) == before and siblings(out) == ["out"]


def test_force_and_update_refuse_an_edited_generated_file(tmp_path: Path) -> None:
    out = generated(tmp_path)
    (out / "README.md").write_text("# one, with my edit\n")
    before = tree(out)
    for flags in ({"force": True}, {"keep_added": True}):
        with pytest.raises(OutputError, match=r"README\.md \(changed since dihya wrote it\).*"
                                              r"never overwrites an edit"):
            write_tree(SECOND, out, **flags)
        assert tree(out) == before


def test_update_keeps_what_the_user_added(tmp_path: Path) -> None:
    out = generated(tmp_path)
    (out / "notes.txt").write_text("keep\n")
    (out / "app/mine.py").write_text("mine\n")
    (out / ".venv/bin").mkdir(parents=True)
    (out / ".venv/bin/python").write_text("venv\n")
    (out / "empty").mkdir()
    (out / "link").symlink_to(tmp_path / "elsewhere")
    written = write_tree(SECOND, out, keep_added=True)
    assert written.kept == [".venv/", "app/mine.py", "empty/", "link", "notes.txt"]
    files = tree(out)
    files.pop(MANIFEST_NAME)
    assert files == {**SECOND, "notes.txt": "keep\n", "app/mine.py": "mine\n",
                     ".venv/bin/python": "venv\n", "link": f"-> {tmp_path / 'elsewhere'}"}
    assert (out / "empty").is_dir() and not (out / "app/old.py").exists()
    assert siblings(out) == ["out"]
    # the kept files are still not the tool's: a later --force names them
    with pytest.raises(OutputError, match=r"notes\.txt"):
        write_tree(SECOND, out, force=True)


def test_update_refuses_when_the_new_output_lands_on_a_users_file(tmp_path: Path) -> None:
    out = generated(tmp_path)
    (out / "docs").write_text("my docs file\n")  # SECOND writes docs/API.md
    before = tree(out)
    with pytest.raises(OutputError, match=r"writes where you added docs\b"):
        write_tree(SECOND, out, keep_added=True)
    assert tree(out) == before and siblings(out) == ["out"]


def test_a_link_inside_outdir_is_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "README.md").write_text("not yours to replace\n")
    out = generated(tmp_path)
    (out / "README.md").unlink()
    (out / "README.md").symlink_to(outside / "README.md")
    with pytest.raises(OutputError, match=r"README\.md \(changed"):
        write_tree(SECOND, out, force=True)
    assert (outside / "README.md").read_text() == "not yours to replace\n"


def test_a_broken_manifest_is_refused(tmp_path: Path) -> None:
    out = generated(tmp_path)
    (out / MANIFEST_NAME).write_text('{"format": "dihya-manifest/1", "files": {"../x": "0"}}')
    with pytest.raises(OutputError, match="unsafe path"):
        write_tree(SECOND, out, force=True)
    assert (out / "app/old.py").exists()


@pytest.mark.parametrize("kind", ["directory", "fifo", "link"])
def test_a_manifest_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    out = generated(tmp_path)
    manifest = out / MANIFEST_NAME
    manifest.rename(tmp_path / "saved.json")
    if kind == "directory":
        manifest.mkdir()
    elif kind == "fifo":
        os.mkfifo(manifest)  # opening it for reading must not hang
    else:
        manifest.symlink_to(tmp_path / "saved.json")
    with pytest.raises(OutputError, match=rf"{MANIFEST_NAME} (is not a regular file|cannot be)"):
        write_tree(SECOND, out, force=True)
    assert (out / "app/old.py").exists()


@pytest.mark.parametrize("where", [".", "..", "/"])
def test_the_current_directory_its_ancestors_and_the_root_are_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    out = generated(tmp_path)
    monkeypatch.chdir(out / "app")
    with pytest.raises(OutputError, match=r"refusing to write .*(current|root) directory") as c:
        write_tree(SECOND, Path(where), force=True)
    assert c.value.usage
    assert (out / "app/old.py").exists()


def test_home_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(OutputError, match="your home directory"):
        write_tree(SECOND, home, force=True)
    assert list(home.iterdir()) == []


def test_a_symbolic_link_as_outdir_is_refused(tmp_path: Path) -> None:
    out = generated(tmp_path)
    (tmp_path / "alias").symlink_to(out)
    with pytest.raises(OutputError, match="symbolic link"):
        write_tree(SECOND, tmp_path / "alias", force=True)
    assert (out / "app/old.py").exists()


def test_the_manifest_name_is_reserved(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="reserved"):
        write_tree({MANIFEST_NAME: "{}", "a": "1"}, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_unsafe_path_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="refusing"):
        write_tree({"ok.txt": "1", "../evil": "2"}, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_failure_midway_leaves_no_half_written_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # a file and a directory with the same path cannot both exist: writing fails midway
    files = {"a.txt": "1", "a.txt/b": "2"}
    with pytest.raises(OutputError, match="cannot write") as caught:
        write_tree(files, out)
    assert not caught.value.usage
    assert list(tmp_path.iterdir()) == []


def test_failure_midway_of_an_update_puts_everything_back(tmp_path: Path) -> None:
    out = generated(tmp_path)
    (out / "notes.txt").write_text("keep\n")
    before = tree(out)
    with pytest.raises(OutputError, match="is as it was"):
        write_tree({**SECOND, "x": "1", "x/y": "2"}, out, keep_added=True)
    assert tree(out) == before and siblings(out) == ["out"]


def test_leftovers_of_interrupted_runs_are_recovered_or_removed(tmp_path: Path) -> None:
    """The states a crash leaves, made by hand (test_output_crash.py makes them by killing
    real runs): OUTDIR renamed away, a half-written tree, a user's file in a new tree."""
    out = generated(tmp_path)
    (out / "notes.txt").write_text("keep\n")
    out.rename(tmp_path / ".out.old-abcd1234")  # killed between the two renames
    half = tmp_path / ".out.tmp-efgh5678"  # killed while writing: no manifest yet
    (half / "app").mkdir(parents=True)
    (half / "app/__init__.py").write_text("x = ")
    carrying = generated(tmp_path / "b")  # a new tree, killed while carrying notes2.txt
    (carrying / "notes2.txt").write_text("mine too\n")
    carrying.rename(tmp_path / ".out.tmp-ijkl9012")

    written = write_tree(SECOND, out, keep_added=True)
    assert siblings(out) == ["b", "out"]
    assert (out / "notes.txt").read_text() == "keep\n"
    assert (out / "notes2.txt").read_text() == "mine too\n"
    assert written.kept == ["notes.txt", "notes2.txt"]
    assert any("put back notes2.txt" in line for line in written.recovered)
    assert (out / "README.md").read_text() == SECOND["README.md"]


def test_an_old_tree_without_manifest_from_an_earlier_version_is_left_alone(
        tmp_path: Path) -> None:
    out = generated(tmp_path)
    legacy = tmp_path / ".out.old-mnop3456"  # an earlier dihya's OUTDIR about to be deleted
    legacy.mkdir()
    (legacy / "notes.txt").write_text("never written by this version\n")
    written = write_tree(SECOND, out, force=True)
    assert (legacy / "notes.txt").is_file()
    assert any(f"left {legacy} as it is" in line for line in written.recovered)
