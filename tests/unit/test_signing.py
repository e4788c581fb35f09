"""Publisher signatures: keys, signing, every verification refusal, the config's publishers,
and the checks `plugins install` makes before anything is installed."""

from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from dihya.authoring.install import InstallRefused, plan_install, unsatisfied_requirements
from dihya.cli import main
from dihya.config import AllowEntry, Config, ConfigError, config_from_document, load_config
from dihya.config.edit import read_document, upsert_allow, write_document
from dihya.config.publishers import Publisher, decode_public_key, parse_publishers
from dihya.gate.signing import (
    BAD_SIGNATURE,
    MALFORMED,
    NOT_ALLOWED,
    UNKNOWN_PUBLISHER,
    WHEEL_MISMATCH,
    SigningError,
    generate_key,
    load_private_key,
    read_wheel,
    sign_wheel,
    verify_wheel,
)
from support.wheels import build_plugin_wheel


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "acme.key"
    return path, generate_key(path)


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    return build_plugin_wheel(tmp_path / "dist", "acme-hello")


def publisher(public: str, *dists: str, name: str = "acme") -> Publisher:
    return Publisher(name=name, public_key=public, distributions=dists or ("dihya-plugin-acme-*",))


def signed(wheel: Path, key_path: Path) -> Path:
    sig, _content = sign_wheel(wheel, load_private_key(key_path))
    return sig


def refusal(wheel: Path, sig: Path, publishers: list[Publisher]) -> SigningError:
    with pytest.raises(SigningError) as info:
        verify_wheel(read_wheel(wheel), sig, publishers)
    return info.value


def test_keygen_writes_a_private_key_0600_and_never_overwrites(key) -> None:
    path, public = key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert public.startswith("ed25519:") and len(decode_public_key(public)) == 32
    before = path.read_bytes()
    with pytest.raises(SigningError, match="already exists"):
        generate_key(path)
    assert path.read_bytes() == before


def test_good_signature_verifies_and_names_what_was_signed(key, wheel) -> None:
    path, public = key
    sig = signed(wheel, path)
    assert sig == wheel.with_name(wheel.name + ".sig")
    content = json.loads(sig.read_text())
    assert content["public_key"] == public
    facts = read_wheel(wheel)
    verified = verify_wheel(facts, sig, [publisher(public)])
    assert verified.publisher.name == "acme"
    assert verified.document == {
        "format": "dihya-signature-v1", "distribution": "dihya-plugin-acme-hello",
        "version": "1.0.0", "wheel_sha256": facts.sha256, "fingerprint": facts.fingerprint}


def test_wheel_altered_after_signing_is_refused(key, wheel) -> None:
    path, public = key
    sig = signed(wheel, path)
    with zipfile.ZipFile(wheel, "a") as zf:  # one more file in the package
        zf.writestr("dihya_plugin_acme_hello/extra.py", "print('hi')\n")
    error = refusal(wheel, sig, [publisher(public)])
    assert error.reason == WHEEL_MISMATCH
    assert "wheel_sha256" in str(error) and "fingerprint" in str(error)


def test_signature_of_another_wheel_is_refused(key, tmp_path: Path) -> None:
    path, public = key
    old = build_plugin_wheel(tmp_path / "a", "acme-hello", version="1.0.0")
    new = build_plugin_wheel(tmp_path / "b", "acme-hello", version="2.0.0")
    error = refusal(new, signed(old, path), [publisher(public)])
    assert error.reason == WHEEL_MISMATCH and "version: signed '1.0.0'" in str(error)


def test_wrong_key_is_a_bad_signature(key, wheel, tmp_path: Path) -> None:
    _path, public = key
    other, _other_public = tmp_path / "mallory.key", generate_key(tmp_path / "mallory.key")
    sig = signed(wheel, other)
    content = json.loads(sig.read_text())
    content["public_key"] = public  # claims to be acme, signed by mallory
    sig.write_text(json.dumps(content))
    assert refusal(wheel, sig, [publisher(public)]).reason == BAD_SIGNATURE


