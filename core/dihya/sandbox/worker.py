"""The sandbox worker: one plugin, loaded through the gate, confined, serving hook calls.

Started by the backend as `python -I -S -X pycache_prefix=<dir> -c BOOTSTRAP SPEC` (see
dihya.sandbox.start) inside the walls of dihya.sandbox.outer, with a scrubbed environment
(never forked from the backend). SPEC is JSON: the import path, group, entry-point name,
the distribution's `*.dist-info` directory the backend verified, the expected fingerprint
and the confinement policy. The worker keeps a duplicate of its
original stdout for frames and points fd 1 at stderr, so a plugin's `print` cannot corrupt
the stream. Order: confine (rlimits, no-new-privs, Landlock, seccomp: every layer) ->
verify the files and their resolution again -> import with stevedore -> validate the class
-> hello -> serve requests until the parent closes stdin or says shutdown. No plugin code
runs before every layer is in force.

With `"warm": true` in SPEC it is the bytecode warm-up (dihya.sandbox.bytecode): confined
the same way, it imports what a worker imports before its plugin, and exits.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import msgspec

from dihya.pluginlog.capture import CallBuffer, loading, process_buffer
from dihya.reasons import DihyaError, Reason
from dihya.sandbox.protocol import (
    MAX_FRAME_BYTES,
    ProtocolError,
    check_json,
    read_frame,
    write_frame,
)


class PluginLoadError(DihyaError):
    """The worker could not load its plugin; `reason` is the status reason it reports."""


def load(spec: dict[str, Any]) -> tuple[Any, dict[str, Any],
                                        dict[str, tuple[str, ...] | None]]:
    """Verify and import the plugin; return (instance, metadata, callable method names)."""
    from dihya.gate import verifycache
    from dihya.gate.decide import verified_files
    from dihya.gate.loader import load_plugins

    verifycache.disable()  # the worker hashes its plugin's bytes itself, trusting no cache
    found = _find(spec)
    # the gate again, on this worker's own import path, before anything is imported
    files, problem = verified_files(found)
    if problem is not None and problem[0] in (Reason.SHADOWED_MODULE,
                                              Reason.OUTSIDE_DISTRIBUTION):
        raise PluginLoadError(*problem)
    if problem is not None or files is None or files.fingerprint != spec["fingerprint"]:
        raise PluginLoadError(Reason.FINGERPRINT_MISMATCH,
                              "the plugin's files changed since the backend verified them")
    from dihya.plugin import SCHEMAS_CHECKED_BY_BACKEND

    # an action's input schema is checked against the meta-schema by the backend, on this
    # worker's hello (`checked_meta`), not here: no jsonschema import on every start
    token = SCHEMAS_CHECKED_BY_BACKEND.set(True)
    try:
        loaded, failed = load_plugins(spec["group"], [found.entry_point])
    finally:
        SCHEMAS_CHECKED_BY_BACKEND.reset(token)
    if spec["name"] in failed:
        failure = failed[spec["name"]]
        raise PluginLoadError(failure.reason, failure.message)
    plugin = loaded[spec["name"]]
    cls = plugin.cls
    from dihya.plugin import deprecation_warnings

    meta = {"name": cls.name, "version": cls.version, "safe": cls.safe,
            "priority": cls.priority, "description": cls.description, "author": cls.author,
            "hooks": list(plugin.hooks),
            "hook_args": {h: list(names) for h, names in plugin.hook_args.items()},
            "deprecations": deprecation_warnings(cls),
            "actions": {n: {"method": a.method, "description": a.description,
                            "input_schema": a.input_schema} for n, a in plugin.actions.items()}}
    # what may be called, and with which arguments (None: an action, which takes all)
    callable_names: dict[str, tuple[str, ...] | None] = dict(plugin.hook_args)
    callable_names.update({a.method: None for a in plugin.actions.values()})
    return plugin.instance, meta, callable_names


def _find(spec: dict[str, Any]) -> Any:
    """The plugin's entry point: in the distribution the backend named (`dist_info`, the
    one it verified), reading no other; else (an older backend) found by discovery."""
    from dihya.gate.decide import PluginNotFound, find_installed
    from dihya.gate.discovery import plugin_at

    where = spec.get("dist_info")
    if where:
        from pathlib import Path

        found = plugin_at(Path(where), spec["name"], spec["group"])
        if found is None:
            raise PluginLoadError(Reason.SANDBOX_START_FAILED,
                                  f"{where} no longer declares the plugin {spec['name']!r}")
        return found
    try:
        return find_installed(spec["name"], spec["group"])
    except PluginNotFound as exc:
        raise PluginLoadError(Reason.SANDBOX_START_FAILED, exc.message) from exc


def code_changes(before: dict[Any, Any], after: dict[Any, Any],
                 encoded: dict[Any, bytes] | None = None) -> dict[str, Any]:
    """What `after` changed in `before`: keys set (added or rewritten) and keys removed.

    `before` is a shallow copy of what the hook was given: a list or dict value the hook
    changed in place is the same object in both, so `encoded` holds such values' JSON as
    they were before the call, and one whose JSON differs now has changed too.
    """
    encoded = encoded or {}
    return {"set": {k: v for k, v in after.items()
                    if k not in before or before[k] != v
                    or (k in encoded and v is before[k] and _json(v) != encoded[k])},
            "removed": [k for k in before if k not in after]}


def _json(value: Any) -> bytes:
    try:
        return msgspec.json.encode(value)
    except (TypeError, ValueError, RecursionError):
        return b""  # not JSON data now: a change (check_json refuses it before sending)


def _containers_json(value: dict[Any, Any]) -> dict[Any, bytes]:
    """The JSON of `value`'s list and dict values (what a hook may change in place)."""
    return {k: _json(v) for k, v in value.items() if isinstance(v, dict | list)}


