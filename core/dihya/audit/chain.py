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
never fork the chain. Every append returns once committed; the threads of a process that
append at the same time share one transaction (group commit, `dihya.audit.writer`). Each
event carries a unique `event_id` (a unique index in the store): a batch retried after a
lost COMMIT acknowledgement finds the events that did commit and does not append them
again, so the chain holds each event once. Since version 3 the id is hashed with its row.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from dihya.audit import AuditEvent
from dihya.audit.writer import COMMIT_TIMEOUT_S, GroupCommit
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
    from dihya.store.marker import StoreMarker

log = logging.getLogger("dihya.audit.chain")

GENESIS: Final = "0" * 64
_SUBJECT_KEYS_KEPT: Final = 1024  # subject ids whose HMAC a process remembers
_COLUMNS: Final = ("at", "type", "outcome", "actor", "target")


canonical = canonical_text  # the chain hashes the core's one canonical JSON


def row_hash(prev_hash: str, row: dict[str, Any]) -> str:
    """SHA-256 of the previous hash and the canonical JSON of the row (without its hash).
    `event_id` is hashed when the row has one (rows written before version 3 have none)."""
    doc = {k: row[k] for k in ("seq", *_COLUMNS, "fields", "commitment")}
    if row.get("event_id") is not None:
        doc["event_id"] = row["event_id"]
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
# The append's statements as driver SQL (`Store.raw_locked`, `:name` placeholders)
_STORED: Final = "seq, at, type, outcome, actor, target, fields, event_id"
_SQL_HEAD: Final = ("SELECT key, value FROM dihya_meta "
                    "WHERE key IN ('audit_head', 'audit_anchor')")
_SQL_HEAD_UPSERT: Final = ("INSERT INTO dihya_meta (key, value) VALUES ('audit_head', :v) "
                           "ON CONFLICT (key) DO UPDATE SET value = excluded.value")
_SQL_SUBJECT: Final = ("INSERT INTO dihya_subjects (subject_key, pseudonym, created_at) "
                       "VALUES (:subject_key, :pseudonym, :created_at)")
_SQL_ROW: Final = ("INSERT INTO dihya_audit (seq, at, type, outcome, actor, target, fields, "
                   "commitment, prev_hash, hash, event_id) VALUES (:seq, :at, :type, :outcome, "
                   ":actor, :target, :fields, :commitment, :prev_hash, :hash, :event_id)")
_SQL_PAYLOAD: Final = ("INSERT INTO dihya_audit_payload (seq, actor, salt, payload) "
                       "VALUES (:seq, :actor, :salt, :payload)")


def _in_list(prefix: str, values: Sequence[str]) -> tuple[str, dict[str, str]]:
    """Placeholders and parameters for `IN (...)` over `values`."""
    params = {f"{prefix}{i}": v for i, v in enumerate(values)}
    return ", ".join(f":{name}" for name in params), params


_INSERT_SUBJECT = subjects_table.insert()


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


def _stored_event(r: Sequence[Any]) -> AuditEvent:
    """The event a stored row holds (the columns of `_STORED`, in that order)."""
    _seq, *columns, fields_json, event_id = r
    fields = dict(zip(_COLUMNS, columns, strict=True))
    fields.update(json.loads(fields_json))
    return AuditEvent(event_id=event_id, **{k: v for k, v in fields.items() if v is not None})


def _point(text: str | None) -> tuple[int, str]:
    if not text:
        return 0, GENESIS
    seq, _, digest = text.partition(":")
    return int(seq), digest


