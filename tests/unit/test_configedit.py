"""Config edits as transactions: the lock, atomic replacement, symlinks, field-wise approvals."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from dihya.config import ConfigError, config_problem, load_config
from dihya.config.edit import (
    Approval,
    ApprovalRefused,
    edit_document,
    read_document,
    record_approval,
    record_next_version,
    remove_allow,
    set_enabled,
    write_document,
)
from dihya.config.file import ConfigLockTimeout, edit_lock, exposure, lock_path

BASE = "# operator note\n[plugins]\nhook_timeout_s = 5.0  # slow disk\n"


def approval(name: str, **kw: object) -> Approval:
    values = {"distribution": f"dihya-plugin-{name}", "version": "1.0.0",
              "fingerprint": "sha256:" + "0" * 64}
    values.update(kw)
    return Approval(name=name, **values)  # type: ignore[arg-type]


def allow(path: Path) -> dict[str, dict[str, object]]:
    return {e["name"]: e for e in tomllib.loads(path.read_text())["plugins"].get("allow", [])}


EDITOR = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from dihya.config.edit import Approval, edit_document, record_approval

    path, name = Path(sys.argv[1]), sys.argv[2]
    while not Path(sys.argv[3]).exists():  # every process starts its edit at once
        time.sleep(0.001)
    with edit_document(path) as doc:
        time.sleep(0.02)  # a slow edit: without the lock, the others' writes would be lost
        record_approval(doc, Approval(name=name, distribution="d-" + name, version="1",
                                      fingerprint="sha256:" + "0" * 64))
""")


def test_concurrent_edits_from_separate_processes_are_all_kept(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text(BASE)
    go = tmp_path / "go"
    names = [f"p{i}" for i in range(8)]
    procs = [subprocess.Popen([sys.executable, "-c", EDITOR, str(path), n, str(go)])
             for n in names]
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0] * len(names)
    assert sorted(allow(path)) == names
    assert path.read_text().startswith(BASE)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dihya.toml.lock", "dihya.toml",
                                                           "go"]


def test_an_edit_through_a_symlink_replaces_the_target_and_keeps_the_link(
        tmp_path: Path) -> None:
    real = tmp_path / "etc" / "dihya.toml"
    real.parent.mkdir()
    real.write_text(BASE)
    real.chmod(0o640)
    link = tmp_path / "dihya.toml"
    link.symlink_to("etc/dihya.toml")
    assert lock_path(link) == real.parent / ".dihya.toml.lock"
    with edit_document(link) as doc:
        record_approval(doc, approval("a"))
    assert link.is_symlink() and os.readlink(link) == "etc/dihya.toml"
    assert list(allow(real)) == ["a"] and real.read_text().startswith(BASE)
    assert (real.stat().st_mode & 0o777) == 0o640  # permissions kept
    assert not (tmp_path / ".dihya.toml.lock").exists()


def test_a_failed_edit_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text(BASE)
    with pytest.raises(RuntimeError), edit_document(path) as doc:
        record_approval(doc, approval("a"))
        raise RuntimeError("the command changed its mind")
    with pytest.raises(ConfigError, match="hook_timeout_s"), edit_document(path) as doc:
        doc["plugins"]["hook_timeout_s"] = "soon"  # type: ignore[index]
    assert path.read_text() == BASE
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_an_edit_waits_for_the_lock_and_gives_up_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text(BASE)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from dihya.config.file import edit_lock
        with edit_lock(Path({str(path)!r})):
            print("locked", flush=True)
            sys.stdin.read()
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(ConfigLockTimeout) as info, edit_lock(path, timeout_s=0.3):
            pass
        assert "another edit of this config has held its lock" in str(info.value)
        assert str(lock_path(path)) in str(info.value)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    with edit_lock(path, timeout_s=5):  # released with the holder
        pass