def serve(in_fd: int, out_fd: int, instance: Any,
          allowed: dict[str, tuple[str, ...] | None], max_bytes: int,
          logs: CallBuffer | None = None) -> int:
    """Answer calls until the parent closes the stream or says shutdown. A call names a
    hook (or action method) and its arguments by name; the method gets those it takes.
    When the hook's return replaces one of its arguments (`HookSpec.replaces`: the code,
    the needs), the answer carries only the top-level keys that changed. A request may
    send such an argument as changes to the one this worker kept from an earlier request
    (`delta`, `hold`: `rebuild_arguments`); the hook gets it whole either way.

    `logs`: the worker's buffer of plugin log records (`dihya.pluginlog.capture`); what
    it holds when a call returns (records made at import and since the last answer
    included) goes with that call's answer, as its `"logs"`."""
    from dihya.plugin import HOOKS_BY_NAME

    held: dict[str, dict[str, Any]] = {}  # arguments kept for a later request's `delta`
    # per hook that replaces an argument: what its last answer sent (`answer_key`), so that
    # a request the backend marks `"memo"` is answered `"same"` when the answer is again
    # exactly that one
    last: dict[str, Any] = {}
    while True:
        try:
            message = read_frame(in_fd, None, max_bytes)
        except ProtocolError:
            return 0  # the parent went away or closed the stream: exit quietly
        request_id = message.get("id")
        op = message.get("op")
        if op == "shutdown":
            return 0
        if op == "ping":
            write_frame(out_fd, {"id": request_id, "ok": True, "value": "pong"}, max_bytes)
            continue
        hook = message.get("hook")
        kwargs = message.get("kwargs")
        if op != "call" or hook not in allowed or not isinstance(kwargs, dict):
            write_frame(out_fd, {"id": request_id, "ok": False,
                                 "error": {"type": "ProtocolError",
                                           "message": "unknown operation or hook"}}, max_bytes)
            continue
        try:
            if "delta" in message or "hold" in message:
                kwargs = rebuild_arguments(kwargs, message.get("delta"), message.get("hold"),
                                           held)
            takes = allowed[hook]
            given = {k: v for k, v in kwargs.items() if takes is None or k in takes}
            spec = HOOKS_BY_NAME.get(hook)
            replaced = kwargs.get(spec.replaces) if spec and spec.replaces else None
            original = dict(replaced) if isinstance(replaced, dict) else None
            encoded = _containers_json(original) if original is not None else None
            value = getattr(instance, hook)(**given)
        except Exception as exc:
            response = {"id": request_id, "ok": False,
                        "error": {"type": type(exc).__name__, "message": str(exc)[:500]}}
        else:
            if original is not None and isinstance(value, dict):
                # the parent already has what it sent: answer with the changes only
                response = {"id": request_id, "ok": True, "changes": code_changes(original, value,
                                                                    encoded)}
            else:
                response = {"id": request_id, "ok": True, "value": value}
        sent = last.pop(hook, None)  # forgotten unless this answer is sent and kept again
        key = None
        if "changes" in response:
            key = answer_key(response["changes"])
            if key is not None and key == sent and message.get("memo") is True:
                # the backend holds its validated answer to this very input, and this
                # answer is that answer again: it need not cross (`Worker.call` decides)
                response = {"id": request_id, "ok": True, "same": True}
        logged = logs.take() if logs is not None else None
        if logged is not None:
            response["logs"] = logged
        try:
            if "changes" in response or "value" in response:  # what the plugin made: JSON
                check_json(response.get("changes", response.get("value")))  # data only
            _answer(out_fd, response, max_bytes)
            if key is not None:
                last[hook] = key
        except (TypeError, ValueError, RecursionError, ProtocolError) as exc:
            invalid: dict[str, Any] = {
                "id": request_id, "ok": False,
                "error": {"type": "InvalidOutput",
                          "message": f"the hook returned something that cannot be sent as "
                                     f"JSON: {exc}"[:500]}}
            if "logs" in response:  # what it logged still reaches the operator
                invalid["logs"] = response["logs"]
            _answer(out_fd, invalid, max_bytes)