def test_altered_signed_document_is_a_bad_signature(key, wheel) -> None:
    path, public = key
    sig = signed(wheel, path)
    content = json.loads(sig.read_text())
    content["signed"]["distribution"] = "dihya-plugin-acme-other"
    sig.write_text(json.dumps(content))
    assert refusal(wheel, sig, [publisher(public)]).reason == BAD_SIGNATURE


def test_unknown_publisher_is_refused(key, wheel, tmp_path: Path) -> None:
    path, _public = key
    trusted = generate_key(tmp_path / "someone-else.key")
    error = refusal(wheel, signed(wheel, path), [publisher(trusted, name="other")])
    assert error.reason == UNKNOWN_PUBLISHER and "other" in str(error)
    assert refusal(wheel, signed(wheel, path), []).reason == UNKNOWN_PUBLISHER


def test_publisher_not_allowed_for_the_distribution(key, wheel) -> None:
    path, public = key
    sig = signed(wheel, path)
    error = refusal(wheel, sig, [publisher(public, "dihya-plugin-acme-other")])
    assert error.reason == NOT_ALLOWED and "dihya-plugin-acme-hello" in str(error)
    assert refusal(wheel, sig, [publisher(public, "dihya-plugin-bcme-*")]).reason == NOT_ALLOWED


@pytest.mark.parametrize("pattern,dist,ok", [
    ("dihya-plugin-acme-*", "dihya-plugin-acme-hello", True),
    ("dihya-plugin-acme-*", "dihya_plugin_Acme_hello", True),  # PEP 503 normalisation
    ("dihya-plugin-acme-*", "dihya-plugin-acmex", False),
    ("dihya-plugin-acme-hello", "dihya-plugin-acme-hello", True),
    ("dihya-plugin-acme-hello", "dihya-plugin-acme-hello2", False),
])
def test_distribution_globs(key, pattern: str, dist: str, ok: bool) -> None:
    assert publisher(key[1], pattern).may_sign(dist) is ok


@pytest.mark.parametrize("mutate,needle", [
    (lambda c: "not json", "not JSON"),
    (lambda c: [], "exactly `signed`"),
    (lambda c: {**c, "extra": 1}, "exactly `signed`"),
    (lambda c: {**c, "signed": {**c["signed"], "more": "x"}}, "`signed` must hold"),
    (lambda c: {**c, "signed": {**c["signed"], "format": "v9"}}, "unknown format"),
    (lambda c: {**c, "public_key": "rsa:abc"}, "ed25519:"),
    (lambda c: {**c, "signature": "%%%"}, "not base64"),
    (lambda c: {**c, "signature": "AAAA"}, "64"),
])
def test_malformed_signature_files(key, wheel, mutate, needle: str) -> None:
    path, public = key
    sig = signed(wheel, path)
    changed = mutate(json.loads(sig.read_text()))
    sig.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    error = refusal(wheel, sig, [publisher(public)])
    assert error.reason == MALFORMED and needle in str(error)


def test_missing_signature_file_is_malformed(key, wheel, tmp_path: Path) -> None:
    assert refusal(wheel, tmp_path / "nope.sig", [publisher(key[1])]).reason == MALFORMED


# -- the config ----------------------------------------------------------------------------

def test_config_reads_publishers_and_entry_publisher(key, tmp_path: Path) -> None:
    config = tmp_path / "dihya.toml"
    config.write_text(f"""# ops: keep
[[plugins.publishers]]
name = "acme"
public_key = "{key[1]}"
distributions = ["dihya-plugin-acme-*"]

[[plugins.allow]]
name = "acme-hello"
distribution = "dihya-plugin-acme-hello"
version = "1.0.0"
fingerprint = "sha256:00"
publisher = "acme"
""")
    loaded = load_config(config)
    assert loaded.publishers == (publisher(key[1]),)
    assert loaded.allow[0].publisher == "acme"


