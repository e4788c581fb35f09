"""Publisher signatures of plugin wheels (Ed25519, with `cryptography`).

A publisher makes a key pair once (`dihya plugins keygen`), gives the operator the public
key (`ed25519:<base64>`), and signs each wheel it releases (`dihya plugins sign`). The
signature covers a small canonical JSON document:

    {"distribution": ..., "fingerprint": "sha256:...", "format": "dihya-signature-v1",
     "version": ..., "wheel_sha256": "<hex>"}

serialised with sorted keys, no spaces, ASCII only. `WHEEL.sig` is a JSON object holding
that document (`signed`), the signer's public key (`public_key`) and the signature
(`signature`, base64), so an operator can read what was signed. Verification
(`verify_wheel`) checks, in order: the .sig is well formed, its key is a trusted
publisher's, the signature is valid for the document, the publisher may sign that
distribution, and the wheel in hand is the one that was signed (name, version, sha256 of
the file, content fingerprint). `verify_kept` checks a signature kept in the wheel cache
for the repacked wheel kept of that version (a rollback): the same, without the sha256.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final

import attrs
from packaging.utils import canonicalize_name

from dihya.config.publishers import Publisher, decode_public_key, encode_public_key
from dihya.gate.fingerprint import FingerprintError, fingerprint_wheel, uncovered_members
from dihya.reasons import DihyaError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SIGNATURE_FORMAT: Final = "dihya-signature-v1"
DOCUMENT_KEYS: Final = frozenset(
    {"format", "distribution", "version", "wheel_sha256", "fingerprint"})
MAX_SIG_BYTES: Final = 64 * 1024

#: refusal reason codes of `verify_wheel`
MALFORMED: Final = "malformed-signature"
UNKNOWN_PUBLISHER: Final = "unknown-publisher"
BAD_SIGNATURE: Final = "bad-signature"
NOT_ALLOWED: Final = "publisher-not-allowed"
WHEEL_MISMATCH: Final = "wheel-altered"
#: `verify_kept`: the kept wheel holds files its fingerprint does not cover
UNCOVERED: Final = "uncovered-files"


class SigningError(DihyaError):
    """A key, wheel or signature cannot be used; `reason` is a short code."""


@attrs.frozen
class WheelFacts:
    """What a wheel says about itself, read from its bytes (nothing is imported)."""

    path: Path
    distribution: str
    version: str
    sha256: str
    fingerprint: str
    requires: tuple[str, ...]
    entry_points: dict[str, dict[str, str]]  # group -> {name: value}

    def document(self) -> dict[str, str]:
        """The document a publisher signs for this wheel."""
        return {"format": SIGNATURE_FORMAT, "distribution": self.distribution,
                "version": self.version, "wheel_sha256": self.sha256,
                "fingerprint": self.fingerprint}


@attrs.frozen
class Verified:
    """A signature that verified: who signed, and what."""

    publisher: Publisher
    document: dict[str, str]


def canonical_bytes(document: dict[str, str]) -> bytes:
    """The exact bytes that are signed. The signature format `dihya-signature-v1` fixed
    them as ASCII-escaped JSON before `dihya.canonical` existed; released signatures must
    keep verifying, so this one stays as it is (for ASCII documents, the values a signed
    document holds, both give the same bytes)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode("ascii")


def read_wheel(wheel: Path) -> WheelFacts:
    """Name, version, requirements, entry points, sha256 and fingerprint of a wheel file."""
    try:
        data = wheel.read_bytes()
    except OSError as exc:
        raise SigningError("unreadable-wheel", f"{wheel}: cannot read: {exc}") from exc
    try:
        fingerprint = fingerprint_wheel(wheel)
    except FingerprintError as exc:
        raise SigningError("unreadable-wheel", str(exc)) from exc
    try:
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
            infos = sorted({PurePosixPath(n).parts[0] for n in names
                            if len(PurePosixPath(n).parts) == 2
                            and PurePosixPath(n).parts[0].endswith(".dist-info")})
            if len(infos) != 1:
                raise SigningError("unreadable-wheel", f"{wheel}: expected one top-level "
                                   f"*.dist-info directory, found {infos or 'none'}")
            meta = email.parser.BytesParser().parsebytes(zf.read(f"{infos[0]}/METADATA"))
            eps_name = f"{infos[0]}/entry_points.txt"
            eps_text = zf.read(eps_name).decode("utf-8") if eps_name in names else ""
    except (zipfile.BadZipFile, KeyError, OSError, UnicodeDecodeError) as exc:
        raise SigningError("unreadable-wheel", f"{wheel}: not a readable wheel: {exc}") from exc
    name, version = meta.get("Name"), meta.get("Version")
    if not name or not version:
        raise SigningError("unreadable-wheel", f"{wheel}: METADATA has no Name or Version")
    return WheelFacts(path=wheel, distribution=str(name), version=str(version),
                      sha256=hashlib.sha256(data).hexdigest(), fingerprint=fingerprint,
                      requires=tuple(str(r) for r in meta.get_all("Requires-Dist") or ()),
                      entry_points=_entry_points(eps_text))