def answer_key(changes: Any) -> Any:
    """What tells an answer's changes apart from any other's, exactly as sent (key order,
    `1` / `1.0` / `true` distinct), holding nothing the plugin could still change in place:
    for files set to text, the pairs themselves (text is immutable); else its JSON. None
    when it is not JSON data (the answer is then refused anyway)."""
    try:
        set_ = changes["set"]
        if all(type(text) is str and type(path) is str for path, text in set_.items()):
            return (tuple(set_.items()), tuple(changes["removed"]))
        check_json(changes)  # first: the encoder is lenient (NaN would pass as null)
        return msgspec.json.encode(changes)
    except (TypeError, ValueError, RecursionError, KeyError):
        return None


def rebuild_arguments(kwargs: dict[str, Any], delta: Any, hold: Any,
                      held: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The arguments of a call whose request sent some as changes (`delta`: name ->
    `{"set": {key: value}, "removed": [key, ...]}`) to the value this worker was given for
    that name in an earlier request, which named it in `hold`; keep (a copy of) the
    arguments named in this request's `hold` in `held`. `ProtocolError` for a delta to
    nothing held or a malformed one (the parent never sends either).

    The parent sends a delta only for a mapping of text values whose key order the
    rebuild keeps (`dihya.sandbox.pool.argument_delta`): the hook gets the mapping it
    would have got in full. Each hook gets its own copy: what it changes in place never
    reaches what is held."""
    if delta is not None:
        if not isinstance(delta, dict):
            raise ProtocolError("malformed delta")
        kwargs = dict(kwargs)
        for name, change in delta.items():
            base = held.get(name)
            if (base is None or not isinstance(change, dict)
                    or not isinstance(change.get("set"), dict)
                    or not isinstance(change.get("removed"), list)):
                raise ProtocolError(f"delta to an argument not held: {name!r}")
            value = dict(base)
            for key in change["removed"]:
                value.pop(key, None)
            value.update(change["set"])
            kwargs[name] = value
    if hold is not None:
        if not isinstance(hold, list):
            raise ProtocolError("malformed hold")
        held.clear()  # only what this request named: the parent forgets the rest too
        for name in hold:
            given = kwargs.get(name)
            if isinstance(name, str) and isinstance(given, dict):
                held[name] = dict(given)  # the hook's own copy is the one in `kwargs`
    return kwargs


def _answer(out_fd: int, response: dict[str, Any], max_bytes: int) -> None:
    """Send `response`; if its log records make it too large, send it without them (they
    are counted as dropped)."""
    try:
        write_frame(out_fd, response, max_bytes)
    except ProtocolError:
        logged = response.pop("logs", None)
        if logged is None:
            raise
        response["logs"] = {"records": [],
                            "dropped": len(logged["records"]) + logged["dropped"]}
        write_frame(out_fd, response, max_bytes)


def main(argv: list[str]) -> int:
    out_fd = os.dup(1)
    os.dup2(2, 1)  # fd 1 now goes to stderr: prints cannot reach the frame stream
    sys.stdout = os.fdopen(1, "w", closefd=False)
    spec = json.loads(argv[1])
    max_bytes = int(spec.get("max_frame_bytes", MAX_FRAME_BYTES))
    layers_on: list[str] = []
    logs = process_buffer()  # from now on, every `dihya.plugin` record is this plugin's
    try:
        if spec.get("policy") is not None:
            from dihya.sandbox.inner import confine
            from dihya.sandbox.policy import SandboxPolicy

            layers_on += confine(SandboxPolicy(**spec["policy"]))
        if spec.get("warm"):  # fill the workers' bytecode cache (dihya.sandbox.bytecode)
            from dihya.sandbox.bytecode import warm_imports

            warm_imports()
            return 0
        with loading(str(spec["name"])):
            instance, meta, allowed = load(spec)
    except PluginLoadError as exc:
        write_frame(out_fd, {"id": 0, "ok": False,
                             "error": {"reason": exc.reason, "message": exc.message[:2000]}})
        return 1
    except Exception as exc:
        write_frame(out_fd, {"id": 0, "ok": False,
                             "error": {"reason": Reason.SANDBOX_START_FAILED,
                                       "message": f"{type(exc).__name__}: {exc}"[:2000]}})
        return 1
    write_frame(out_fd, {"id": 0, "ok": True, "op": "hello", "meta": meta,
                         "layers": layers_on, "deltas": True, "same": True})
    return serve(0, out_fd, instance, allowed, max_bytes, logs)

