"""What listing a sandboxed plugin needs, recorded when a worker checked it, by fingerprint.

A sandbox-mode plugin is never imported by the backend: only a worker can say which hooks
its class implements, its description, author, priority, actions and deprecations. That
takes a worker start (~0.1-0.5 s, a process, ~30 MiB), too much for every `plugins list`.
So what the worker said when the plugin was checked (`dihya plugins approve`, the console's
approval, or the first build that had no record) is kept in `dihya_plugin_facts`, keyed by
(entry-point group, name, fingerprint of the files the worker verified, core version):
- a plugin whose files changed has another fingerprint, so a record is never used for
  files other than those the worker loaded, and a core upgrade (another hook table) reads
  none of the older core's records;
- the record is untrusted input like the worker's own answer: read back, it is checked as
  strictly (`dihya.sandbox.admission.checked_meta`) and a malformed one counts as missing;
- a worker started later for the plugin must report the same facts, or it is not used
  (`dihya.sandbox.pool.SandboxPool.expect`).
Whoever can write the store can already switch plugins off and mint tokens; a forged record
can make a listing show other hooks, never make the backend import or trust the plugin.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

import sqlalchemy as sa

from dihya import __version__
from dihya.store import Store, plugin_facts_table

#: Records made by another core version are not read (its hook table may differ).
CORE_VERSION: Final = __version__
MAX_FACTS_BYTES: Final = 1024 * 1024


def recall_facts(store: Store, group: str, keys: Iterable[tuple[str, str]]
                 ) -> dict[tuple[str, str], dict[str, Any]]:
    """The facts recorded for each (name, fingerprint) of `keys` that has a record of this
    core version; a record that is not a JSON object is left out."""
    wanted = set(keys)
    if not wanted:
        return {}
    table = plugin_facts_table
    with store.begin() as conn:
        rows = conn.execute(sa.select(table.c.name, table.c.fingerprint, table.c.facts).where(
            table.c.group_name == group, table.c.core_version == CORE_VERSION)).all()
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row.name, row.fingerprint)
        if key not in wanted or len(row.facts) > MAX_FACTS_BYTES:
            continue
        try:
            facts = json.loads(row.facts)
        except ValueError:
            continue
        if isinstance(facts, dict):
            found[key] = facts
    return found


def record_facts(store: Store, group: str, name: str, fingerprint: str,
                 facts: Mapping[str, Any]) -> None:
    """Record (or replace) what a worker said of `name` with files `fingerprint`."""
    text = json.dumps(facts, separators=(",", ":"), sort_keys=True)
    table = plugin_facts_table
    key = ((table.c.group_name == group) & (table.c.name == name)
           & (table.c.fingerprint == fingerprint))
    with store.locked("plugin-facts") as conn:
        conn.execute(table.delete().where(key))
        conn.execute(table.insert().values(
            group_name=group, name=name, fingerprint=fingerprint, core_version=CORE_VERSION,
            facts=text, recorded_at=time.time()))