@pytest.mark.parametrize("table,needle", [
    ({"name": "a", "public_key": "ed25519:AAAA", "distributions": ["x"]}, "32"),
    ({"name": "a", "public_key": "ssh-ed25519 AAAA", "distributions": ["x"]}, "ed25519:<base64>"),
    ({"name": "a", "distributions": ["x"]}, "`public_key` is required"),
    ({"name": "a", "public_key": "KEY", "distributions": []}, "`distributions` is required"),
    ({"name": "a", "public_key": "KEY", "distributions": ["*"]}, "bare '*'"),
    ({"name": "a b", "public_key": "KEY", "distributions": ["x"]}, "`name` is required"),
    ({"name": "a", "public_key": "KEY", "distributions": ["x"], "url": "u"}, "unknown keys"),
])
def test_invalid_publishers_are_named(key, table: dict, needle: str) -> None:
    table = {k: (key[1] if v == "KEY" else v) for k, v in table.items()}
    with pytest.raises(ConfigError) as info:
        config_from_document(Path("/etc/dihya.toml"), {"plugins": {"publishers": [table]}})
    assert str(info.value).startswith("/etc/dihya.toml: [[plugins.publishers]] #1")
    assert needle in str(info.value)


def test_duplicate_publishers_are_refused(key) -> None:
    one = {"name": "a", "public_key": key[1], "distributions": ["x"]}
    with pytest.raises(ValueError, match="more than once"):
        parse_publishers([one, one])
    with pytest.raises(ValueError, match="share one public key"):
        parse_publishers([one, {**one, "name": "b"}])


def test_upsert_records_the_publisher_and_keeps_comments(tmp_path: Path) -> None:
    path = tmp_path / "dihya.toml"
    path.write_text("# operator note\n[plugins]\nhook_timeout_s = 5.0  # slow disk\n")
    entry = AllowEntry(name="a", distribution="dihya-plugin-a", version="1.0",
                       fingerprint="sha256:01", publisher="acme")
    doc = read_document(path)
    upsert_allow(doc, entry)
    write_document(path, doc)
    text = path.read_text()
    assert "# operator note" in text and "# slow disk" in text and 'publisher = "acme"' in text
    doc = read_document(path)
    upsert_allow(doc, AllowEntry(name="a", distribution="dihya-plugin-a", version="1.1",
                                 fingerprint="sha256:02"))
    write_document(path, doc)
    assert "publisher" not in path.read_text()  # approved by hand: no longer the publisher's


# -- install checks made before pip --------------------------------------------------------

def cfg(tmp_path: Path, *allow: AllowEntry, publishers: tuple[Publisher, ...] = ()) -> Config:
    return Config(path=tmp_path / "dihya.toml", exists=True, allow=allow, publishers=publishers)


def planned_refusal(*args, **kwargs) -> InstallRefused:
    with pytest.raises(InstallRefused) as info:
        plan_install(*args, **kwargs)
    return info.value


def test_unsigned_wheel_needs_approve_and_prints_the_fingerprint(wheel, tmp_path: Path) -> None:
    error = planned_refusal(wheel, cfg(tmp_path), None, approve=False)
    assert error.reason == "unsigned" and read_wheel(wheel).fingerprint in str(error)
    plan = plan_install(wheel, cfg(tmp_path), None, approve=True)
    assert plan.names == ("acme-hello",) and plan.publisher is None


def test_signed_plan_names_the_publisher(key, wheel, tmp_path: Path) -> None:
    config = cfg(tmp_path, publishers=(publisher(key[1]),))
    plan = plan_install(wheel, config, signed(wheel, key[0]), approve=False)
    assert plan.publisher == "acme"
    # --approve never excuses a bad signature
    error = planned_refusal(wheel, cfg(tmp_path), signed(wheel, key[0]), approve=True)
    assert error.reason == UNKNOWN_PUBLISHER


