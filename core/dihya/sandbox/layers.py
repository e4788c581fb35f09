"""Isolation layers of a sandbox worker: what the parent wraps around it, what it does to itself.

A sandbox-mode plugin runs in its own worker process, started by the backend with
`subprocess.Popen([python, "-I", ...])` (never fork or multiprocessing). Two functions:

* `launch()` (parent, before `Popen`) returns the final argv, a scrubbed environment, extra
  `Popen` keyword arguments, the outer layers in effect and warnings;
* `confine()` (worker, in the child) applies the inner layers in two stages:
  `"before-import"` (before the plugin is imported) and `"after-import"` (once it is).

`probe()` says which layers this machine allows; a layer that `probe()` calls available
and then fails to apply raises `SandboxSetupError` — never a silent downgrade. A layer
that is unavailable is skipped; `launch()` warns about the outer ones, `confine()` leaves
it out of the list of layers it returns (the worker reports that list to the parent).

Outer layers (`launch`)
-----------------------
env
    Nothing of the backend's environment reaches the worker: only PATH=/usr/bin:/bin,
    LANG=LC_ALL=C.UTF-8, HOME and TMPDIR (both the scratch dir). `-I` makes Python ignore
    PYTHON* variables and the user site; byte code goes to `-X pycache_prefix=<scratch>/
    pycache` (added after the interpreter unless the argv already has it).
user
    When the backend runs as root, the worker runs as an unprivileged user: `dihya-sandbox`
    if that user exists, else `nobody` (group: the user's primary group, no supplementary
    groups), via the `user=`/`group=`/`extra_groups=` arguments of `Popen`; the scratch dir
    is chowned to it. Skipped with a warning when that user cannot reach the interpreter
    (e.g. a pyenv Python under /root, mode 0700): the worker then stays root, with every
    capability dropped by bwrap / setpriv. A shared user (`nobody`) is shared with anything
    else running as nobody; create a dedicated `dihya-sandbox` user in production.
bwrap (preferred)
    `bwrap --die-with-parent [--unshare-user] --unshare-net --unshare-ipc --unshare-pid
    --unshare-uts --unshare-cgroup-try --new-session --ro-bind / / --dev /dev --proc /proc
    --tmpfs /tmp [--ro-bind P P for read-only paths under /tmp] --bind S S --chdir S
    --cap-drop ALL -- argv`. As root without the user switch, bwrap (not setuid) needs no
    user namespace and none is created: the worker is uid 0 in the initial user namespace
    with an empty effective/permitted set (the bounding set is not fully cleared as root:
    only the no-new-privs bit and Landlock/seccomp keep it from regaining anything). With
    the user switch bwrap runs unprivileged and `--unshare-user` is passed explicitly (it
    would be implied anyway): new user namespace mapping only the sandbox uid, no
    capabilities. Both combinations were checked on Linux 6.18 as root. Note that
    `--die-with-parent` uses PR_SET_PDEATHSIG, which fires when the *thread* that called
    Popen exits: start workers from a long-lived thread.
unshare (fallback without bwrap)
    `unshare --net --ipc --uts --fork --kill-child` (as root, followed by `setpriv
    --bounding-set=-all --inh-caps=-all` so that the worker execs without capabilities), or
    `unshare --user --net --ipc --uts --fork --kill-child` when the worker is not root.
    No pid/mount namespace: the filesystem view is the host's (Landlock and DAC restrict it).
none
    Neither tool usable: a warning, and the inner layers are all that is left.

Inner layers (`confine`)
------------------------
rlimits ("before-import")
    RLIMIT_AS, CPU (soft; hard = soft + 1 s, then SIGKILL), FSIZE (Python ignores SIGXFSZ,
    so an over-long write raises OSError EFBIG), NOFILE, NPROC and CORE=0, soft = hard so
    the worker cannot raise them. Limits: RLIMIT_AS counts address space, not memory in
    use (every thread stack and malloc arena reserves some); RLIMIT_NPROC counts every
    process and thread of the real uid (all workers running as `nobody` together, charged
    per user namespace since Linux 5.14) and is not enforced for root.
no-new-privs, non-dumpable ("before-import")
    PR_SET_NO_NEW_PRIVS (no setuid/file-capability gain on exec, required by Landlock and
    seccomp) and PR_SET_DUMPABLE 0 (another process of the same uid cannot ptrace it or
    read its /proc/PID/mem; no core dumps).
landlock ("before-import")
    A Landlock ruleset handling every filesystem right the kernel's ABI knows (1..7:
    REFER from 2, TRUNCATE from 3, IOCTL_DEV from 5), TCP bind/connect from ABI 4 and the
    abstract-unix-socket and signal scopes from ABI 6. Allowed: read (files, directory
    listing) beneath `read_only_paths` plus SYSTEM_READ_ONLY_PATHS (shared libraries,
    ld.so.cache, time zones); everything but execute/device/socket creation beneath
    `scratch_dir`; /dev/null read-write; /dev/urandom, /dev/random, /dev/zero read.
    Everything else is denied, root or not: the backend config, its database, /root,
    /etc/shadow, /proc (so no /proc/PID/environ of the backend), executing any file.
    Limits: Landlock does not restrict file descriptors already open (the worker must
    not inherit any it should not use), restricts only the calling thread (so confine
    refuses to run with more than one thread), and has no rule for UDP or for reading
    metadata (stat) of files. Read-only paths that do not exist are skipped.
seccomp ("after-import")
    A libseccomp filter (through ctypes: no Python dependency, libseccomp.so.2 is in every
    Debian/Ubuntu base system) loaded with TSYNC on every thread: default allow, EPERM for
    socket creation and use (socket, socketpair, connect, bind, listen, accept, accept4),
    exec (execve, execveat), new processes (fork, vfork, clone without CLONE_THREAD or with
    a CLONE_NEW* flag; clone3 fails with ENOSYS so that glibc falls back to clone, threads
    keep working), ptrace, process_vm_readv/writev, pidfd_getfd, mounts (old and new
    API), namespaces (unshare, setns), chroot, pivot_root, bpf, io_uring (which could
    otherwise open sockets behind the filter's back), kernel modules and kexec, keyrings,
    perf_event_open, userfaultfd, personality, open_by_handle_at, TIOCSTI/TIOCLINUX, and a
    few admin calls. Other architectures than the native one are killed (x32/i386 entry
    points cannot bypass the filter). Limits: seccomp filters system calls, not intent —
    a plugin can still burn CPU, fill its scratch dir, write to the pipes it was given or
    use any syscall not on the list; the worker talks to the parent over inherited pipes,
    which stay usable.

Not layers: Python audit hooks (`sys.addaudithook`) are bypassable from Python (ctypes,
direct memory writes) and are not used; `-I` is hygiene, not isolation.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import platform
import pwd
import resource
import shutil
import stat
import subprocess
from typing import Any, Final, Literal

import attrs

__all__ = [
    "SYSTEM_READ_ONLY_PATHS",
    "SandboxPolicy",
    "SandboxSetupError",
    "confine",
    "landlock_abi",
    "launch",
    "probe",
]

AVAILABLE: Final = "available"
Stage = Literal["before-import", "after-import"]
Outer = Literal["auto", "bwrap", "unshare", "none"]

# Read-only beneath these (if they exist) in addition to the policy's paths: what the
# interpreter needs to load C extensions (libffi, libssl, libz...) and local time.
SYSTEM_READ_ONLY_PATHS: Final = ("/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib",
                                 "/etc/ld.so.cache", "/etc/localtime", "/usr/share/zoneinfo")
SANDBOX_USERS: Final = ("dihya-sandbox", "nobody")
SAFE_PATH: Final = "/usr/bin:/bin"


class SandboxSetupError(RuntimeError):
    """A layer that probe() reported available could not be applied."""


def _tuple_of_str(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value)


@attrs.frozen
class SandboxPolicy:
    """What one worker may do. JSON round-trips through `attrs.asdict` (lists become tuples)."""

    scratch_dir: str                 # the only writable directory (0700, made by the parent)
    read_only_paths: tuple[str, ...] = attrs.field(converter=_tuple_of_str)
    address_space_bytes: int = 512 * 1024**2
    cpu_seconds: int = 30
    file_size_bytes: int = 16 * 1024**2
    open_files: int = 64
    processes: int = 64              # RLIMIT_NPROC (only meaningful for a non-root user)
    network: bool = False            # always False today
    switch_user: bool = True         # run as an unprivileged user when the backend is root
    outer: Outer = "auto"            # "auto": bwrap, else unshare, else none (with a warning)


# --------------------------------------------------------------------------- probing


def _fail(exc: BaseException) -> str:
    return f"unavailable: {type(exc).__name__}: {exc}"


@functools.cache
def _sandbox_user() -> pwd.struct_passwd | None:
    for name in SANDBOX_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


def _probe_user() -> str:
    if os.geteuid() != 0:
        return "unavailable: the backend is not root; the worker keeps its uid"
    if _sandbox_user() is None:
        return f"unavailable: none of the users {', '.join(SANDBOX_USERS)} exists"
    return AVAILABLE


def _user_kwargs() -> dict[str, Any]:
    user = _sandbox_user()
    if user is None or os.geteuid() != 0:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _try_run(argv: list[str], **kwargs: Any) -> str:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env={"PATH": SAFE_PATH}, cwd="/",
                              timeout=10, check=False, **kwargs)
    except (OSError, subprocess.SubprocessError) as exc:
        return _fail(exc)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        return f"unavailable: {argv[0]} failed: {message[-1] if message else done.returncode}"
    return AVAILABLE


@functools.cache
def _probe_outer(tool: str, as_user: bool) -> str:
    """Runs `true` under the tool, as the sandbox user or as ourselves."""
    path = shutil.which(tool, path=SAFE_PATH)
    if path is None:
        return f"unavailable: {tool} is not installed"
    kwargs = _user_kwargs() if as_user else {}
    true = shutil.which("true", path=SAFE_PATH) or "/bin/true"
    rooted = os.geteuid() == 0 and not kwargs
    if tool == "bwrap":
        argv = [*_bwrap_prefix(path, rooted, "/", ()), true]
    else:
        argv = [*_unshare_prefix(path, rooted), true]
    return _try_run(argv, **kwargs)


def _landlock_abi_or_error() -> int | str:
    if platform.machine() not in _SYSCALLS:
        return f"unavailable: unknown syscall numbers for {platform.machine()}"
    libc = ctypes.CDLL(None, use_errno=True)
    ret = libc.syscall(_SYSCALLS[platform.machine()]["landlock_create_ruleset"], None,
                       ctypes.c_size_t(0), ctypes.c_uint32(_LANDLOCK_CREATE_RULESET_VERSION))
    if ret < 0:
        err = ctypes.get_errno()
        why = {errno.ENOSYS: "the kernel has no Landlock support",
               errno.EOPNOTSUPP: "Landlock is disabled (boot lsm= list)"}
        return f"unavailable: {why.get(err, os.strerror(err))}"
    return int(ret)


@functools.cache
def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 if Landlock is unavailable."""
    abi = _landlock_abi_or_error()
    return abi if isinstance(abi, int) else 0


