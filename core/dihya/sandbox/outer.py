"""The walls the parent builds around a sandbox worker before it starts (`launch()`).

`launch(argv, policy)` turns an interpreter command line into the one to `Popen`: a
scrubbed environment, `python -I -S` (no PYTHON* variables, no user site, no `site` at all:
no `.pth` file or `sitecustomize` runs; the caller gives the import path explicitly), a
minimal filesystem view, private namespaces, and an unprivileged user when the backend is
root.

env
    Only PATH=/usr/bin:/bin, LANG=LC_ALL=C.UTF-8, HOME and TMPDIR (both the scratch dir);
    bytecode goes to `-X pycache_prefix=<scratch>/pycache` unless the argv names another.
bwrap (preferred)
    `bwrap --die-with-parent --unshare-{net,ipc,pid,uts,cgroup-try} --new-session` over
    an empty root holding only: the system libraries (SYSTEM_READ_ONLY_PATHS), each path of
    `policy.read_only_paths` (the interpreter's prefixes, the import path, the bytecode
    cache) bound read-only at its own path, `/dev` (null, zero, random, urandom, tty, shm),
    a `/proc` of the worker's own PID namespace, and the scratch dir: a private tmpfs of
    `scratch_bytes` (`[sandbox] scratch_mb`), so nothing a worker writes reaches the host's
    disk and it is gone when the worker exits; the root is then made read-only. Host
    `/run`, `/var`, `/home`, `/tmp`, `/etc` (but the loader cache and local time) are
    absent: a database's unix socket cannot even be named.
    Directories that lead to a bound path are created afresh (mode 0755), so an
    interpreter under `/root` (mode 0700 on the host) is reachable inside the view.
user
    When the backend is root the worker runs as `dihya-sandbox` if that user exists, else
    `nobody` (its primary group, no supplementary groups). With bubblewrap, bwrap runs as
    root (no user namespace needed), keeps only CAP_SETUID/SETGID/SETPCAP, and execs
    `setpriv --reuid --regid --clear-groups --inh-caps=-all --bounding-set=-all` inside the
    view, which execs Python: no Python code ever runs as root in a worker. Without
    bubblewrap, `Popen(user=...)` switches, when that user can reach the interpreter. If
    no way works the worker is not started (SandboxSetupError) unless the policy says
    `allow_root` (`[sandbox] allow_root = true`): then it runs as root with every
    capability dropped, and says so. When the backend is not root, bwrap runs
    unprivileged in a new user namespace and the worker keeps the backend's uid.
unshare (fallback without bwrap)
    `unshare --net --ipc --uts --fork --kill-child` (`--user` when not root; as root
    followed by `setpriv --bounding-set=-all --inh-caps=-all`). No mount namespace: the
    host's view, restricted by Landlock and the user's permissions.
none
    Neither tool usable: a warning, and the inner layers (dihya.sandbox.inner) are all
    that is left.

`--die-with-parent` uses PR_SET_PDEATHSIG, which fires when the *thread* that called
Popen exits: start workers from a long-lived thread.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterable
from typing import Any, Final

from dihya.sandbox.policy import (
    AVAILABLE,
    SAFE_PATH,
    SANDBOX_USERS,
    SYSTEM_READ_ONLY_PATHS,
    SandboxPolicy,
    SandboxSetupError,
)

__all__ = ["NEVER_BOUND", "inner_warnings", "interpreter_paths", "launch", "probe_outer",
           "probe_user",
           "sandbox_user", "view_args"]

# Capabilities bwrap keeps (as root) for setpriv to switch to the sandbox user; setpriv
# drops them all, from the bounding set too, before it execs the interpreter.
_SWITCH_CAPS: Final = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")
# Host directories never bound into a view, even when an import path names them (a script
# run from /tmp puts /tmp first on its path): they hold host sockets, devices or everything.
NEVER_BOUND: Final = frozenset({"/", "/proc", "/sys", "/dev", "/run", "/var/run", "/tmp",
                                "/var/tmp", "/home", "/root", "/etc", "/var"})


def _fail(exc: BaseException) -> str:
    return f"unavailable: {type(exc).__name__}: {exc}"


@functools.cache
def sandbox_user() -> pwd.struct_passwd | None:
    """The unprivileged user workers run as when the backend is root, if one exists."""
    for name in SANDBOX_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


def _setpriv() -> str | None:
    return shutil.which("setpriv", path=SAFE_PATH)


def interpreter_paths(python: str) -> tuple[str, ...]:
    """The installation an interpreter needs: its prefixes (for the running interpreter)
    and the prefix of the binary it resolves to (a venv's `bin/python` is a link)."""
    paths = set()
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        paths |= {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for candidate in (os.path.abspath(python), os.path.realpath(python)):
        paths.add(os.path.dirname(os.path.dirname(candidate)))
    return tuple(sorted(p for p in paths if p and p != "/"))


# --------------------------------------------------------------------------- the view


def _first_link(path: str) -> str | None:
    """The first component of absolute `path` that is a symbolic link, or None."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        prefix = "/" + "/".join(parts[:i])
        if os.path.islink(prefix):
            return prefix
    return None


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _outermost(paths: Iterable[str]) -> list[str]:
    found = sorted(set(paths))
    return [p for p in found if not any(q != p and _inside(p, q) for q in found)]


def view_args(paths: Iterable[str], scratch: str | None,
              scratch_bytes: int | None = None) -> list[str]:
    """bwrap arguments for a root holding only `paths` (read-only) and `scratch` (if any):
    the host directory, or with `scratch_bytes` a private tmpfs of that size at its path.

    Each path is bound at its real location; a symbolic link on the way to it (`/lib64 ->
    usr/lib64`, `/etc/localtime`) is recreated as a link. Directories leading to a bound
    path are created with mode 0755, so the host's permissions on them (a 0700 `/root`)
    do not matter; the bound directories keep theirs.
    """
    binds: set[str] = set()
    links: dict[str, str] = {}
    for raw in paths:
        path = os.path.abspath(raw)
        if not os.path.lexists(path):
            continue
        real = os.path.realpath(path)
        if (real in NEVER_BOUND or not os.path.exists(real)
                or any(_inside(real, p) for p in ("/proc", "/sys", "/dev"))):
            continue
        binds.add(real)
        link = _first_link(path)
        if link is not None and os.path.realpath(os.path.dirname(link)) == os.path.dirname(link):
            links[link] = os.readlink(link)
    args: list[str] = []
    made: set[str] = {"/"}

    def make_parents(path: str) -> None:
        parts = path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/" + "/".join(parts[:i])
            if parent not in made:
                made.add(parent)
                args.extend(["--perms", "0755", "--dir", parent])

    bound = _outermost(binds)
    for path in bound:
        make_parents(path)
        args.extend(["--ro-bind", path, path])
    for link, target in sorted(links.items()):
        if link not in made and not any(_inside(link, b) for b in bound):
            make_parents(link)
            made.add(link)
            args.extend(["--symlink", target, link])
    args.extend(["--dev", "/dev", "--proc", "/proc"])
    if scratch is not None:
        if not any(_inside(scratch, b) for b in bound):
            make_parents(scratch)
        if scratch_bytes is None:
            args.extend(["--bind", scratch, scratch])
        else:  # only the worker lives in this mount namespace; Landlock still applies
            args.extend(["--perms", "0777", "--size", str(scratch_bytes), "--tmpfs", scratch])
    return [*args, "--remount-ro", "/"]


def _bwrap_argv(bwrap: str, view: list[str], scratch: str, privileged: bool,
                switch_to: pwd.struct_passwd | None) -> list[str]:
    argv = [bwrap, "--die-with-parent"]
    if not privileged:
        argv.append("--unshare-user")
    argv += ["--unshare-net", "--unshare-ipc", "--unshare-pid", "--unshare-uts",
             "--unshare-cgroup-try", "--new-session", *view, "--chdir", scratch,
             "--cap-drop", "ALL"]
    if switch_to is None:
        return [*argv, "--"]
    setpriv = _setpriv() or "setpriv"
    for cap in _SWITCH_CAPS:
        argv += ["--cap-add", cap]
    return [*argv, "--", setpriv, f"--reuid={switch_to.pw_uid}", f"--regid={switch_to.pw_gid}",
            "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]


def _unshare_argv(unshare: str, rooted: bool) -> list[str]:
    argv = [unshare]
    if not rooted:
        argv.append("--user")
    argv += ["--net", "--ipc", "--uts", "--fork", "--kill-child", "--"]
    setpriv = _setpriv()
    if rooted and setpriv is not None:
        argv += [setpriv, "--bounding-set=-all", "--inh-caps=-all", "--"]
    return argv


# --------------------------------------------------------------------------- probing


def _try_run(argv: list[str], **kwargs: Any) -> str:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env={"PATH": SAFE_PATH}, cwd="/",
                              timeout=20, check=False, **kwargs)
    except (OSError, subprocess.SubprocessError) as exc:
        return _fail(exc)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        return f"unavailable: {argv[0]} failed: {message[-1] if message else done.returncode}"
    return AVAILABLE


def _user_kwargs(user: pwd.struct_passwd) -> dict[str, Any]:
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _base_view() -> list[str]:
    extra = [_setpriv()] if os.geteuid() == 0 and _setpriv() else []
    return [*SYSTEM_READ_ONLY_PATHS, *interpreter_paths(sys.executable), *filter(None, extra)]


@functools.cache
def probe_outer(tool: str) -> str:
    """Whether `tool` ("bwrap" or "unshare") can start this interpreter as a worker would
    run: `python -I -S -c pass` inside it, as the sandbox user when the backend is root."""
    path = shutil.which(tool, path=SAFE_PATH)
    if path is None:
        return f"unavailable: {tool} is not installed"
    python = [sys.executable, "-I", "-S", "-c", "pass"]
    root = os.geteuid() == 0
    user = sandbox_user() if root else None
    if tool == "bwrap":
        if root and user is not None and _setpriv() is None:
            return "unavailable: setpriv (util-linux) is not installed"
        view = view_args(_base_view(), None)
        argv = [*_bwrap_argv(path, view, "/", privileged=root, switch_to=user), *python]
        return _try_run(argv)
    kwargs = _user_kwargs(user) if user is not None and _reachable(
        sys.executable, user.pw_uid, user.pw_gid, os.R_OK | os.X_OK) else {}
    return _try_run([*_unshare_argv(path, root and not kwargs), *python], **kwargs)


def probe_user() -> str:
    """Whether workers can run as an unprivileged user ("available", or why not)."""
    if os.geteuid() != 0:
        return "unavailable: the backend is not root; the worker keeps its uid"
    user = sandbox_user()
    if user is None:
        return f"unavailable: none of the users {', '.join(SANDBOX_USERS)} exists"
    if probe_outer("bwrap") == AVAILABLE:
        return AVAILABLE
    if _reachable(sys.executable, user.pw_uid, user.pw_gid, os.R_OK | os.X_OK):
        return AVAILABLE
    return (f"unavailable: bubblewrap is not usable ({probe_outer('bwrap')}) and user "
            f"{user.pw_name} cannot reach the interpreter {os.path.realpath(sys.executable)}")


def _reachable(path: str, uid: int, gid: int, leaf_mode: int) -> bool:
    """Whether uid/gid (no supplementary groups) can traverse to `path` and has `leaf_mode`
    (a combination of R_OK=4, W_OK=2, X_OK=1) on it, by the permission bits."""
    real = os.path.realpath(path)
    parts = real.split("/")
    prefixes = ["/" + "/".join(parts[1:i]) for i in range(1, len(parts))]
    checks = [(p, os.X_OK) for p in prefixes] + [(real, leaf_mode)]
    return all(_allowed(p, uid, gid, need) for p, need in checks)


def _allowed(path: str, uid: int, gid: int, need: int) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_uid == uid:
        bits = (st.st_mode >> 6) & 7
    elif st.st_gid == gid:
        bits = (st.st_mode >> 3) & 7
    else:
        bits = st.st_mode & 7
    return bits & need == need


# --------------------------------------------------------------------------- launch


def _python_flags(argv: list[str], scratch: str) -> list[str]:
    """`python -I -S [-X pycache_prefix=<scratch>/pycache] ...` from the caller's argv."""
    rest = list(argv[1:])
    flags = [f for f in ("-I", "-S") if f not in rest]
    has_prefix = any((a.startswith("pycache_prefix=") and rest[i - 1] == "-X")
                     or a.startswith("-Xpycache_prefix=") for i, a in enumerate(rest))
    if not has_prefix:
        flags += ["-X", f"pycache_prefix={scratch}/pycache"]
    return [argv[0], *flags, *rest]


def launch(argv: list[str], policy: SandboxPolicy
           ) -> tuple[list[str], dict[str, str], dict[str, Any], list[str], list[str]]:
    """Parent side, before Popen: (full argv, scrubbed env, extra Popen kwargs, outer layers
    in effect, warnings).

    `argv` starts with the Python interpreter; `-I -S` are added when missing, so the
    caller must set `sys.path` itself (see dihya.sandbox.start). The extra kwargs are
    only `user`, `group`, `extra_groups` and `umask`. Pass `env=` the returned environment
    and `cwd=policy.scratch_dir`. Raises SandboxSetupError when `policy.outer` names a
    tool that is unavailable, when the policy asks for network, or when the worker would
    run as root and the policy does not allow it.
    """
    if not argv:
        raise ValueError("argv must start with the Python interpreter")
    if policy.network:
        raise SandboxSetupError("network access for a sandbox worker is not supported")
    scratch = os.path.abspath(policy.scratch_dir)
    if not os.path.isdir(scratch):
        raise SandboxSetupError(f"the scratch dir {scratch} does not exist")
    warnings: list[str] = []
    layers = ["env"]
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": scratch,
           "TMPDIR": scratch}
    full = _python_flags(argv, scratch)
    kwargs: dict[str, Any] = {"umask": 0o077}
    outer = _choose_outer(policy.outer)
    root = os.geteuid() == 0
    user = sandbox_user() if root and policy.switch_user else None
    how = _switch_method(user, outer, argv[0]) if user is not None else None
    if root and policy.switch_user and how is None:
        why = (f"no unprivileged user exists ({', '.join(SANDBOX_USERS)})" if user is None else
               f"user {user.pw_name} cannot reach the interpreter "
               f"{os.path.realpath(argv[0])} and bubblewrap (with setpriv) is not usable")
        if not policy.allow_root:
            raise SandboxSetupError(
                f"the worker would run as root: {why}. Install bubblewrap, or Python where "
                f"user {user.pw_name if user else 'nobody'} can reach it, or set "
                "`allow_root = true` in [sandbox] to accept root workers (capabilities "
                "dropped)")
        warnings.append(f"the worker runs as root (capabilities dropped, allowed by "
                        f"[sandbox] allow_root): {why}")
        layers.append("user:root")
    if how is not None and user is not None:
        # the sandbox user's; the backend's group may only traverse it (0710), which is
        # what bwrap needs to chdir into it as root without CAP_DAC_OVERRIDE
        os.chown(scratch, user.pw_uid, os.getegid() if how == "setpriv" else user.pw_gid)
        os.chmod(scratch, 0o710 if how == "setpriv" else 0o700)
        layers.append(f"user:{user.pw_name}")
        if how == "popen":
            kwargs.update(_user_kwargs(user))
    if outer == "bwrap":
        paths = [*SYSTEM_READ_ONLY_PATHS, *interpreter_paths(argv[0]),
                 *policy.read_only_paths]
        if how == "setpriv":
            paths.append(_setpriv() or "/usr/bin/setpriv")
            _warn_unreadable(policy.read_only_paths, user, warnings)
        bwrap = shutil.which("bwrap", path=SAFE_PATH) or "bwrap"
        view = view_args(paths, scratch, policy.scratch_bytes)
        full = [*_bwrap_argv(bwrap, view, scratch, privileged=root,
                             switch_to=user if how == "setpriv" else None), *full]
        layers.append("bwrap")
    elif outer == "unshare":
        if policy.outer == "auto":
            warnings.append(f"bwrap {probe_outer('bwrap')}; falling back to unshare "
                            "(network, IPC and UTS namespaces only; the host's filesystem "
                            "view, restricted by Landlock)")
        unshare = shutil.which("unshare", path=SAFE_PATH) or "unshare"
        full = [*_unshare_argv(unshare, root and how != "popen"), *full]
        layers.append("unshare")
        if how == "popen" and user is not None:
            _warn_unreadable(policy.read_only_paths, user, warnings, traverse=True)
    else:
        warnings.append(f"no outer isolation: bwrap {probe_outer('bwrap')}; "
                        f"unshare {probe_outer('unshare')}")
    warnings += inner_warnings()
    return full, env, kwargs, layers, warnings


def inner_warnings() -> list[str]:
    """The inner layers (dihya.sandbox.inner) this machine does not allow: the worker
    skips them, so they are warnings like a missing outer layer (and `[sandbox]
    require_isolation` refuses the worker). Probed here, in the backend, not taken from
    what the worker reports."""
    from dihya.sandbox.inner import probe_landlock, probe_seccomp

    return [f"no {name} in the worker: {state}"
            for name, state in (("Landlock", probe_landlock()), ("seccomp", probe_seccomp()))
            if state != AVAILABLE]


def _choose_outer(wanted: str) -> str:
    if wanted == "none":
        return "none"
    for tool in ("bwrap", "unshare"):
        if wanted in ("auto", tool) and probe_outer(tool) == AVAILABLE:
            return tool
        if wanted == tool:
            raise SandboxSetupError(f"{tool} requested: {probe_outer(tool)}")
    return "none"


def _switch_method(user: pwd.struct_passwd, outer: str, python: str) -> str | None:
    """How a root backend makes the worker run as `user`: "setpriv" inside a bwrap view,
    "popen" (the user must reach the interpreter on the host), or None (no way)."""
    if outer == "bwrap" and _setpriv() is not None:
        return "setpriv"
    if _reachable(python, user.pw_uid, user.pw_gid, os.R_OK | os.X_OK):
        return "popen"
    return None


def _warn_unreadable(paths: Iterable[str], user: pwd.struct_passwd | None,
                     warnings: list[str], traverse: bool = False) -> None:
    """A read-only path the sandbox user cannot read (in the view only the path itself
    counts: the directories leading to it are the view's own)."""
    if user is None:
        return
    for path in paths:
        if not os.path.exists(path):
            continue
        need = os.R_OK | (os.X_OK if os.path.isdir(path) else 0)
        ok = (_reachable(path, user.pw_uid, user.pw_gid, need) if traverse
              else _allowed(os.path.realpath(path), user.pw_uid, user.pw_gid, need))
        if not ok:
            warnings.append(f"user {user.pw_name} cannot read {path}")