def test_an_approval_keeps_what_others_changed_during_its_checks(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text(BASE)
    with edit_document(path) as doc:
        record_approval(doc, approval("a", roles=("admin",), required=True))
    # meanwhile (the approval's sandbox check runs before its edit): a disable
    with edit_document(path) as doc:
        assert set_enabled(doc, "a", False, "OPS-7")
    with edit_document(path) as doc:  # re-approval of an upgrade, no option given
        entry = record_approval(doc, approval("a", version="1.1.0",
                                              fingerprint="sha256:" + "1" * 64))
    got = allow(path)["a"]
    assert (got["version"], got["enabled"], got["disabled_reason"]) == ("1.1.0", False, "OPS-7")
    assert (got["roles"], got["required"], got["mode"]) == (["admin"], True, "sandbox")
    assert (entry.enabled, entry.roles, entry.required) == (False, ("admin",), True)


def test_an_approval_refuses_in_process_for_an_unsafe_class(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text(BASE)
    with edit_document(path) as doc:
        record_approval(doc, approval("a", mode="in-process", safe=True))
    # the class changed (a new version says safe = False): the file's mode still asks for
    # in-process, so the approval is refused rather than silently written
    with pytest.raises(ApprovalRefused, match="safe = False"), edit_document(path) as doc:
        record_approval(doc, approval("a", fingerprint="sha256:" + "2" * 64, safe=False))
    assert allow(path)["a"]["fingerprint"] == "sha256:" + "0" * 64


def test_an_approval_of_a_preapproved_version_updates_that_entry(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text(BASE)
    with edit_document(path) as doc:
        record_approval(doc, approval("a"))
    with path.open("a") as fh:  # the next version, pre-approved by hand
        fh.write('\n[[plugins.allow]]\nname = "a"\ndistribution = "dihya-plugin-a"\n'
                 'version = "2.0.0"\nfingerprint = "sha256:' + "2" * 64 + '"\n')
    with edit_document(path) as doc:
        record_approval(doc, approval("a", version="2.0.0", fingerprint="sha256:" + "2" * 64,
                                      required=True))
    versions = [(e.version, e.required) for e in load_config(path).allow]
    assert versions == [("1.0.0", False), ("2.0.0", True)]


def test_the_next_version_is_approved_beside_the_current_one(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text(BASE)
    with edit_document(path) as doc:
        record_approval(doc, approval("a", mode="in-process", safe=True, roles=("admin",)))
        assert set_enabled(doc, "a", False, "OPS-9")
    with edit_document(path) as doc:  # `approve a --wheel a-2.0.0.whl`
        entry = record_next_version(doc, approval("a", version="2.0.0", safe=True,
                                                  fingerprint="sha256:" + "2" * 64))
    entries = load_config(path).entries_for("a")
    assert [(e.version, e.fingerprint[-1]) for e in entries] == [("1.0.0", "0"), ("2.0.0", "2")]
    assert all((e.mode, e.roles, e.enabled, e.disabled_reason)
               == ("in-process", ("admin",), False, "OPS-9") for e in entries)
    assert (entry.version, entry.mode) == ("2.0.0", "in-process")
    with edit_document(path) as doc:  # again: that version's entry is updated, not doubled
        record_next_version(doc, approval("a", version="2.0.0", safe=True,
                                          fingerprint="sha256:" + "3" * 64))
    assert [e.fingerprint[-1] for e in load_config(path).entries_for("a")] == ["0", "3"]
    with edit_document(path) as doc:  # the way back dropped on purpose
        assert not remove_allow(doc, "a", "9.9.9")
        assert remove_allow(doc, "a", "1.0.0")
    assert [e.version for e in load_config(path).entries_for("a")] == ["2.0.0"]


def test_revoking_the_last_approval_writes_an_explicit_empty_allowlist(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text(BASE)
    with edit_document(path) as doc:
        record_approval(doc, approval("a"))
    running = load_config(path)
    with edit_document(path) as doc:
        assert remove_allow(doc, "a")
    text = path.read_text()
    assert "allow = [] # nothing approved: every approval was revoked" in text, text
    revoked = load_config(path)
    assert (revoked.allow, revoked.allow_declared) == ((), True)
    assert config_problem(revoked, running) is None  # a running server takes it
    with edit_document(path) as doc:  # and approving again turns it back into tables
        record_approval(doc, approval("b"))
    assert "allow = [" not in path.read_text() and list(allow(path)) == ["b"]


def test_write_document_alone_is_atomic_and_validates(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text(BASE + 'rate = "x"\n')
    with pytest.raises(ConfigError, match="unknown keys"):
        write_document(path, read_document(path))
    assert path.read_text().endswith('rate = "x"\n')


def test_exposure_names_who_may_read_or_write_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text(BASE)
    tmp_path.chmod(0o700)
    for private in (0o600, 0o640, 0o400):  # a reading group is how the server may read it
        path.chmod(private)
        assert exposure(path, "config") == []
    assert exposure(tmp_path / "missing.toml", "config") == []
    path.chmod(0o644)
    assert exposure(path, "config") == [
        f"the config file {path} (mode 0644) is readable by every user: run "
        f"`chmod o-rwx,g-w {path}` (the server's user should own it, or read it through a "
        "group of its own)"]
    path.chmod(0o662)
    (problem,) = exposure(path, "store")
    assert "is writable by its group, writable by every user" in problem
    path.chmod(0o606)
    (problem,) = exposure(path, "store")
    assert "is readable and writable by every user" in problem
    path.chmod(0o600)
    tmp_path.chmod(0o777)
    try:
        (problem,) = exposure(path, "config")
        assert f"the directory {tmp_path} (mode 0777)" in problem
        assert "writable by every user, who can replace the file" in problem
        tmp_path.chmod(0o1777)  # sticky: others cannot rename over the owner's file
        assert exposure(path, "config") == []
    finally:
        tmp_path.chmod(0o700)


def test_a_symlink_loop_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    from dihya.config.file import ConfigFileError

    (tmp_path / "a.toml").symlink_to("b.toml")
    (tmp_path / "b.toml").symlink_to("a.toml")
    with pytest.raises(ConfigFileError, match="symlink loop"), \
            edit_document(tmp_path / "a.toml"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.toml", "b.toml"]