@functools.cache
def _probe_landlock() -> str:
    abi = _landlock_abi_or_error()
    return AVAILABLE if isinstance(abi, int) else abi


@functools.cache
def _libseccomp() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:  # find_library runs ldconfig: only when the usual soname is missing
        name = ctypes.util.find_library("seccomp")
        if name is None:
            raise
        lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.restype = None
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                           ctypes.c_uint, ctypes.POINTER(_ScmpArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_api_get.restype = ctypes.c_uint
    lib.seccomp_api_get.argtypes = []
    return lib


@functools.cache
def _probe_seccomp() -> str:
    try:
        state = _prctl(_PR_GET_SECCOMP, 0)
    except OSError as exc:
        return f"unavailable: the kernel has no seccomp ({exc})"
    if state not in (0, 2):
        return "unavailable: the process is in seccomp strict mode"
    try:
        with open("/proc/sys/kernel/seccomp/actions_avail") as fh:
            if "errno" not in fh.read().split():
                return "unavailable: the kernel lacks the SECCOMP_RET_ERRNO action"
    except OSError:
        pass  # /proc not mounted: trust prctl
    try:
        lib = _libseccomp()
    except (OSError, AttributeError) as exc:
        return f"unavailable: libseccomp.so.2 cannot be loaded ({exc})"
    if lib.seccomp_api_get() < 2:
        return "unavailable: libseccomp or the kernel lacks thread synchronisation (API < 2)"
    return AVAILABLE


@functools.cache
def probe() -> dict[str, str]:
    """Which layers this machine allows: {"user", "bwrap", "unshare", "rlimits", "landlock",
    "seccomp", "env"} -> "available" or "unavailable: why". Cached per process.

    bwrap and unshare are tried for real (`true` under them, as the sandbox user when the
    user switch is available), so "available" means launch() will use them successfully.
    """
    user = _probe_user()
    as_user = user == AVAILABLE
    return {
        "user": user,
        "bwrap": _probe_outer("bwrap", as_user),
        "unshare": _probe_outer("unshare", as_user),
        "rlimits": AVAILABLE,
        "landlock": _probe_landlock(),
        "seccomp": _probe_seccomp(),
        "env": AVAILABLE,
    }


# --------------------------------------------------------------------------- launch


def _bwrap_prefix(bwrap: str, rooted: bool, scratch: str, under_tmp: tuple[str, ...]
                  ) -> list[str]:
    argv = [bwrap, "--die-with-parent"]
    if not rooted:
        argv.append("--unshare-user")
    argv += ["--unshare-net", "--unshare-ipc", "--unshare-pid", "--unshare-uts",
             "--unshare-cgroup-try", "--new-session", "--ro-bind", "/", "/",
             "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    for path in under_tmp:
        argv += ["--ro-bind-try", path, path]
    if scratch != "/":
        argv += ["--bind", scratch, scratch]
    argv += ["--chdir", scratch, "--cap-drop", "ALL", "--"]
    return argv


def _unshare_prefix(unshare: str, rooted: bool) -> list[str]:
    argv = [unshare]
    if not rooted:
        argv.append("--user")
    argv += ["--net", "--ipc", "--uts", "--fork", "--kill-child", "--"]
    setpriv = shutil.which("setpriv", path=SAFE_PATH)
    if rooted and setpriv is not None:
        argv += [setpriv, "--bounding-set=-all", "--inh-caps=-all", "--"]
    return argv


def _reachable(path: str, uid: int, gid: int, leaf_mode: int) -> bool:
    """Whether uid/gid (no supplementary groups) can traverse to `path` and has `leaf_mode`
    (a combination of R_OK=4, W_OK=2, X_OK=1) on it, by the permission bits."""
    real = os.path.realpath(path)
    parts = real.split("/")
    prefixes = ["/" + "/".join(parts[1:i]) for i in range(1, len(parts))]
    checks = [(p, os.X_OK) for p in prefixes] + [(real, leaf_mode)]
    for candidate, need in checks:
        try:
            st = os.stat(candidate)
        except OSError:
            return False
        if st.st_uid == uid:
            bits = (st.st_mode >> 6) & 7
        elif st.st_gid == gid:
            bits = (st.st_mode >> 3) & 7
        else:
            bits = st.st_mode & 7
        if bits & need != need:
            return False
    return True


def _with_pycache_prefix(argv: list[str], scratch: str) -> list[str]:
    for i, arg in enumerate(argv[1:], start=1):
        if (arg.startswith("pycache_prefix=") and argv[i - 1] == "-X") or \
                arg.startswith("-Xpycache_prefix="):
            return list(argv)
    return [argv[0], "-X", f"pycache_prefix={scratch}/pycache", *argv[1:]]


def launch(argv: list[str], policy: SandboxPolicy
           ) -> tuple[list[str], dict[str, str], dict[str, Any], list[str], list[str]]:
    """Parent side, before Popen: (full argv, scrubbed env, extra Popen kwargs, outer layers
    in effect, warnings).

    The extra kwargs are only `user`, `group`, `extra_groups` and `umask` (never `cwd`,
    `close_fds`, `process_group` or `pass_fds`: those are the caller's). Pass `env=` the
    returned environment and `cwd=policy.scratch_dir`. Raises SandboxSetupError when
    `policy.outer` names a tool that is unavailable, or when the policy asks for network.
    """
    if not argv:
        raise ValueError("argv must start with the Python interpreter")
    if policy.network:
        raise SandboxSetupError("network access for a sandbox worker is not supported")
    scratch = os.path.abspath(policy.scratch_dir)
    if not os.path.isdir(scratch):
        raise SandboxSetupError(f"the scratch dir {scratch} does not exist")
    found = probe()
    warnings: list[str] = []
    layers = ["env"]
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": scratch,
           "TMPDIR": scratch}
    full = _with_pycache_prefix(list(argv), scratch)

    kwargs: dict[str, Any] = {"umask": 0o077}
    user = _sandbox_user()
    switched = False
    if policy.switch_user and found["user"] == AVAILABLE and user is not None:
        interpreter = shutil.which(argv[0]) or argv[0]
        if not _reachable(interpreter, user.pw_uid, user.pw_gid, os.R_OK | os.X_OK):
            warnings.append(f"the worker runs as root (capabilities dropped): user "
                            f"{user.pw_name} cannot reach the interpreter "
                            f"{os.path.realpath(interpreter)}; install Python where it can")
        else:
            switched = True
            os.chown(scratch, user.pw_uid, user.pw_gid)
            os.chmod(scratch, 0o700)
            kwargs.update(_user_kwargs())
            layers.append(f"user:{user.pw_name}")
            for path in policy.read_only_paths:
                if os.path.exists(path) and not _reachable(path, user.pw_uid, user.pw_gid,
                                                           os.R_OK):
                    warnings.append(f"user {user.pw_name} cannot read {path}")
    elif policy.switch_user and os.geteuid() == 0:
        warnings.append(f"the worker runs as root (capabilities dropped): {found['user']}")
    rooted = os.geteuid() == 0 and not switched

    outer = policy.outer
    want_bwrap = outer in ("auto", "bwrap")
    bwrap_ok = _probe_outer("bwrap", switched) == AVAILABLE
    unshare_ok = _probe_outer("unshare", switched) == AVAILABLE
    if outer == "bwrap" and not bwrap_ok:
        raise SandboxSetupError(f"bwrap requested: {_probe_outer('bwrap', switched)}")
    if outer == "unshare" and not unshare_ok:
        raise SandboxSetupError(f"unshare requested: {_probe_outer('unshare', switched)}")
    if want_bwrap and bwrap_ok:
        under_tmp = _hidden_by_tmpfs((*policy.read_only_paths,
                                      os.path.dirname(os.path.abspath(argv[0]))), scratch)
        if switched and user is not None:
            # bwrap, running as the sandbox user, fails on a bind source it cannot reach
            under_tmp = tuple(p for p in under_tmp
                              if _reachable(p, user.pw_uid, user.pw_gid, os.R_OK | os.X_OK))
        bwrap = shutil.which("bwrap", path=SAFE_PATH) or "bwrap"
        full = _bwrap_prefix(bwrap, rooted, scratch, under_tmp) + full
        layers.append("bwrap")
    elif outer in ("auto", "unshare") and unshare_ok:
        if outer == "auto":
            warnings.append(f"bwrap {_probe_outer('bwrap', switched)}; falling back to "
                            "unshare (network, IPC and UTS namespaces only)")
        unshare = shutil.which("unshare", path=SAFE_PATH) or "unshare"
        full = _unshare_prefix(unshare, rooted) + full
        layers.append("unshare")
    elif outer == "auto":
        warnings.append(f"no outer isolation: bwrap {_probe_outer('bwrap', switched)}; "
                        f"unshare {_probe_outer('unshare', switched)}")
    return full, env, kwargs, layers, warnings


def _hidden_by_tmpfs(paths: tuple[str, ...], scratch: str) -> tuple[str, ...]:
    """The paths under /tmp (hidden by bwrap's `--tmpfs /tmp`) to bind again, outermost."""
    found = {os.path.abspath(p) for p in paths}
    found |= {os.path.realpath(p) for p in found}
    found = {p for p in found
             if _inside(p, "/tmp") and p != "/tmp" and os.path.exists(p)
             and not _inside(p, scratch)}
    return tuple(sorted(p for p in found
                        if not any(q != p and _inside(p, q) for q in found)))


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


# --------------------------------------------------------------------------- confine

_PR_GET_SECCOMP: Final = 21
_PR_SET_DUMPABLE: Final = 4
_PR_SET_NO_NEW_PRIVS: Final = 38

# Landlock and the generic syscall table: the same numbers on x86_64 and aarch64.
_SYSCALLS: Final = {
    arch: {"landlock_create_ruleset": 444, "landlock_add_rule": 445,
           "landlock_restrict_self": 446}
    for arch in ("x86_64", "aarch64")
}
_LANDLOCK_CREATE_RULESET_VERSION: Final = 1
_LANDLOCK_RULE_PATH_BENEATH: Final = 1

_FS_EXECUTE: Final = 1 << 0
_FS_WRITE_FILE: Final = 1 << 1
_FS_READ_FILE: Final = 1 << 2
_FS_READ_DIR: Final = 1 << 3
_FS_REMOVE_DIR: Final = 1 << 4
_FS_REMOVE_FILE: Final = 1 << 5
_FS_MAKE_CHAR: Final = 1 << 6
_FS_MAKE_DIR: Final = 1 << 7
_FS_MAKE_REG: Final = 1 << 8
_FS_MAKE_SOCK: Final = 1 << 9
_FS_MAKE_FIFO: Final = 1 << 10
_FS_MAKE_BLOCK: Final = 1 << 11
_FS_MAKE_SYM: Final = 1 << 12
_FS_REFER: Final = 1 << 13       # ABI 2
_FS_TRUNCATE: Final = 1 << 14    # ABI 3
_FS_IOCTL_DEV: Final = 1 << 15   # ABI 5
_FS_ABI1: Final = (1 << 13) - 1
_FILE_RIGHTS: Final = _FS_EXECUTE | _FS_WRITE_FILE | _FS_READ_FILE | _FS_TRUNCATE | _FS_IOCTL_DEV
_NET_BIND_TCP: Final = 1 << 0    # ABI 4
_NET_CONNECT_TCP: Final = 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET: Final = 1 << 0  # ABI 6
_SCOPE_SIGNAL: Final = 1 << 1

_DEVICES: Final = (("/dev/null", _FS_READ_FILE | _FS_WRITE_FILE | _FS_TRUNCATE),
                   ("/dev/zero", _FS_READ_FILE), ("/dev/urandom", _FS_READ_FILE),
                   ("/dev/random", _FS_READ_FILE))


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _handled_fs(abi: int) -> int:
    rights = _FS_ABI1
    if abi >= 2:
        rights |= _FS_REFER
    if abi >= 3:
        rights |= _FS_TRUNCATE
    if abi >= 5:
        rights |= _FS_IOCTL_DEV
    return rights


def _prctl(option: int, arg2: int) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    ret = int(libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(0),
                         ctypes.c_ulong(0), ctypes.c_ulong(0)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")
    return ret


def _thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def _set_rlimits(policy: SandboxPolicy) -> None:
    limits = [
        (resource.RLIMIT_AS, policy.address_space_bytes, policy.address_space_bytes),
        (resource.RLIMIT_CPU, policy.cpu_seconds, policy.cpu_seconds + 1),
        (resource.RLIMIT_FSIZE, policy.file_size_bytes, policy.file_size_bytes),
        (resource.RLIMIT_NOFILE, policy.open_files, policy.open_files),
        (resource.RLIMIT_NPROC, policy.processes, policy.processes),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    for which, soft, hard in limits:
        _, old_hard = resource.getrlimit(which)
        if old_hard != resource.RLIM_INFINITY:
            hard = min(hard, old_hard)
            soft = min(soft, hard)
        try:
            resource.setrlimit(which, (soft, hard))
        except (OSError, ValueError) as exc:
            raise SandboxSetupError(f"setrlimit({which}, {soft}, {hard}) failed: {exc}") from exc


def _landlock(policy: SandboxPolicy) -> None:
    abi = landlock_abi()
    numbers = _SYSCALLS[platform.machine()]
    libc = ctypes.CDLL(None, use_errno=True)
    handled = _handled_fs(abi)
    attr = _RulesetAttr(handled_access_fs=handled, handled_access_net=0, scoped=0)
    size = 8
    if abi >= 4:
        attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP  # no rule: all denied
        size = 16
    if abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
        size = 24
    ruleset = int(libc.syscall(numbers["landlock_create_ruleset"], ctypes.byref(attr),
                               ctypes.c_size_t(size), ctypes.c_uint32(0)))
    if ruleset < 0:
        err = ctypes.get_errno()
        raise SandboxSetupError(f"landlock_create_ruleset: {os.strerror(err)}")
    try:
        read = _FS_READ_FILE | _FS_READ_DIR
        write = handled & ~(_FS_EXECUTE | _FS_MAKE_CHAR | _FS_MAKE_BLOCK | _FS_MAKE_SOCK)
        rules: list[tuple[str, int]] = [(p, read) for p in policy.read_only_paths]
        rules += [(p, read) for p in SYSTEM_READ_ONLY_PATHS]
        rules += list(_DEVICES)
        rules.append((policy.scratch_dir, write))
        for path, rights in rules:
            _add_path_rule(libc, numbers["landlock_add_rule"], ruleset, path, rights & handled,
                           required=path == policy.scratch_dir)
        if libc.syscall(numbers["landlock_restrict_self"], ctypes.c_int(ruleset),
                        ctypes.c_uint32(0)) < 0:
            err = ctypes.get_errno()
            raise SandboxSetupError(f"landlock_restrict_self: {os.strerror(err)}")
    finally:
        os.close(ruleset)


def _add_path_rule(libc: ctypes.CDLL, number: int, ruleset: int, path: str, rights: int,
                   required: bool) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        if required or exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
            raise SandboxSetupError(f"landlock: cannot open {path}: {exc}") from exc
        return  # a read-only path that does not exist or DAC hides: nothing to allow
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= _FILE_RIGHTS
        rule = _PathBeneathAttr(allowed_access=rights, parent_fd=fd)
        if libc.syscall(number, ctypes.c_int(ruleset), ctypes.c_int(_LANDLOCK_RULE_PATH_BENEATH),
                        ctypes.byref(rule), ctypes.c_uint32(0)) < 0:
            err = ctypes.get_errno()
            raise SandboxSetupError(f"landlock_add_rule({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


# libseccomp (see seccomp.h of libseccomp 2.5)
class _ScmpArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


_SCMP_ACT_ALLOW: Final = 0x7FFF0000
_SCMP_FLTATR_CTL_TSYNC: Final = 4
_SCMP_CMP_MASKED_EQ: Final = 7


def _scmp_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


_CLONE_THREAD: Final = 0x00010000
_CLONE_NAMESPACES: Final = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000,
                            0x20000000, 0x40000000)  # NEWNS, NEWCGROUP, UTS, IPC, USER, PID, NET
_TIOCSTI: Final = 0x5412
_TIOCLINUX: Final = 0x541C

DENIED_SYSCALLS: Final = (
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4", "socketcall",
    "execve", "execveat", "fork", "vfork",
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd",
    "mount", "umount2", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick",
    "mount_setattr", "pivot_root", "chroot", "unshare", "setns",
    "bpf", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "keyctl", "add_key", "request_key", "perf_event_open", "userfaultfd", "personality",
    "open_by_handle_at", "name_to_handle_at", "swapon", "swapoff", "reboot", "syslog",
    "acct", "quotactl", "iopl", "ioperm", "uselib", "vhangup",
)


def _seccomp() -> None:
    lib = _libseccomp()
    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        raise SandboxSetupError("seccomp_init failed")
    eperm = _scmp_errno(errno.EPERM)

    def rule(action: int, name: str, *conds: tuple[int, int, int]) -> None:
        number = lib.seccomp_syscall_resolve_name(name.encode())
        if number < 0:
            return  # no such system call on this architecture (e.g. fork on aarch64)
        array = (_ScmpArgCmp * max(1, len(conds)))()
        for i, (arg, mask, value) in enumerate(conds):
            array[i] = _ScmpArgCmp(arg=arg, op=_SCMP_CMP_MASKED_EQ, datum_a=mask, datum_b=value)
        rc = lib.seccomp_rule_add_array(ctx, action, number, len(conds), array)
        if rc < 0:
            raise SandboxSetupError(f"seccomp_rule_add({name}): {os.strerror(-rc)}")

    try:
        rc = lib.seccomp_attr_set(ctx, _SCMP_FLTATR_CTL_TSYNC, 1)
        if rc < 0:
            raise SandboxSetupError(f"seccomp TSYNC: {os.strerror(-rc)}")
        for name in DENIED_SYSCALLS:
            rule(eperm, name)
        rule(eperm, "clone", (0, _CLONE_THREAD, 0))  # a new process, not a thread
        for flag in _CLONE_NAMESPACES:
            rule(eperm, "clone", (0, flag, flag))
        rule(_scmp_errno(errno.ENOSYS), "clone3")    # glibc falls back to clone
        for request in (_TIOCSTI, _TIOCLINUX):
            rule(eperm, "ioctl", (1, 0xFFFFFFFF, request))
        rc = lib.seccomp_load(ctx)
        if rc < 0:
            raise SandboxSetupError(f"seccomp_load: {os.strerror(-rc)}")
    finally:
        lib.seccomp_release(ctx)


def confine(policy: SandboxPolicy, stage: Stage) -> list[str]:
    """Worker side, in the child. Returns the layers applied by this stage.

    "before-import" (single-threaded, before the plugin is imported): rlimits, no-new-privs
    (+ non-dumpable), Landlock. "after-import": seccomp. A layer that probe() says is
    available and fails raises SandboxSetupError; unavailable layers are left out.
    """
    applied: list[str] = []
    if stage == "before-import":
        if _thread_count() != 1:
            raise SandboxSetupError("confine(before-import) needs a single-threaded worker "
                                    "(Landlock restricts only the calling thread)")
        _set_rlimits(policy)
        applied.append("rlimits")
        try:
            _prctl(_PR_SET_NO_NEW_PRIVS, 1)
            _prctl(_PR_SET_DUMPABLE, 0)
        except OSError as exc:
            raise SandboxSetupError(str(exc)) from exc
        applied.append("no-new-privs")
        if _probe_seccomp() == AVAILABLE:
            _libseccomp()  # load it now: Landlock may hide it from the after-import stage
        if _probe_landlock() == AVAILABLE:
            _landlock(policy)
            applied.append(f"landlock:abi{landlock_abi()}")
    elif stage == "after-import":
        if _probe_seccomp() == AVAILABLE:
            _seccomp()
            applied.append("seccomp")
    else:
        raise ValueError(f"unknown stage {stage!r}")
    return applied