def _entry_points(text: str) -> dict[str, dict[str, str]]:
    groups: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = groups.setdefault(line[1:-1].strip(), {})
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            current[key.strip()] = value.strip()
    return groups


# -- keys ---------------------------------------------------------------------------------


def generate_key(out: Path) -> str:
    """Write a new private key to `out` (PEM, mode 0600, never over an existing file);
    return the public key's text form."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     0o600)
    except FileExistsError as exc:
        raise SigningError("key-exists", f"{out} already exists; keygen never overwrites a "
                           "key (choose another path, or remove the old key yourself)") from exc
    except OSError as exc:
        raise SigningError("unwritable-key", f"{out}: cannot create: {exc}") from exc
    try:
        os.fchmod(fd, 0o600)  # whatever the umask said
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    return public_key_of(key)


def public_key_of(key: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    return encode_public_key(raw)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise SigningError("unreadable-key", f"{path}: cannot read the key: {exc}") from exc
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError("unreadable-key", f"{path}: not an unencrypted PEM private key "
                           f"(as written by `dihya plugins keygen`): {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError("unreadable-key", f"{path}: not an Ed25519 key")
    return key


# -- signing and verifying -----------------------------------------------------------------


def sign_wheel(wheel: Path, key: Ed25519PrivateKey,
               out: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Write `WHEEL.sig` (or `out`) for `wheel`; return its path and content."""
    facts = read_wheel(wheel)
    document = facts.document()
    signature = key.sign(canonical_bytes(document))
    content = {"signed": document, "public_key": public_key_of(key),
               "signature": base64.b64encode(signature).decode("ascii")}
    target = out or wheel.with_name(wheel.name + ".sig")
    _write_atomic(target, (json.dumps(content, indent=2, sort_keys=True) + "\n").encode())
    return target, content


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_signature(sig: Path) -> tuple[dict[str, str], str, bytes]:
    """(signed document, public key text, signature bytes) of a .sig file."""
    def bad(what: str) -> SigningError:
        return SigningError(MALFORMED, f"{sig}: not a dihya signature file: {what}")

    try:
        raw = sig.read_bytes()
    except OSError as exc:
        raise SigningError(MALFORMED, f"{sig}: cannot read: {exc}") from exc
    if len(raw) > MAX_SIG_BYTES:
        raise bad(f"{len(raw)} bytes (at most {MAX_SIG_BYTES})")
    try:
        content = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"not JSON ({exc})") from exc
    if not isinstance(content, dict) or set(content) != {"signed", "public_key", "signature"}:
        raise bad("expected a JSON object with exactly `signed`, `public_key` and `signature`")
    document = content["signed"]
    if (not isinstance(document, dict) or set(document) != DOCUMENT_KEYS
            or not all(isinstance(v, str) for v in document.values())):
        raise bad(f"`signed` must hold exactly the strings {sorted(DOCUMENT_KEYS)}")
    if document["format"] != SIGNATURE_FORMAT:
        raise bad(f"unknown format {document['format']!r} (this core reads {SIGNATURE_FORMAT})")
    public_key = content["public_key"]
    if not isinstance(public_key, str):
        raise bad("`public_key` must be a string")
    try:
        decode_public_key(public_key)
    except ValueError as exc:
        raise bad(str(exc)) from exc
    try:
        signature = base64.b64decode(str(content["signature"]), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad("`signature` is not base64") from exc
    if len(signature) != 64:
        raise bad(f"`signature` is {len(signature)} bytes; an Ed25519 signature has 64")
    return document, public_key, signature


def verify_wheel(facts: WheelFacts, sig: Path, publishers: Sequence[Publisher]) -> Verified:
    """Check `sig` for the wheel described by `facts` against the trusted `publishers`.

    Raises SigningError with one of the reason codes of this module.
    """
    publisher, document = _trusted_document(sig, publishers)
    _same_wheel(facts, publisher, document,
                ("distribution", "version", "wheel_sha256", "fingerprint"))
    return Verified(publisher=publisher, document=document)


def verify_kept(facts: WheelFacts, sig: Path, publishers: Sequence[Publisher]) -> Verified:
    """Check the signature kept when a version was installed (`sig`, from the wheel cache)
    for the wheel kept of that version (`facts`), against the trusted `publishers` of now.

    As `verify_wheel` (well formed, a trusted publisher's key, a valid signature, a
    publisher that may still sign that distribution), except that the wheel's sha256 is
    not compared: the kept wheel is a repack of the installed files
    (`dihya.authoring.wheelcache.keep_installed`), never the archive that was signed, so
    its bytes always differ. Its distribution, version and content fingerprint must be the
    signed ones, and nothing in it may lie outside the fingerprint (`.data/` scripts or
    data, `__pycache__`, installer files; its RECORD aside, which pip rewrites). The
    fingerprint covers every file that lands in site-packages, path, size and sha256,
    and a rollback checks the installed files against it after pip ran: what comes back
    is then exactly what the publisher signed. What the archive adds besides (RECORD's
    listing, compression, member order) installs nothing.

    Raises SigningError with one of the reason codes of this module (`UNCOVERED` for a
    member outside the fingerprint).
    """
    publisher, document = _trusted_document(sig, publishers)
    _same_wheel(facts, publisher, document, ("distribution", "version", "fingerprint"))
    try:
        extra = uncovered_members(facts.path)
    except FingerprintError as exc:
        raise SigningError("unreadable-wheel", str(exc)) from exc
    if extra:
        raise SigningError(UNCOVERED,
                           f"{facts.path.name} holds files its fingerprint does not cover "
                           f"({', '.join(sorted(extra)[:5])}): not a wheel kept by "
                           "`dihya plugins install`; the kept signature does not vouch "
                           "for them")
    return Verified(publisher=publisher, document=document)


def _trusted_document(sig: Path,
                      publishers: Sequence[Publisher]) -> tuple[Publisher, dict[str, str]]:
    """The document of `sig` and its publisher, once the .sig is well formed, its key is
    a trusted publisher's, the signature verifies and the publisher may sign the
    document's distribution."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    document, key_text, signature = read_signature(sig)
    raw_key = decode_public_key(key_text)
    publisher = next((p for p in publishers if p.raw_key == raw_key), None)
    if publisher is None:
        trusted = ", ".join(p.name for p in publishers) or "none configured"
        raise SigningError(UNKNOWN_PUBLISHER,
                           f"{sig.name} is signed by {key_text}, which is not the key of a "
                           f"trusted publisher ([[plugins.publishers]]: {trusted})")
    try:
        Ed25519PublicKey.from_public_bytes(raw_key).verify(signature, canonical_bytes(document))
    except InvalidSignature as exc:
        raise SigningError(BAD_SIGNATURE,
                           f"{sig.name}: the signature does not verify with the key of "
                           f"publisher {publisher.name!r}: the signed document was altered "
                           "or signed with another key") from exc
    if not publisher.may_sign(document["distribution"]):
        raise SigningError(NOT_ALLOWED,
                           f"publisher {publisher.name!r} may sign "
                           f"{', '.join(publisher.distributions)}, not "
                           f"{document['distribution']!r}")
    return publisher, document


def _same_wheel(facts: WheelFacts, publisher: Publisher, document: dict[str, str],
                keys: tuple[str, ...]) -> None:
    """WHEEL_MISMATCH unless the wheel of `facts` has the signed values of `keys`."""
    expected = facts.document()
    differences = [
        f"{key}: signed {document[key]!r}, wheel has {expected[key]!r}"
        for key in keys
        if (canonicalize_name(document[key]) != canonicalize_name(expected[key])
            if key == "distribution" else document[key] != expected[key])
    ]
    if differences:
        raise SigningError(WHEEL_MISMATCH,
                           f"{facts.path.name} is not the wheel {publisher.name!r} signed "
                           f"(altered after signing, or the wrong .sig): "
                           f"{'; '.join(differences)}")