def test_unsatisfied_dependencies_are_named(tmp_path: Path) -> None:
    wheel = build_plugin_wheel(tmp_path, "needy", requires=[
        "dihya-core", "no-such-dist-xyz>=1", "dihya-core<0.0.1", "other-xyz; python_version<'3'"])
    error = planned_refusal(wheel, cfg(tmp_path), None, approve=True)
    assert error.reason == "missing-dependency"
    assert "no-such-dist-xyz>=1 but no-such-dist-xyz is not installed" in str(error)
    assert "dihya-core<0.0.1 but dihya-core" in str(error)
    assert "other-xyz" not in str(error)
    assert unsatisfied_requirements(["dihya-core"]) == []


def test_wheel_without_plugin_entry_point_is_refused(tmp_path: Path) -> None:
    wheel = build_plugin_wheel(tmp_path, "x")
    other = Config(path=tmp_path / "d.toml", exists=True, group="some.other.group")
    assert planned_refusal(wheel, other, None, approve=True).reason == "not-a-plugin"


def test_name_approved_from_another_distribution_is_refused(wheel, tmp_path: Path) -> None:
    entry = AllowEntry(name="acme-hello", distribution="someone-else", version="1.0.0",
                       fingerprint="sha256:00")
    error = planned_refusal(wheel, cfg(tmp_path, entry), None, approve=True)
    assert error.reason == "distribution-mismatch"


def test_signed_upgrade_from_another_publisher_or_downgrade_is_refused(
        key, wheel, tmp_path: Path) -> None:
    other_key = generate_key(tmp_path / "other.key")
    pubs = (publisher(key[1]), publisher(other_key, name="other"))
    previous = AllowEntry(name="acme-hello", distribution="dihya-plugin-acme-hello",
                          version="0.9", fingerprint="sha256:00", publisher="other")
    error = planned_refusal(wheel, cfg(tmp_path, previous, publishers=pubs),
                            signed(wheel, key[0]), approve=False)
    assert error.reason == "publisher-changed"
    newer = AllowEntry(name="acme-hello", distribution="dihya-plugin-acme-hello",
                       version="2.0", fingerprint="sha256:00", publisher="acme")
    error = planned_refusal(wheel, cfg(tmp_path, newer, publishers=pubs),
                            signed(wheel, key[0]), approve=False)
    assert error.reason == "downgrade"


def test_cli_refusal_exits_1_and_leaves_the_config_unchanged(key, wheel, tmp_path: Path) -> None:
    config = tmp_path / "dihya.toml"
    config.write_text(f'# keep\n[[plugins.publishers]]\nname = "acme"\npublic_key = "{key[1]}"\n'
                      'distributions = ["dihya-plugin-other"]\n')
    before = config.read_text()
    sig = signed(wheel, key[0])
    result = CliRunner().invoke(main, ["--config", str(config), "plugins", "install", str(wheel)])
    assert result.exit_code == 1, result.output
    assert "refused (publisher-not-allowed)" in result.output
    assert "nothing was installed" in result.output
    assert config.read_text() == before
    assert sig.exists()
    unsigned = CliRunner().invoke(main, ["--config", str(config), "plugins", "install",
                                         "--signature", str(tmp_path / "missing.sig"),
                                         str(wheel)])
    assert unsigned.exit_code == 2


def test_cli_keygen_and_sign(tmp_path: Path, wheel) -> None:
    runner = CliRunner()
    out = runner.invoke(main, ["plugins", "keygen", "--out", str(tmp_path / "k")])
    assert out.exit_code == 0 and out.stdout.strip().splitlines()[-1].startswith("ed25519:")
    again = runner.invoke(main, ["plugins", "keygen", "--out", str(tmp_path / "k")])
    assert again.exit_code == 1 and "already exists" in again.output
    signed_out = runner.invoke(main, ["plugins", "sign", str(wheel), "--key", str(tmp_path / "k")])
    assert signed_out.exit_code == 0, signed_out.output
    assert "signed dihya-plugin-acme-hello 1.0.0" in signed_out.output


