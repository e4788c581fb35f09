"""Signatures kept in the wheel cache for rollbacks: `wheelcache.keep_signature` and
`verify_kept_signature` (`signing.verify_kept`), with real wheels and real Ed25519 keys.

The kept wheel is a repack of the installed files, so these tests repack a signed wheel
the same way (other archive bytes, same content fingerprint) and check that only a
signature the trusted publisher made for that distribution, version and fingerprint names
a publisher: an altered document, another key, a signature of another version or content,
a publisher removed or no longer allowed, or a kept wheel carrying files outside its
fingerprint never does."""

from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path

import pytest

from dihya.authoring import wheelcache
from dihya.config.publishers import Publisher
from dihya.gate.signing import (
    BAD_SIGNATURE,
    NOT_ALLOWED,
    UNCOVERED,
    UNKNOWN_PUBLISHER,
    WHEEL_MISMATCH,
    SigningError,
    WheelFacts,
    generate_key,
    load_private_key,
    read_wheel,
    sign_wheel,
    verify_wheel,
)
from support.wheels import build_plugin_wheel, plugin_source

DIST = "dihya-plugin-acme-hello"


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "dihya" / "wheels"


@pytest.fixture
def acme(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "acme.key"
    return path, generate_key(path)


def publisher(public: str, *dists: str, name: str = "acme") -> Publisher:
    return Publisher(name=name, public_key=public,
                     distributions=dists or ("dihya-plugin-acme-*",))


def signed_wheel(where: Path, key: Path, version: str = "1.0.0",
                 extra: str = "") -> tuple[Path, Path]:
    wheel = build_plugin_wheel(where, "acme-hello", version=version,
                               source=plugin_source("acme-hello", version) + extra)
    sig, _content = sign_wheel(wheel, load_private_key(key))
    return wheel, sig


def repack(wheel: Path, out: Path, add: dict[str, bytes] | None = None) -> Path:
    """What `keep_installed` makes of an installed wheel: the same files in other archive
    bytes (another member order, no compression, a RECORD without hashes)."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / wheel.name
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as dst:
        for info in reversed(src.infolist()):
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                data = b"".join(line.split(b",")[0] + b",,\n"
                                for line in data.splitlines())
            dst.writestr(info.filename, data)
        for name, data in (add or {}).items():
            dst.writestr(name, data)
    return target


def kept_facts(wheel: Path, sig: Path, out: Path) -> WheelFacts:
    """Install-time: keep `sig`; rollback-time: the facts of the repacked kept wheel."""
    assert wheelcache.keep_signature(read_wheel(wheel), sig) is not None
    return read_wheel(repack(wheel, out))


def refusal(facts: WheelFacts, publishers: list[Publisher]) -> SigningError:
    with pytest.raises(SigningError) as info:
        wheelcache.verify_kept_signature(facts, publishers)
    return info.value


def test_kept_signature_verifies_for_the_repacked_wheel(acme, tmp_path: Path,
                                                        cache: Path) -> None:
    key, public = acme
    wheel, sig = signed_wheel(tmp_path / "v1", key)
    facts = read_wheel(wheel)
    kept = wheelcache.keep_signature(facts, sig)
    assert kept == cache / DIST / f"1.0.0-{facts.fingerprint[7:23]}.sig"
    assert kept.read_bytes() == sig.read_bytes()
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert stat.S_IMODE(kept.parent.stat().st_mode) == 0o700
    assert [p.name for p in kept.parent.iterdir()] == [kept.name]  # no .part left over

    back = read_wheel(repack(wheel, tmp_path / "kept"))
    assert back.fingerprint == facts.fingerprint and back.sha256 != facts.sha256
    # the publisher's own check refuses the repack (another archive) ...
    with pytest.raises(SigningError) as info:
        verify_wheel(back, kept, [publisher(public)])
    assert info.value.reason == WHEEL_MISMATCH and "wheel_sha256" in info.value.message
    # ... the kept check vouches for its content
    verified = wheelcache.verify_kept_signature(back, [publisher(public)])
    assert verified.publisher.name == "acme"
    assert verified.document["fingerprint"] == back.fingerprint


def test_no_kept_signature_names_no_publisher(acme, tmp_path: Path) -> None:
    _key, public = acme
    wheel = build_plugin_wheel(tmp_path / "v1", "acme-hello")
    error = refusal(read_wheel(repack(wheel, tmp_path / "kept")), [publisher(public)])
    assert error.reason == wheelcache.NO_KEPT_SIGNATURE
    assert "installed unsigned" in error.message


def test_an_altered_kept_document_does_not_verify(acme, tmp_path: Path) -> None:
    key, public = acme
    wheel, sig = signed_wheel(tmp_path / "v1", key)
    facts = kept_facts(wheel, sig, tmp_path / "kept")
    kept = wheelcache.signature_path(facts.distribution, facts.version, facts.fingerprint)
    assert kept is not None
    content = json.loads(kept.read_text())
    content["signed"]["wheel_sha256"] = facts.sha256  # "signed for the repack"
    kept.write_text(json.dumps(content))
    assert refusal(facts, [publisher(public)]).reason == BAD_SIGNATURE


def test_a_signature_by_another_key_names_no_publisher(acme, tmp_path: Path) -> None:
    key, public = acme
    wheel, _sig = signed_wheel(tmp_path / "v1", key)
    mallory = tmp_path / "mallory.key"
    generate_key(mallory)
    forged, content = sign_wheel(wheel, load_private_key(mallory), tmp_path / "forged.sig")
    facts = kept_facts(wheel, forged, tmp_path / "kept")
    assert refusal(facts, [publisher(public)]).reason == UNKNOWN_PUBLISHER
    # claiming to be acme's key: the signature does not verify with it
    content["public_key"] = public
    forged.write_text(json.dumps(content))
    assert wheelcache.keep_signature(read_wheel(wheel), forged) is not None
    assert refusal(facts, [publisher(public)]).reason == BAD_SIGNATURE


def test_a_signature_of_another_version_or_content_names_no_publisher(
        acme, tmp_path: Path) -> None:
    key, public = acme
    wheel, _sig = signed_wheel(tmp_path / "v1", key)
    _v11, sig11 = signed_wheel(tmp_path / "v11", key, version="1.1.0")
    other, sig_other = signed_wheel(tmp_path / "other", key, extra="\n# other content\n")
    facts = read_wheel(repack(wheel, tmp_path / "kept"))
    kept = wheelcache.signature_path(facts.distribution, facts.version, facts.fingerprint)
    assert kept is not None
    kept.parent.mkdir(parents=True)
    for foreign, needle in ((sig11, "version: signed '1.1.0'"),
                            (sig_other, "fingerprint: signed")):
        kept.write_bytes(foreign.read_bytes())  # planted where 1.0.0's would be
        error = refusal(facts, [publisher(public)])
        assert error.reason == WHEEL_MISMATCH and needle in error.message, error.message
    assert read_wheel(other).fingerprint != facts.fingerprint


def test_a_publisher_removed_or_no_longer_allowed_names_no_publisher(
        acme, tmp_path: Path) -> None:
    key, public = acme
    wheel, sig = signed_wheel(tmp_path / "v1", key)
    facts = kept_facts(wheel, sig, tmp_path / "kept")
    assert wheelcache.verify_kept_signature(facts, [publisher(public)]).publisher.name == "acme"
    beta = tmp_path / "beta.key"
    assert refusal(facts, []).reason == UNKNOWN_PUBLISHER
    assert refusal(facts, [publisher(generate_key(beta), name="beta")]).reason == (
        UNKNOWN_PUBLISHER)
    error = refusal(facts, [publisher(public, "dihya-plugin-acme-other")])
    assert error.reason == NOT_ALLOWED


@pytest.mark.parametrize("member", [
    "dihya_plugin_acme_hello-1.0.0.data/scripts/acme-hello",
    "dihya_plugin_acme_hello/__pycache__/__init__.cpython-311.pyc",
    "dihya_plugin_acme_hello-1.0.0.dist-info/direct_url.json",
])
def test_a_kept_wheel_with_files_outside_its_fingerprint_names_no_publisher(
        acme, tmp_path: Path, member: str) -> None:
    key, public = acme
    wheel, sig = signed_wheel(tmp_path / "v1", key)
    assert wheelcache.keep_signature(read_wheel(wheel), sig) is not None
    planted = read_wheel(repack(wheel, tmp_path / "kept", {member: b"import os\n"}))
    assert planted.fingerprint == read_wheel(wheel).fingerprint  # the fingerprint skips it
    error = refusal(planted, [publisher(public)])
    assert error.reason == UNCOVERED and member in error.message


def test_signature_path_needs_a_valid_version_and_fingerprint() -> None:
    fp = "sha256:" + "ab" * 32
    good = wheelcache.signature_path("Dihya_Plugin.Acme", "1.0", fp)
    assert good is not None and good.name == "1.0-abababababababab.sig"
    assert good.parent.name == "dihya-plugin-acme"
    assert wheelcache.signature_path(DIST, "../../evil", fp) is None
    assert wheelcache.signature_path(DIST, "1.0", "sha256:../../x") is None


# -- a kept signature goes with its wheel ------------------------------------------------


def kept_files(cache: Path, dist: str) -> list[str]:
    folder = cache / dist
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def sig_name(facts: WheelFacts) -> str:
    return f"{facts.version}-{facts.fingerprint[7:23]}.sig"


def test_an_upgrade_keeps_the_signatures_of_the_kept_and_the_installed_version(
        acme, plugin_site, cache: Path) -> None:
    """install 1.0.0 signed; upgrade to 1.1.0 signed (1.0.0 kept as a wheel): both .sig stay,
    and a rollback to 1.0.0 still names the publisher."""
    key, public = acme
    name = plugin_site.unique("kept")
    dist = f"dihya-plugin-{name}"
    v1 = read_wheel(plugin_site.install(name, version="1.0.0",
                                        source=plugin_source(name, "1.0.0")))
    sig1, _ = sign_wheel(v1.path, load_private_key(key))
    wheelcache.keep_signature(v1, sig1)  # what a signed install does once installed
    # upgrade: the installed 1.0.0 is packed into the cache, then 1.1.0 installed and kept
    wheel1 = wheelcache.keep_installed(dist, v1.fingerprint)
    assert wheel1 is not None
    v2 = read_wheel(plugin_site.install(name, version="1.1.0",
                                        source=plugin_source(name, "1.1.0")))
    sig2, _ = sign_wheel(v2.path, load_private_key(key))
    wheelcache.keep_signature(v2, sig2)
    assert kept_files(cache, dist) == sorted([wheel1.name, sig_name(v1), sig_name(v2)])
    verified = wheelcache.verify_kept_signature(read_wheel(wheel1), [publisher(public, dist)])
    assert verified.publisher.name == "acme"


def test_a_replaced_wheel_takes_its_signature_with_it(acme, plugin_site, cache: Path) -> None:
    """1.0.0 installed signed, then another 1.0.0 (other content) over it, then 1.1.0: the
    first 1.0.0's wheel is replaced by the second's, and its .sig goes; the second's stays."""
    key, _public = acme
    name = plugin_site.unique("kept")
    dist = f"dihya-plugin-{name}"
    first = read_wheel(plugin_site.install(name, version="1.0.0",
                                           source=plugin_source(name, "1.0.0")))
    wheelcache.keep_signature(first, sign_wheel(first.path, load_private_key(key))[0])
    assert wheelcache.keep_installed(dist, first.fingerprint) is not None
    second = read_wheel(plugin_site.install(name, version="1.0.0", source=plugin_source(
        name, "1.0.0") + "\n# rebuilt\n"))
    assert second.fingerprint != first.fingerprint
    wheelcache.keep_signature(second, sign_wheel(second.path, load_private_key(key))[0])
    # both still have a use: the first's wheel is kept, the second is installed
    assert sig_name(first) in kept_files(cache, dist)
    assert sig_name(second) in kept_files(cache, dist)
    kept = wheelcache.keep_installed(dist, second.fingerprint)  # upgrading to 1.1.0
    assert kept is not None and read_wheel(kept).fingerprint == second.fingerprint
    assert kept_files(cache, dist) == sorted([kept.name, sig_name(second)])


def test_an_orphan_signature_goes_at_the_next_keep(acme, tmp_path: Path, cache: Path) -> None:
    """A .sig whose version is neither kept as a wheel nor the one just installed (an
    uninstalled version, a failed keep) is removed the next time a signature is kept; the
    one just kept stays, and a re-install of the same version replaces its .sig."""
    key, _public = acme
    old_wheel, old_sig = signed_wheel(tmp_path / "v0", key, version="0.9.0")
    old = read_wheel(old_wheel)
    wheelcache.keep_signature(old, old_sig)  # installed, then uninstalled: no wheel kept
    wheel, sig = signed_wheel(tmp_path / "v1", key)
    facts = read_wheel(wheel)
    assert wheelcache.keep_signature(facts, sig) is not None
    assert kept_files(cache, DIST) == [sig_name(facts)]
    again = tmp_path / "again.sig"  # the same version installed again, signed again
    again.write_bytes(sig.read_bytes())
    wheelcache.keep_signature(facts, again)
    assert kept_files(cache, DIST) == [sig_name(facts)]


def test_a_signature_of_a_kept_wheel_is_never_pruned(acme, tmp_path: Path,
                                                     cache: Path) -> None:
    key, public = acme
    wheel, sig = signed_wheel(tmp_path / "v1", key)
    facts = kept_facts(wheel, sig, cache / DIST)  # .sig kept, and the wheel repacked there
    assert wheelcache.prune_signatures(DIST) == []
    new_wheel, new_sig = signed_wheel(tmp_path / "v2", key, version="2.0.0")
    installed = wheelcache.keep_signature(read_wheel(new_wheel), new_sig)
    assert installed is not None
    assert kept_files(cache, DIST) == sorted([wheel.name, sig_name(facts), installed.name])
    assert wheelcache.verify_kept_signature(facts, [publisher(public)]).publisher.name == "acme"
    # a kept wheel that cannot be read keeps every signature of its version
    (cache / DIST / wheel.name).write_bytes(b"not a zip")
    assert wheelcache.prune_signatures(DIST, keep=installed) == []
    assert sig_name(facts) in kept_files(cache, DIST)
    # its wheel gone, a signature is an orphan
    (cache / DIST / wheel.name).unlink()
    assert wheelcache.prune_signatures(DIST, keep=installed) == [cache / DIST / sig_name(facts)]
    assert kept_files(cache, DIST) == [installed.name]
    assert not (cache / DIST / sig_name(facts)).exists()
