"""The layers a sandbox worker applies to itself, all before any plugin code runs.

`confine(policy)` is the first thing a worker does after the interpreter started (with
`-I -S` and an explicit import path: no `.pth` file, no `sitecustomize`): every layer below
is in force before the plugin's module or any of its dependencies is imported, and before
the gate runs again inside the worker. Nothing of the plugin runs in a weaker phase.

rlimits
    RLIMIT_AS, CPU (soft; hard = soft + 1 s, then SIGKILL), FSIZE (Python ignores SIGXFSZ,
    so an over-long write raises OSError EFBIG), NOFILE, NPROC and CORE=0, soft = hard so
    the worker cannot raise them. RLIMIT_AS counts address space, not memory in use;
    RLIMIT_NPROC counts every process and thread of the real uid and is not enforced for
    root.
no-new-privs, non-dumpable
    PR_SET_NO_NEW_PRIVS (no setuid/file-capability gain on exec, required by Landlock and
    seccomp) and PR_SET_DUMPABLE 0 (another process of the same uid cannot ptrace it or
    read its /proc/PID/mem; no core dumps).
landlock
    A ruleset handling every filesystem right the kernel's ABI knows (1..7: REFER from 2,
    TRUNCATE from 3, IOCTL_DEV from 5), TCP bind/connect from ABI 4 and the
    abstract-unix-socket and signal scopes from ABI 6. Allowed: read beneath
    `read_only_paths` and SYSTEM_READ_ONLY_PATHS; everything but execute/device/socket
    creation beneath `scratch_dir`; /dev/null read-write; /dev/urandom, /dev/random,
    /dev/zero read. Everything else is denied, root or not. Landlock does not restrict
    file descriptors already open (the worker inherits only its two pipes), restricts only
    the calling thread (so confine refuses to run with more than one thread), has no rule
    for UDP, for pathname unix sockets or for stat().
seccomp
    A libseccomp filter (through ctypes; libseccomp.so.2 is in every Debian/Ubuntu base
    system) loaded with TSYNC: default allow, EPERM for every socket call of every family
    (socket, socketpair, connect, bind, listen, accept, accept4: no unix socket to a local
    database, no TCP, no netlink), exec (execve, execveat), new processes (fork, vfork,
    clone without CLONE_THREAD or with any CLONE_NEW* flag; clone3 fails with ENOSYS so
    that glibc falls back to clone and threads keep working), ptrace, process_vm_*,
    pidfd_getfd/pidfd_open/pidfd_send_signal, mounts, namespaces (unshare, setns), chroot,
    pivot_root, bpf, io_uring, kernel modules and kexec, keyrings, perf_event_open,
    userfaultfd, personality, open_by_handle_at, TIOCSTI/TIOCLINUX and a few admin calls.
    Other architectures than the native one are killed. seccomp filters system calls, not
    intent: a plugin can still burn CPU, fill its scratch dir or write to its own pipes.

`probe_landlock()` and `probe_seccomp()` say whether this machine allows a layer; a layer
reported available that then fails raises SandboxSetupError, never a silent downgrade.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import platform
import resource
import stat
from typing import Final

from dihya.sandbox.policy import AVAILABLE, SYSTEM_READ_ONLY_PATHS, SandboxPolicy, SandboxSetupError

__all__ = ["DENIED_SYSCALLS", "confine", "landlock_abi", "probe_landlock", "probe_seccomp"]


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
def probe_landlock() -> str:
    abi = _landlock_abi_or_error()
    return AVAILABLE if isinstance(abi, int) else abi


@functools.cache
def _libseccomp() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:  # find_library runs ldconfig: only when the usual soname is missing
        # imports subprocess, shutil, tempfile: not on every start (#16)
        from ctypes.util import find_library

        name = find_library("seccomp")
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
def probe_seccomp() -> str:
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


def seccomp_version() -> str | None:
    """libseccomp's version ("2.5.4") and API level, for `dihya doctor`; None when it
    cannot be loaded."""
    try:
        lib = _libseccomp()
        lib.seccomp_version.restype = ctypes.POINTER(ctypes.c_uint * 3)
        major, minor, micro = lib.seccomp_version().contents
        return f"libseccomp {major}.{minor}.{micro}, API level {lib.seccomp_api_get()}"
    except (OSError, AttributeError, ValueError):
        return None


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
    "pidfd_open", "pidfd_send_signal",
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


def confine(policy: SandboxPolicy) -> list[str]:
    """Worker side, in the child, before any plugin code: apply every inner layer.

    Returns the layers applied. Must run single-threaded (Landlock restricts only the
    calling thread; seccomp is synchronised to every thread anyway). A layer that this
    machine offers and that fails raises SandboxSetupError; unavailable ones are left out.
    """
    if _thread_count() != 1:
        raise SandboxSetupError("confine() needs a single-threaded worker (Landlock "
                                "restricts only the calling thread)")
    applied: list[str] = []
    _set_rlimits(policy)
    applied.append("rlimits")
    try:
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
        _prctl(_PR_SET_DUMPABLE, 0)
    except OSError as exc:
        raise SandboxSetupError(str(exc)) from exc
    applied.append("no-new-privs")
    seccomp = probe_seccomp() == AVAILABLE
    if seccomp:
        _libseccomp()  # load it before Landlock decides what may be read
    if probe_landlock() == AVAILABLE:
        _landlock(policy)
        applied.append(f"landlock:abi{landlock_abi()}")
    if seccomp:
        _seccomp()
        applied.append("seccomp")
    return applied
