"""`.pth` files that run code at interpreter start: found, owned, hashed, acknowledged.

A real wheel shipping a `.pth` file is pip-installed into a directory scanned as a site
directory; the real venv case (`plugins verify` exit codes) is in
`tests/integration/test_pth.py`.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from dihya.config import ConfigError, config_from_document, load_config
from dihya.config.edit import add_known_pth, read_document, write_document
from dihya.gate.startup import (
    BY_CONFIG,
    BY_SETUPTOOLS,
    SETUPTOOLS_PTH,
    SETUPTOOLS_PTH_SHA256,
    KnownPth,
    runs_code,
    scan_pth,
    site_directories,
)
from support.wheels import build_wheel, pip_install

HOOK = b"import os; os.environ.setdefault('DIHYA_TEST_PTH', '1')\n"
# what setuptools 60.0-84.2 ship (checked against their wheels)
SETUPTOOLS_LINE = (b"import os; var = 'SETUPTOOLS_USE_DISTUTILS'; enabled = os.environ.get(var, "
                   b"'local') == 'local'; enabled and __import__('_distutils_hack')"
                   b".add_shim(); \n")


@pytest.mark.parametrize(("content", "runs"), [
    (b"import os\n", True),
    (b"/some/dir\nimport\tsys\n", True),
    (b"# import os\n", False),
    (b"/opt/lib\n\n", False),
    (b" import os\n", False),  # `site` only runs lines that *start* with `import`
    (b"importlib\n", False),  # a path named importlib...
    (b"\xef\xbb\xbfimport os\n", True),  # a BOM, which Python 3.13 strips
    (b"/x\rimport os", True),  # universal newlines
    (b"\xff\xfe/bad bytes\nimport os\n", True),
])
def test_what_runs_code(content: bytes, runs: bool) -> None:
    assert runs_code(content) is runs


def test_setuptools_hash_is_what_setuptools_ships() -> None:
    assert hashlib.sha256(SETUPTOOLS_LINE).hexdigest() in SETUPTOOLS_PTH_SHA256


def install_pth_wheel(tmp_path: Path, dist: str, files: dict[str, bytes]) -> Path:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    wheel = build_wheel(tmp_path / "wheels", dist, "1.0.0", files, {}, requires=())
    pip_install(sys.executable, str(wheel), target=site)
    return site


def test_owner_hash_and_acknowledgement(tmp_path: Path) -> None:
    site = install_pth_wheel(tmp_path, "pth-owner-demo", {
        "owner_demo_hook.pth": HOOK, "owner_demo_paths.pth": b"/nowhere\n",
        "owner_demo/__init__.py": b""})
    (site / SETUPTOOLS_PTH).write_bytes(SETUPTOOLS_LINE)  # as setuptools leaves it
    (site / "stray.pth").write_bytes(b"import sys\n")
    found = {p.file: p for p in scan_pth(directories=[str(site)])}
    # owner_demo_paths.pth only adds a directory to sys.path: not reported
    assert set(found) == {"owner_demo_hook.pth", SETUPTOOLS_PTH, "stray.pth"}
    hook = found["owner_demo_hook.pth"]
    assert (hook.owner, hook.acknowledged) == ("pth-owner-demo", False)
    assert hook.sha256 == hashlib.sha256(HOOK).hexdigest()
    assert hook.path == str(site / "owner_demo_hook.pth")
    assert found["stray.pth"].owner is None and "no owner" in found["stray.pth"].describe()
    assert found[SETUPTOOLS_PTH].acknowledged_by == BY_SETUPTOOLS
    known = [KnownPth("owner_demo_hook.pth", hook.sha256)]
    again = {p.file: p for p in scan_pth(known, [str(site)])}
    assert again["owner_demo_hook.pth"].acknowledged_by == BY_CONFIG
    assert not again["stray.pth"].acknowledged
    assert again["owner_demo_hook.pth"].to_json(with_path=False) == {
        "file": "owner_demo_hook.pth", "owner": "pth-owner-demo", "sha256": hook.sha256,
        "acknowledged": True, "acknowledged_by": "config"}


def test_an_edited_file_is_no_longer_acknowledged(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / SETUPTOOLS_PTH).write_bytes(SETUPTOOLS_LINE + b"import evil\n")
    (site / "mine.pth").write_bytes(HOOK)
    known = [KnownPth("mine.pth", hashlib.sha256(HOOK).hexdigest())]
    (site / "mine.pth").write_bytes(HOOK + b"import evil\n")
    assert [p.acknowledged for p in scan_pth(known, [str(site)])] == [False, False]
    # the same content under another name is another file: not acknowledged either
    (site / "mine.pth").rename(site / "other.pth")
    (site / "other.pth").write_bytes(HOOK)
    assert [p.acknowledged for p in scan_pth(known, [str(site)])] == [False, False]


def test_site_directories_are_those_of_this_interpreter() -> None:
    import site
    import sysconfig

    dirs = site_directories()
    assert dirs and all(Path(d).is_dir() for d in dirs)
    if sys.prefix != sys.base_prefix:  # a venv: its own site-packages is scanned
        assert sysconfig.get_paths()["purelib"] in dirs
    assert set(dirs) >= {d for d in site.getsitepackages() if Path(d).is_dir()}


@pytest.mark.parametrize(("table", "fragment"), [
    ('known_pth = "x.pth"', "array of tables"),
    ('known_pth = [{file = "x.pth"}]', "`sha256` is required"),
    ('known_pth = [{file = "x.pth", sha256 = "abc"}]', "64 hex digits"),
    ('known_pth = [{file = "site/x.pth", sha256 = "' + "0" * 64 + '"}]', "without its directory"),
    ('known_pth = [{file = "x.txt", sha256 = "' + "0" * 64 + '"}]', "name of a .pth file"),
    ('known_pth = [{file = "x.pth", sha256 = "' + "0" * 64 + '", why = 1}]', "unknown keys"),
])
def test_config_errors_say_what_to_fix(tmp_path: Path, table: str, fragment: str) -> None:
    config = tmp_path / "dihya.toml"
    config.write_text(f"[plugins]\n{table}\n")
    with pytest.raises(ConfigError, match="known_pth") as caught:
        load_config(config)
    assert fragment in str(caught.value) and str(config) in str(caught.value)


def test_acknowledging_keeps_comments_and_is_idempotent(tmp_path: Path) -> None:
    config = tmp_path / "dihya.toml"
    digest = "A" * 64
    config.write_text("# operator: keep me\n[plugins]\nhook_timeout_s = 3.0\n"
                      f'known_pth = [{{file = "a.pth", sha256 = "{digest}"}}]  # inline\n')
    doc = read_document(config)
    assert not add_known_pth(doc, {"file": "a.pth", "sha256": digest.lower()})
    assert add_known_pth(doc, {"file": "b.pth", "sha256": "b" * 64, "note": "reviewed"})
    write_document(config, doc)
    text = config.read_text()
    assert text.startswith("# operator: keep me\n") and "hook_timeout_s = 3.0" in text
    parsed = load_config(config).known_pth
    assert parsed == (KnownPth("a.pth", "a" * 64), KnownPth("b.pth", "b" * 64, "reviewed"))
    assert config_from_document(config, read_document(config)).known_pth == parsed


def test_a_sitecustomize_module_a_distribution_ships_is_reported(tmp_path: Path) -> None:
    """`site` imports `sitecustomize` (and `usercustomize`) at every start, after the `.pth`
    files: a distribution merely installed, approved or not, can ship one. It is reported
    like a code-running `.pth` file (owner, hash), so `plugins verify` fails until the
    operator acknowledges that exact content; a package of that name cannot be
    acknowledged (its content is not pinned): remove it."""
    code = b"import os\nos.environ.setdefault('DIHYA_TEST_SITECUSTOMIZE', '1')\n"
    site = install_pth_wheel(tmp_path, "customize-demo", {"sitecustomize.py": code,
                                                          "customize_demo/__init__.py": b""})
    (site / "usercustomize").mkdir()
    (site / "usercustomize" / "__init__.py").write_bytes(b"import os\n")
    (site / "sitecustomize_notes.txt").write_bytes(b"not a module\n")
    found = {p.file: p for p in scan_pth(directories=[str(site)])}
    assert set(found) == {"sitecustomize.py", "__init__.py"}, found
    planted = found["sitecustomize.py"]
    assert (planted.owner, planted.acknowledged) == ("customize-demo", False)
    assert planted.sha256 == hashlib.sha256(code).hexdigest()
    assert "runs code at interpreter start" in planted.describe()
    package = found["__init__.py"]
    assert package.path == str(site / "usercustomize" / "__init__.py")
    assert package.sha256 is None and not package.acknowledged
    known = [KnownPth("sitecustomize.py", planted.sha256)]
    again = {p.file: p for p in scan_pth(known, [str(site)])}
    assert again["sitecustomize.py"].acknowledged_by == BY_CONFIG
    (site / "sitecustomize.py").write_bytes(code + b"import evil\n")
    assert not {p.file: p for p in scan_pth(known, [str(site)])}["sitecustomize.py"].acknowledged


def test_a_sitecustomize_acknowledgement_is_a_valid_config_entry(tmp_path: Path) -> None:
    config = tmp_path / "dihya.toml"
    config.write_text('[plugins]\nknown_pth = [{file = "sitecustomize.py", sha256 = "'
                      + "0" * 64 + '"}]\n')
    assert load_config(config).known_pth == (KnownPth("sitecustomize.py", "0" * 64),)
