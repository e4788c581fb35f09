"""The persistent audit log: a hash chain in the store, with pseudonyms and personal payload
kept apart so that erasure leaves the chain verifiable.

Each row of `dihya_audit` stores the SHA-256 of its previous row's hash followed by the
canonical JSON of the row (`row_hash`); `dihya_meta` keeps the head (`audit_head`, the
last row) and the anchor (`audit_anchor`, the last row removed by retention), so a
deleted first, middle or last row is detected. Free text that may be personal (a disable
reason) lives in `dihya_audit_payload` with a random salt; the row carries only
SHA-256(salt ":" payload), so deleting payload and salt erases it without breaking the
chain. Actors are random pseudonyms from `dihya_subjects`, keyed by an HMAC of the subject
id, never by the id: deleting that mapping makes a subject's events unlinkable.

Appends take the store's `audit` lock, so concurrent writers (threads, processes, nodes)
never fork the chain. A server defers its request-path events to a writer thread
(`dihya.auditqueue`) that appends them in batches; every read flushes it first.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dihya.audit import AuditEvent
from dihya.canonical import canonical_text
from dihya.store import (
    Store,
    audit_payload_table,
    audit_table,
    meta_table,
    plugin_state_table,
    subjects_table,
    tokens_table,
)

if TYPE_CHECKING:
    from dihya.auditqueue import AuditWriter

GENESIS: Final = "0" * 64
_COLUMNS: Final = ("at", "type", "outcome", "actor", "target")


canonical = canonical_text  # the chain hashes the core's one canonical JSON


def row_hash(prev_hash: str, row: dict[str, Any]) -> str:
    """SHA-256 of the previous hash and the canonical JSON of the row (without its hash)."""
    doc = {k: row[k] for k in ("seq", *_COLUMNS, "fields", "commitment")}
    return hashlib.sha256((prev_hash + canonical(doc)).encode("utf-8")).hexdigest()


def commitment(salt: str, payload: str) -> str:
    return hashlib.sha256(f"{salt}:{payload}".encode()).hexdigest()


# The statements of an append, built once: building and keying an expression per call
# was most of an append's cost.
_GET_META = sa.select(meta_table.c.value).where(meta_table.c.key == sa.bindparam("k"))
_UPDATE_META = meta_table.update().where(meta_table.c.key == sa.bindparam("k")).values(
    value=sa.bindparam("v"))
_INSERT_META = meta_table.insert().values(key=sa.bindparam("k"), value=sa.bindparam("v"))
_GET_PSEUDONYM = sa.select(subjects_table.c.pseudonym).where(
    subjects_table.c.subject_key == sa.bindparam("skey"))
_INSERT_SUBJECT = subjects_table.insert()
_INSERT_ROW = audit_table.insert()
_INSERT_PAYLOAD = audit_payload_table.insert()


def _meta(conn: Connection, key: str) -> str | None:
    value: str | None = conn.execute(_GET_META, {"k": key}).scalar_one_or_none()
    return value


def _set_meta(conn: Connection, key: str, value: str) -> None:
    if conn.execute(_UPDATE_META, {"k": key, "v": value}).rowcount == 0:
        conn.execute(_INSERT_META, {"k": key, "v": value})


@attrs.frozen
class Pending:
    """An event to append, with the clear-text subject, target and note it names."""

    event: AuditEvent
    subject: str | None = None
    target: str | None = None
    note: str | None = None


def _point(text: str | None) -> tuple[int, str]:
    if not text:
        return 0, GENESIS
    seq, _, digest = text.partition(":")
    return int(seq), digest


class AuditLog:
    """Appends, reads and erases audit rows of one store."""

    def __init__(self, store: Store, key: bytes | None = None) -> None:
        self.store = store
        self._key = key
        self._writer: AuditWriter | None = None

    # -- pseudonyms -------------------------------------------------------------------

    def key(self) -> bytes:
        """The HMAC key of subject ids: the configured one, else the store's own."""
        if self._key is None:
            with self.store.begin() as conn:
                value = _meta(conn, "audit_key")
            if value is None:  # pragma: no cover - the migration always writes one
                raise RuntimeError("the store has no audit key")
            self._key = value.encode("ascii")
        return self._key

    def subject_key(self, subject: str) -> str:
        return hmac.new(self.key(), subject.encode("utf-8"), hashlib.sha256).hexdigest()

    def pseudonym_in(self, conn: Connection, subject: str, create: bool = True) -> str | None:
        """The subject's random pseudonym, created on first use (if `create`)."""
        skey = self.subject_key(subject)
        found: str | None = conn.execute(_GET_PSEUDONYM, {"skey": skey}).scalar_one_or_none()
        if found is not None or not create:
            return found
        pseudonym = "p-" + secrets.token_hex(10)
        conn.execute(_INSERT_SUBJECT, {"subject_key": skey, "pseudonym": pseudonym,
                                       "created_at": time.time()})
        return pseudonym

    def pseudonym(self, subject: str, create: bool = True) -> str | None:
        self.key()
        with self.store.locked("audit") as conn:
            return self.pseudonym_in(conn, subject, create)

    # -- append -----------------------------------------------------------------------

    def append(self, event: AuditEvent, subject: str | None = None,
               target: str | None = None, note: str | None = None) -> tuple[int, AuditEvent]:
        """Add `event` at the head of the chain; returns its sequence number and the event
        as stored (time taken under the lock, pseudonyms filled in). Events deferred
        through `defer` are written first, so the chain keeps this process's order."""
        self.flush()
        return self.append_many([Pending(event, subject, target, note)])[0]

    def append_many(self, items: Sequence[Pending]) -> list[tuple[int, AuditEvent]]:
        """Append several events in one transaction (one lock, one head read and write)."""
        self.key()  # read outside the lock
        written = []
        with self.store.locked("audit", fast_commit=True) as conn:
            seq, prev = _point(_meta(conn, "audit_head") or _meta(conn, "audit_anchor"))
            now = round(time.time(), 6)
            for item in items:
                seq += 1
                event, digest = self._insert(conn, seq, prev, now, item)
                written.append((seq, event))
                prev = digest
            if written:
                _set_meta(conn, "audit_head", f"{seq}:{prev}")
        return written

    def _insert(self, conn: Connection, seq: int, prev: str, now: float,
                item: Pending) -> tuple[AuditEvent, str]:
        actor = self.pseudonym_in(conn, item.subject) if item.subject else item.event.actor
        target_p = self.pseudonym_in(conn, item.target) if item.target else None
        event = attrs.evolve(item.event, at=now, actor=actor,
                             target=target_p or item.event.target)
        data = event.to_json()
        row: dict[str, Any] = {k: data.pop(k, None) for k in _COLUMNS}
        row.update(seq=seq, fields=canonical(data), commitment=None)
        if item.note is not None:
            salt = secrets.token_hex(16)
            row["commitment"] = commitment(salt, item.note)
            conn.execute(_INSERT_PAYLOAD, {"seq": seq, "actor": actor, "salt": salt,
                                           "payload": item.note})
        digest = row_hash(prev, row)
        conn.execute(_INSERT_ROW, {"prev_hash": prev, "hash": digest, **row})
        return event, digest

    # -- deferred appends (the server's request path) -----------------------------------

    def start_writer(self, on_written: Callable[[AuditEvent], None]) -> None:
        """Write `defer`red events from a background thread, in batches."""
        from dihya.auditqueue import AuditWriter

        if self._writer is None:
            self._writer = AuditWriter(self, on_written)

    def defer(self, event: AuditEvent, subject: str | None = None, target: str | None = None,
              note: str | None = None) -> bool:
        """Queue an event for the writer thread; False (nothing queued) without a writer."""
        return self._writer is not None and self._writer.submit(
            Pending(event, subject, target, note))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every deferred event of this process is in the store."""
        if self._writer is not None:
            self._writer.flush(timeout)

    def close(self) -> None:
        """Write what is queued and stop the writer thread."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    # -- read -------------------------------------------------------------------------

    def rows(self, subject: str | None = None) -> Iterator[dict[str, Any]]:
        """Every event (about `subject`, if given: as actor or target), oldest first, with
        its note when the payload still exists."""
        self.flush()
        query = (sa.select(audit_table, audit_payload_table.c.payload)
                 .outerjoin(audit_payload_table,
                            audit_payload_table.c.seq == audit_table.c.seq)
                 .order_by(audit_table.c.seq))
        with self.store.begin() as conn:
            if subject is not None:
                pseudonym = self.pseudonym_in(conn, subject, create=False)
                if pseudonym is None:
                    return
                query = query.where(sa.or_(audit_table.c.actor == pseudonym,
                                           audit_table.c.target == pseudonym))
            for r in conn.execute(query):
                out: dict[str, Any] = {"seq": r.seq, **{k: getattr(r, k) for k in _COLUMNS}}
                out.update(json.loads(r.fields))
                if r.payload is not None:
                    out["note"] = r.payload
                yield {k: v for k, v in out.items() if v is not None}

    # -- erase ------------------------------------------------------------------------

    def purge_subject(self, subject: str) -> dict[str, int]:
        """Erase a subject: their pseudonym mapping, their notes and salts, their tokens,
        and who/why on the switches they set. Their events stay, now unlinkable."""
        counts = {"events": 0, "notes": 0, "tokens": 0, "switches": 0}
        self.flush()
        with self.store.locked("audit") as conn:
            pseudonym = self.pseudonym_in(conn, subject, create=False)
            counts["tokens"] = conn.execute(tokens_table.delete().where(
                tokens_table.c.name == subject)).rowcount
            if pseudonym is not None:
                counts["events"] = conn.execute(sa.select(sa.func.count()).select_from(
                    audit_table).where(sa.or_(audit_table.c.actor == pseudonym,
                                              audit_table.c.target == pseudonym))).scalar_one()
                counts["notes"] = conn.execute(audit_payload_table.delete().where(
                    audit_payload_table.c.actor == pseudonym)).rowcount
                counts["switches"] = conn.execute(plugin_state_table.update().where(
                    plugin_state_table.c.actor == pseudonym).values(
                    actor=None, reason=None)).rowcount
                conn.execute(subjects_table.delete().where(
                    subjects_table.c.pseudonym == pseudonym))
        self.compact()
        return counts

    def purge_older_than(self, days: float) -> int:
        """Remove every event older than `days` (a prefix of the chain; the anchor moves to
        the last removed row) and the pseudonyms no remaining event uses. Returns the count."""
        self.flush()  # first: what this process queued is older than the cutoff
        cutoff = time.time() - days * 86400
        with self.store.locked("audit") as conn:
            last = conn.execute(sa.select(audit_table.c.seq, audit_table.c.hash)
                                .where(audit_table.c.at < cutoff)
                                .order_by(audit_table.c.seq.desc()).limit(1)).first()
            if last is None:
                return 0
            removed: int = conn.execute(audit_table.delete().where(
                audit_table.c.seq <= last.seq)).rowcount
            conn.execute(audit_payload_table.delete().where(
                audit_payload_table.c.seq <= last.seq))
            _set_meta(conn, "audit_anchor", f"{last.seq}:{last.hash}")
            used = sa.union(
                sa.select(audit_table.c.actor.label("p")).where(audit_table.c.actor.is_not(None)),
                sa.select(audit_table.c.target).where(audit_table.c.target.is_not(None)),
                sa.select(plugin_state_table.c.actor).where(
                    plugin_state_table.c.actor.is_not(None)))
            conn.execute(subjects_table.delete().where(
                subjects_table.c.pseudonym.not_in(sa.select(used.subquery().c.p))))
        self.compact()
        return removed

    def retention_due(self, interval_s: float) -> bool:
        """Claim the next retention run: True at most once per `interval_s` per store."""
        now = time.time()
        with self.store.locked("retention") as conn:
            last = _meta(conn, "audit_retention_at")
            if last is not None and now - float(last) < interval_s:
                return False
            _set_meta(conn, "audit_retention_at", repr(now))
        return True

    def compact(self) -> None:
        """SQLite: rewrite the file and empty the WAL, so erased bytes leave the disk's
        copy of the database (secure_delete zeroes freed pages as well)."""
        if not self.store.is_sqlite:
            return
        raw = self.store.engine.raw_connection()  # VACUUM cannot run in a transaction
        try:
            cursor = raw.cursor()
            cursor.execute("VACUUM")
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            cursor.close()
        finally:
            raw.close()

    # -- verify -----------------------------------------------------------------------

    def verify(self) -> VerifyResult:
        """Walk the whole chain; the first row that does not verify, and why."""
        self.flush()
        with self.store.begin() as conn:
            seq, prev = _point(_meta(conn, "audit_anchor"))
            head = _meta(conn, "audit_head")
            query = (sa.select(audit_table, audit_payload_table.c.salt,
                               audit_payload_table.c.payload)
                     .outerjoin(audit_payload_table,
                                audit_payload_table.c.seq == audit_table.c.seq)
                     .order_by(audit_table.c.seq))
            count = 0
            for r in conn.execution_options(yield_per=1000).execute(query):
                expected = seq + 1
                if r.seq != expected:
                    return VerifyResult(False, count, expected, f"row {expected} is missing"
                                        + (f" (through row {r.seq - 1})"
                                           if r.seq - 1 > expected else ""))
                if r.prev_hash != prev:
                    return VerifyResult(False, count, r.seq, f"row {r.seq}: prev_hash does "
                                        f"not match row {r.seq - 1} (one of them was altered)")
                row = {k: getattr(r, k) for k in ("seq", *_COLUMNS, "fields", "commitment")}
                if row_hash(prev, row) != r.hash:
                    return VerifyResult(False, count, r.seq, f"row {r.seq} was altered")
                if r.payload is not None and (
                        r.commitment is None or commitment(r.salt, r.payload) != r.commitment):
                    return VerifyResult(False, count, r.seq, f"row {r.seq}: its note was "
                                        "altered")
                seq, prev, count = r.seq, r.hash, count + 1
        if (head or (seq and f"{seq}:{prev}")) and head != f"{seq}:{prev}":
            head_seq, _ = _point(head)
            if head_seq > seq:
                return VerifyResult(False, count, seq + 1, f"row {seq + 1} is missing "
                                    f"(the log's head is row {head_seq})")
            return VerifyResult(False, count, seq, f"the log's head ({head}) does not match "
                                f"row {seq}")
        return VerifyResult(True, count, None, None, f"{seq}:{prev}")


@attrs.frozen
class VerifyResult:
    """The outcome of `AuditLog.verify`: `first_bad` names the first row that failed."""

    ok: bool
    rows: int
    first_bad: int | None
    problem: str | None
    head: str | None = None