def test_removing_the_last_entry_then_adding_one_writes_valid_toml(tmp_path: Path) -> None:
    """uninstall (or revoke) of the last plugin, then install (or approve) another."""
    path = tmp_path / "dihya.toml"
    path.write_text("# note\n[plugins]\n\n# publisher note\n[[plugins.publishers]]\nname = \"a\"\n"
                    "public_key = \"ed25519:" + "A" * 43 + "=\"\ndistributions = [\"x\"]\n")
    entry = AllowEntry(name="a", distribution="dihya-plugin-a", version="1.0",
                       fingerprint="sha256:01")
    from dihya.config.edit import remove_allow

    for step in ("add", "remove", "add", "remove", "add"):
        doc = read_document(path)
        if step == "add":
            upsert_allow(doc, entry)
        else:
            assert remove_allow(doc, "a")
        write_document(path, doc)
        loaded = load_config(path)
        assert len(loaded.allow) == (step == "add")
    assert "# publisher note" in path.read_text() and "allow = [" not in path.read_text()
    path.write_text('[plugins]\nallow = [{name = "b", distribution = "d", version = "1", '
                    'fingerprint = "sha256:02"}]\n')
    doc = read_document(path)
    upsert_allow(doc, entry)
    write_document(path, doc)
    assert [e.name for e in load_config(path).allow] == ["b", "a"]


def test_cli_keygen_defaults_to_the_user_config_dir_with_mode_0600(tmp_path: Path) -> None:
    config_home = tmp_path / "xdg"
    runner = CliRunner()
    out = runner.invoke(main, ["plugins", "keygen", "--name", "acme"],
                        env={"XDG_CONFIG_HOME": str(config_home)})
    assert out.exit_code == 0, out.output
    key = config_home / "dihya" / "keys" / "acme.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert str(key) in out.stderr and out.stdout.strip().startswith("ed25519:")
    signed = runner.invoke(main, ["plugins", "keygen", "--name", "../x"],
                           env={"XDG_CONFIG_HOME": str(config_home)})
    assert signed.exit_code == 2 and "plain file name" in signed.output


def test_cli_keygen_resolves_dotdot_and_links_before_the_git_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    monkeypatch.chdir(repo / "sub")
    runner = CliRunner()
    # ../../outside.key from inside the checkout lands outside it: not refused
    outside = runner.invoke(main, ["plugins", "keygen", "--out", "../../outside.key"])
    assert outside.exit_code == 0, outside.output
    assert (tmp_path / "outside.key").exists()
    # a link outside the checkout that points into it: the key would land inside, refused
    (tmp_path / "link").symlink_to(repo / "sub")
    refused = runner.invoke(main, ["plugins", "keygen", "--out",
                                   str(tmp_path / "link" / "acme.key")])
    assert refused.exit_code == 2 and "inside the git work tree" in refused.output
    assert not (repo / "sub" / "acme.key").exists()


def test_cli_keygen_refuses_a_path_inside_a_git_work_tree(tmp_path: Path) -> None:
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    runner = CliRunner()
    inside = repo / "sub" / "acme.key"
    (repo / "sub").mkdir()
    refused = runner.invoke(main, ["plugins", "keygen", "--out", str(inside)])
    assert refused.exit_code == 2
    assert f"inside the git work tree {repo}" in refused.output
    assert "--allow-in-repo" in refused.output and not inside.exists()
    allowed = runner.invoke(main, ["plugins", "keygen", "--out", str(inside),
                                   "--allow-in-repo"])
    assert allowed.exit_code == 0, allowed.output
    assert stat.S_IMODE(inside.stat().st_mode) == 0o600
