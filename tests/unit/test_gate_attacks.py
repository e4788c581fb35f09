"""The gate, attacked by someone who can write site-packages after an approval (but is not
root), and by a publisher whose distribution looks like another: real wheels installed into
a real site directory, each attack checked against the verdict and, where it matters,
against what `import` then runs.

The approved plugin here discovers its submodules the way many plugin packages do
(`pkgutil.walk_packages` over its own `__path__`, importing each one): a module that the
attacker makes importable inside the package runs with it, unless the gate refuses it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from dihya.gate import verifycache
from dihya.gate.fingerprint import FINGERPRINT_HEADER, FingerprintError, fingerprint_wheel
from dihya.registry import build_registry
from support.wheels import build_plugin_wheel, build_wheel, pip_install, plugin_source

WALKER = '''
import importlib, pkgutil
for _info in pkgutil.walk_packages(__path__, __name__ + "."):
    importlib.import_module(_info.name)
'''


def _install_walker(plugin_site) -> tuple[str, Path]:
    name = plugin_site.unique()
    module = f"dihya_plugin_{name}"
    plugin_site.install(name, source=WALKER + plugin_source(name),
                        extra_files={f"{module}/generators/__init__.py": "",
                                     f"{module}/generators/table.py": "KIND = 'table'\n"})
    return name, plugin_site.site / module


def _verdict(plugin_site, name: str, entry) -> tuple[str, str | None, str]:
    snapshot = build_registry(plugin_site.config(entry), path=plugin_site.path)
    try:
        record = snapshot.get(name)
        return record.status, record.reason, record.message
    finally:
        snapshot.close()


def _planted(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('ran')\n"


@pytest.fixture(params=["cache", "no-cache"])
def cache_mode(request, monkeypatch, tmp_path) -> str:
    """Each attack with the verification cache (warm: the plugin verified once before the
    attack) and without it."""
    if request.param == "no-cache":
        monkeypatch.setenv(verifycache.ENV, "off")
    else:
        monkeypatch.setenv(verifycache.ENV, str(tmp_path / "cache" / "verified.json"))
    return str(request.param)


def test_the_walking_plugin_is_active_untouched(plugin_site) -> None:
    name, _package = _install_walker(plugin_site)
    assert _verdict(plugin_site, name, plugin_site.entry(name))[:2] == ("active", None)


# -- code a package gains where the unlisted-file walk did not look ------------------------

@pytest.mark.parametrize("where", ["__pycache__/__init__.py", "__pycache__/__init__.pyc",
                                   "generators/__pycache__/__init__.py",
                                   "__pycache__/sub/__init__.py"])
def test_a_package_named_pycache_is_unlisted_code(plugin_site, tmp_path, cache_mode,
                                                   where) -> None:
    """`__pycache__` is a valid module name: `pkg/__pycache__/__init__.py` is the package
    `pkg.__pycache__`, which `walk_packages` finds and imports. Everything under
    `__pycache__/` is left out of the fingerprint (installers write bytecode there), and
    the unlisted-file walk skipped those directories: the planted package ran with an
    approved plugin. Only tagged bytecode (`NAME.cpython-311.pyc`) belongs there."""
    name, package = _install_walker(plugin_site)
    entry = plugin_site.entry(name)
    assert _verdict(plugin_site, name, entry)[:2] == ("active", None)
    marker = tmp_path / "ran"
    target = package / where
    target.parent.mkdir(parents=True, exist_ok=True)
    if where.endswith(".pyc"):
        import importlib.util

        code = compile(_planted(marker), str(target), "exec")
        import marshal

        target.write_bytes(importlib.util.MAGIC_NUMBER + b"\0" * 12 + marshal.dumps(code))
    else:
        target.write_text(_planted(marker))
    status, reason, message = _verdict(plugin_site, name, entry)
    assert (status, reason) == ("refused", "unlisted-file"), message
    assert "__pycache__" in message
    assert not marker.exists(), "the planted package ran"


def test_tagged_bytecode_in_pycache_is_still_not_unlisted(plugin_site, cache_mode) -> None:
    name, package = _install_walker(plugin_site)
    entry = plugin_site.entry(name)
    for directory in (package / "__pycache__", package / "generators" / "__pycache__"):
        directory.mkdir(exist_ok=True)
        (directory / "__init__.cpython-311.pyc").write_bytes(b"junk")
        (directory / "table.cpython-311.opt-1.pyc").write_bytes(b"junk")
    assert _verdict(plugin_site, name, entry)[:2] == ("active", None)


@pytest.mark.parametrize("kind", ["package", "subpackage", "dangling-then-created"])
def test_a_link_to_a_directory_inside_the_package_is_unlisted_code(plugin_site, tmp_path,
                                                                   cache_mode, kind) -> None:
    """`pkg/extra -> /elsewhere/extra` (a package outside site-packages, writable by its
    owner): the unlisted-file walk did not follow links to directories, so its modules
    were never seen, and `walk_packages` imported them. A wheel never installs a link; a
    dangling one is refused too, since its target can appear later without the package
    directory changing."""
    name, package = _install_walker(plugin_site)
    entry = plugin_site.entry(name)
    assert _verdict(plugin_site, name, entry)[:2] == ("active", None)  # cache warmed
    marker = tmp_path / "ran"
    outside = tmp_path / "outside" / "extra"
    if kind != "dangling-then-created":
        outside.mkdir(parents=True)
        (outside / "__init__.py").write_text(_planted(marker))
    link = package / "generators" / "more" if kind == "subpackage" else package / "extra"
    os.symlink(outside, link)
    status, reason, message = _verdict(plugin_site, name, entry)
    assert (status, reason) == ("refused", "unlisted-file"), message
    if kind == "dangling-then-created":
        outside.mkdir(parents=True)
        (outside / "__init__.py").write_text(_planted(marker))
        status, reason, message = _verdict(plugin_site, name, entry)
        assert (status, reason) == ("refused", "unlisted-file"), message
    assert not marker.exists(), "code behind the link ran"


# -- look-alike distributions: defended by the fingerprint -----------------------------------

def _replace_with(plugin_site, module: str, wheel: Path) -> None:
    """The approved distribution's files removed and the look-alike's unpacked in their
    place, as someone who writes site-packages would (pip refuses such names)."""
    for old in [*plugin_site.site.glob(f"{module}-*.dist-info"), plugin_site.site / module]:
        shutil.rmtree(old)
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(plugin_site.site)


def test_a_confusable_distribution_name_does_not_take_an_approval(plugin_site) -> None:
    """A distribution whose name differs from the approved one only by a Unicode
    confusable (KELVIN SIGN for `k`, which `canonicalize_name` folds to `k`), with the
    same entry point and version and other code: the name check passes, the fingerprint
    (over METADATA, which holds the name, and the code) does not."""
    name = plugin_site.unique("k")
    plugin_site.install(name)
    entry = plugin_site.entry(name)
    module = f"dihya_plugin_{name}"
    lookalike = entry.distribution.replace("k", "\u212a", 1)
    assert lookalike != entry.distribution
    wheel = build_wheel(plugin_site.wheels / "lookalike", lookalike, entry.version,
                        {f"{module}/__init__.py": "import os\n" + plugin_source(name)},
                        {name: f"{module}:Plugin"})
    _replace_with(plugin_site, module, wheel)
    status, reason, message = _verdict(plugin_site, name, entry)
    assert (status, reason) == ("refused", "fingerprint-mismatch"), message
    assert module not in sys.modules


def test_a_confusable_version_does_not_match(plugin_site) -> None:
    """`1.0.0` approved, `1.0.\uff10` (FULLWIDTH DIGIT ZERO) installed: versions are
    compared as exact strings, never normalised."""
    name = plugin_site.unique()
    plugin_site.install(name, version="1.0.0")
    entry = plugin_site.entry(name)
    module = f"dihya_plugin_{name}"
    wheel = build_wheel(plugin_site.wheels / "lookalike", entry.distribution, "1.0.\uff10",
                        {f"{module}/__init__.py": plugin_source(name)},
                        {name: f"{module}:Plugin"})
    _replace_with(plugin_site, module, wheel)
    status, reason, message = _verdict(plugin_site, name, entry)
    assert (status, reason) == ("refused", "version-mismatch"), message


def test_a_cache_file_of_the_previous_format_vouches_for_nothing(plugin_site, tmp_path,
                                                                  monkeypatch) -> None:
    """An entry written by the walk that skipped `__pycache__/` and links (format v1)
    could vouch for a package holding a planted `__pycache__/__init__.py`: adding a file
    there changes `__pycache__`'s ctime only, which v1 entries never looked at. A v1 file,
    even authenticated by the right key, is ignored."""
    import hashlib
    import hmac
    import time

    cache_file = tmp_path / "cache" / "verified.json"
    monkeypatch.setenv(verifycache.ENV, str(cache_file))
    name, _package = _install_walker(plugin_site)
    entry = plugin_site.entry(name)
    dist_info = next(p.dist_info for p in plugin_site.discover() if p.name == name)
    cache = verifycache.shared()
    assert cache is not None
    deadline = time.monotonic() + 60
    while True:  # remembered once its files are older than the racy window
        cache.inspect(dist_info)
        if cache.remembers(dist_info):
            break
        assert time.monotonic() < deadline, "the cache never remembered the plugin"
        time.sleep(0.2)
    assert _verdict(plugin_site, name, entry)[:2] == ("active", None)
    assert _from_file(cache_file).remembers(dist_info)
    _head, _sep, body = cache_file.read_bytes().partition(b"\n")
    key = cache_file.with_name(cache_file.name + ".key").read_bytes()
    old_magic = b"dihya-verify-cache-v1"
    mac = hmac.new(key, old_magic + b"\n" + body, hashlib.sha256).hexdigest().encode()
    cache_file.write_bytes(old_magic + b" " + mac + b"\n" + body)
    assert not _from_file(cache_file).remembers(dist_info)


def _from_file(path: Path) -> verifycache.VerifyCache:
    """The cache as a new process reads it from its file."""
    cache = verifycache.VerifyCache(path)
    cache._load()
    return cache


# -- the fingerprint's own encoding ------------------------------------------------------------

GUARDED = '''
try:
    from . import guard as _guard
    GUARDED = True
except ImportError:
    GUARDED = False
'''


def test_a_file_name_with_a_line_break_cannot_hide_a_deleted_file(plugin_site) -> None:
    """The fingerprint hashes the lines `<sha256> <size> <path>`: a path holding a line
    break can carry the next file's whole line, so a file can be deleted and its line
    folded into the name of the file sorted just before it — the same text, the same
    fingerprint, one file fewer (here the optional `guard` module the plugin imports if
    present). A file name with a line break is refused: it cannot be fingerprinted
    unambiguously (no wheel a publisher would build holds one)."""
    import csv
    import io

    name = plugin_site.unique()
    module = f"dihya_plugin_{name}"
    guard_rel = f"{module}/guard.py"
    for nonce in range(2000):  # contents for a data file whose line sorts just before the guard's
        wheel = build_plugin_wheel(plugin_site.wheels / str(nonce), name,
                                   source=GUARDED + plugin_source(name),
                                   extra_files={guard_rel: "CHECKS = True\n",
                                                f"{module}/data.txt": f"data {nonce}\n"})
        with zipfile.ZipFile(wheel) as zf:
            lines = sorted(f"{hashlib.sha256(zf.read(n)).hexdigest()} {zf.getinfo(n).file_size} {n}"
                           for n in zf.namelist() if not n.endswith("/RECORD"))
        guard_line = next(x for x in lines if x.endswith(" " + guard_rel))
        if lines[lines.index(guard_line) - 1].endswith(f" {module}/data.txt"):
            break
    else:
        pytest.skip("no data file sorted just before the guard")
    assert fingerprint_wheel(wheel) == digest_of_lines(lines)
    pip_install(sys.executable, str(wheel), target=plugin_site.site)
    entry = plugin_site.entry(name)
    assert _verdict(plugin_site, name, entry)[:2] == ("active", None)
    # the attack: the guard deleted, its line folded into the data file's name
    site = plugin_site.site
    folded = f"{module}/data.txt\n{guard_line[:guard_line.rindex(' ')]}"
    folded += f" {module}/guard.py"
    (site / folded).parent.mkdir()
    os.rename(site / module / "data.txt", site / folded)
    (site / module / "guard.py").unlink()
    dist_info = next(p.dist_info for p in plugin_site.discover() if p.name == name)
    record = dist_info / "RECORD"
    rows = [r for r in csv.reader(io.StringIO(record.read_text())) if r]
    rows = [[folded, *r[1:]] if r[0] == f"{module}/data.txt" else r for r in rows
            if r[0] != f"{module}/guard.py"]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    record.write_text(out.getvalue())
    assert not (site / module / "guard.py").exists()
    status, reason, message = _verdict(plugin_site, name, entry)
    assert (status, reason) == ("refused", "missing-file"), message
    assert "line break" in message
    # the publisher's side: such a wheel has no fingerprint either
    folded_wheel = build_wheel(plugin_site.wheels / "folded", f"dihya-plugin-{name}", "1.0.0",
                               {f"{module}/__init__.py": plugin_source(name),
                                "a.txt\nb": "x"}, {name: f"{module}:Plugin"})
    with pytest.raises(FingerprintError, match="line break"):
        fingerprint_wheel(folded_wheel)


def digest_of_lines(lines: list[str]) -> str:
    h = hashlib.sha256(FINGERPRINT_HEADER)
    for line in sorted(lines):
        h.update((line + "\n").encode())
    return f"sha256:{h.hexdigest()}"