class AuditLog:
    """Appends, reads and erases audit rows of one store.

    `marker` (the store marker of the config, `dihya.store.marker`) is told once per process
    that events were committed to this store, so that an emptied or replaced store is
    noticed later (`dihya audit verify`)."""

    def __init__(self, store: Store, key: bytes | None = None,
                 marker: StoreMarker | None = None) -> None:
        self.store = store
        self._key = key
        self._marker = marker
        self._marked = marker is None
        self._subject_keys: dict[str, str] = {}
        self.group = GroupCommit(self.append_many)

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
        """HMAC-SHA256 of the subject id under `key()`, remembered for the few subjects
        (token names) a process records for; the key never changes once read."""
        found = self._subject_keys.get(subject)
        if found is None:
            found = hmac.new(self.key(), subject.encode("utf-8"), hashlib.sha256).hexdigest()
            if len(self._subject_keys) >= _SUBJECT_KEYS_KEPT:
                self._subject_keys.clear()
            self._subject_keys[subject] = found
        return found

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
        """Add `event` at the head of the chain and return once it is committed: its
        sequence number and the event as stored (time taken under the lock, pseudonyms
        filled in). Raises `StoreUnavailable` if it cannot be committed."""
        return self.commit([Pending(event, subject, target, note)])[0]

    def commit(self, items: Sequence[Pending],
               timeout: float = COMMIT_TIMEOUT_S) -> list[tuple[int, AuditEvent]]:
        """Append `items` in one go with whatever other threads of this process append at
        the same time (group commit); return once committed, else raise `StoreUnavailable`."""
        written = self.group.commit(items, timeout)
        if not self._marked:
            self._mark()
        return written

    def _mark(self) -> None:
        self._marked = True
        assert self._marker is not None
        try:
            self._marker.note_events(self.store.store_id())
        except OSError as exc:  # the config's directory is read-only: say so, go on
            log.warning("cannot record in the store marker that audit events were written: "
                        + (exc.strerror or type(exc).__name__), extra={"reason": "marker"})

    def append_many(self, items: Sequence[Pending],
                    retry: bool = False) -> list[tuple[int, AuditEvent]]:
        """Append several events in one transaction (one lock, one head read and write).

        `retry`: an earlier attempt with these items may have committed (its outcome was
        unknown): events whose id the log already holds are returned as stored, not
        appended again, and the others are appended after the current head. The unique
        index on `event_id` refuses a second row for one event in any case.

        Written on the driver's connection (`Store.raw_locked`): this runs for every
        request, and SQLAlchemy's per-statement work was most of its cost.
        """
        self.key()  # read outside the lock
        written: list[tuple[int, AuditEvent]] = []
        with self.store.raw_locked("audit") as tx:
            stored: dict[str, tuple[int, AuditEvent]] = {}
            ids = [i.event.event_id for i in items if i.event.event_id]
            if retry and ids:
                names, params = _in_list("e", ids)
                stored = {r[-1]: (r[0], _stored_event(r))
                          for r in tx.rows(f"SELECT {_STORED} FROM dihya_audit "
                                           f"WHERE event_id IN ({names})", params)}
            new = [i for i in items if i.event.event_id not in stored]
            keys = {self.subject_key(s): s
                    for i in new for s in (i.subject, i.target) if s}
            # the head and the pseudonyms in one query (one round trip on PostgreSQL)
            names, params = _in_list("k", list(keys))
            found = tx.rows(_SQL_HEAD + (f" UNION ALL SELECT subject_key, pseudonym FROM "
                                         f"dihya_subjects WHERE subject_key IN ({names})"
                                         if keys else ""), params)
            head = {k: v for k, v in found if k in ("audit_head", "audit_anchor")}
            known = {k: v for k, v in found if k in keys}
            missing = [{"subject_key": k, "pseudonym": "p-" + secrets.token_hex(10),
                        "created_at": time.time()} for k in keys if k not in known]
            known.update((m["subject_key"], m["pseudonym"]) for m in missing)
            pseudonyms = {subject: known[k] for k, subject in keys.items()}
            seq, prev = _point(head.get("audit_head") or head.get("audit_anchor"))
            now = round(time.time(), 6)
            rows, payloads = [], []
            for item in items:
                if item.event.event_id in stored:
                    written.append(stored[item.event.event_id])
                    continue
                seq += 1
                event, row, payload = self._row(seq, prev, now, item, pseudonyms)
                rows.append(row)
                if payload is not None:
                    payloads.append(payload)
                written.append((seq, event))
                prev = row["hash"]
            if rows:
                tx.write(_SQL_SUBJECT, missing)
                tx.write(_SQL_PAYLOAD, payloads)
                tx.write(_SQL_ROW, rows)
                tx.write(_SQL_HEAD_UPSERT, [{"v": f"{seq}:{prev}"}])
        return written

    @staticmethod
    def _row(seq: int, prev: str, now: float, item: Pending, pseudonyms: dict[str, str]
             ) -> tuple[AuditEvent, dict[str, Any], dict[str, Any] | None]:
        """The event as stored, its audit row (hash included) and its payload row."""
        actor = pseudonyms[item.subject] if item.subject else item.event.actor
        target = pseudonyms[item.target] if item.target else item.event.target
        data = item.event.to_json()
        data.update(at=now, actor=actor, target=target)
        event = AuditEvent(**{k: v for k, v in data.items() if v is not None})
        row: dict[str, Any] = {k: data.pop(k, None) for k in _COLUMNS}
        row.update(seq=seq, event_id=data.pop("event_id", None), commitment=None)
        row["fields"] = canonical(data)
        payload = None
        if item.note is not None:
            salt = secrets.token_hex(16)
            row["commitment"] = commitment(salt, item.note)
            payload = {"seq": seq, "actor": actor, "salt": salt, "payload": item.note}
        row.update(prev_hash=prev, hash=row_hash(prev, row))
        return event, row, payload

    def flush(self, timeout: float = 30.0) -> None:
        """Nothing to do: every append returns committed (kept for callers written when
        a writer thread deferred events)."""

    def close(self) -> None:
        """Nothing to do: no writer thread (kept for callers written when a writer thread
        deferred events)."""

    # -- read -------------------------------------------------------------------------

    def rows(self, subject: str | None = None) -> Iterator[dict[str, Any]]:
        """Every event (about `subject`, if given: as actor or target), oldest first, with
        its note when the payload still exists."""
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
                yield _row_dict(r)

    def tail(self, after: int | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The last `limit` events (oldest first) or, with `after`, up to `limit` events
        after row `after`, oldest first (`dihya audit tail --follow` polls with it)."""
        query = (sa.select(audit_table, audit_payload_table.c.payload)
                 .outerjoin(audit_payload_table,
                            audit_payload_table.c.seq == audit_table.c.seq))
        if after is None:
            query = query.order_by(audit_table.c.seq.desc()).limit(limit)
        else:
            query = query.where(audit_table.c.seq > after).order_by(
                audit_table.c.seq).limit(limit)
        with self.store.begin() as conn:
            found = [_row_dict(r) for r in conn.execute(query)]
        return found[::-1] if after is None else found

    # -- erase ------------------------------------------------------------------------

    def purge_subject(self, subject: str, before: float | None = None) -> dict[str, int]:
        """Erase a subject: their pseudonym mapping, their notes and salts, their tokens,
        and who/why on the switches they set. Their events stay, now unlinkable.

        With `before` (seconds since the epoch: the HTTP purge floor), only notes of
        events and switches made before it go; while the subject has an event or a switch
        at or after it, the pseudonym mapping stays (deleting it would make those recent
        events unlinkable) and `events` is 0. `kept_events` counts those recent events."""
        counts = {"events": 0, "notes": 0, "tokens": 0, "switches": 0}
        if before is not None:
            counts["kept_events"] = 0
        with self.store.locked("audit") as conn:
            pseudonym = self.pseudonym_in(conn, subject, create=False)
            counts["tokens"] = conn.execute(tokens_table.delete().where(
                tokens_table.c.name == subject)).rowcount
            if pseudonym is not None and before is not None:
                counts.update(self._purge_subject_before(conn, pseudonym, before))
            elif pseudonym is not None:
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

    @staticmethod
    def _purge_subject_before(conn: Connection, pseudonym: str,
                              before: float) -> dict[str, int]:
        """`purge_subject` with a floor, inside its transaction."""
        about = sa.or_(audit_table.c.actor == pseudonym, audit_table.c.target == pseudonym)
        young = conn.execute(sa.select(sa.func.count()).select_from(audit_table).where(
            about, audit_table.c.at >= before)).scalar_one()
        young_switches = conn.execute(sa.select(sa.func.count()).select_from(
            plugin_state_table).where(plugin_state_table.c.actor == pseudonym,
                                      plugin_state_table.c.at >= before)).scalar_one()
        old_seqs = sa.select(audit_table.c.seq).where(audit_table.c.at < before)
        counts = {"kept_events": young, "events": 0}
        counts["notes"] = conn.execute(audit_payload_table.delete().where(
            audit_payload_table.c.actor == pseudonym,
            audit_payload_table.c.seq.in_(old_seqs))).rowcount
        counts["switches"] = conn.execute(plugin_state_table.update().where(
            plugin_state_table.c.actor == pseudonym,
            plugin_state_table.c.at < before).values(actor=None, reason=None)).rowcount
        if not young and not young_switches:
            counts["events"] = conn.execute(sa.select(sa.func.count()).select_from(
                audit_table).where(about)).scalar_one()
            conn.execute(subjects_table.delete().where(
                subjects_table.c.pseudonym == pseudonym))
        return counts

    def purge_older_than(self, days: float) -> int:
        """Remove every event older than `days` (a prefix of the chain; the anchor moves to
        the last removed row) and the pseudonyms no remaining event uses. Returns the count."""
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

    def hash_at(self, seq: int) -> str | None:
        """The hash of row `seq` (or of the anchor, if retention removed up to it); None
        if the row is gone."""
        with self.store.begin() as conn:
            found: str | None = conn.execute(sa.select(audit_table.c.hash).where(
                audit_table.c.seq == seq)).scalar_one_or_none()
            if found is None:
                anchor_seq, anchor_hash = _point(_meta(conn, "audit_anchor"))
                if anchor_seq == seq and seq:
                    found = anchor_hash
        return found

    def verify(self) -> VerifyResult:
        """Walk the whole chain; the first row that does not verify, and why."""
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
                row = {k: getattr(r, k) for k in ("seq", *_COLUMNS, "fields", "commitment",
                                                  "event_id")}
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


def _row_dict(r: Any) -> dict[str, Any]:
    """One stored event as exported: `seq`, the columns, its fields, its note if kept."""
    out: dict[str, Any] = {"seq": r.seq, **{k: getattr(r, k) for k in _COLUMNS},
                           "event_id": r.event_id}
    out.update(json.loads(r.fields))
    if r.payload is not None:
        out["note"] = r.payload
    return {k: v for k, v in out.items() if v is not None}
