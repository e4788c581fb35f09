"""What statuses, reason codes, health checks and isolation warnings mean, in words, and
what an operator can do about each. `tests/web/test_console.py` checks that every status
and reason code of `dihya.gate.STATUSES` has its words here.
"""

from __future__ import annotations

from typing import Final

STATUS_WORDS: Final = {
    "active": "Active: runs in generations",
    "disabled": "Disabled: approved, switched off",
    "refused": "Refused: not allowed to load",
    "failed": "Failed: approved, could not load",
}

# reason code -> (what it means, what to do)
REASONS: Final[dict[str, tuple[str, str]]] = {
    "disabled-by-config": (
        "Switched off in the config file (enabled = false).",
        "Switch it on with `dihya plugins enable NAME` on the server (the config file is "
        "the operator's; the console does not override it)."),
    "disabled-by-env": (
        "Switched off by DIHYA_PLUGINS_DISABLE in the server's environment.",
        "Remove its name from DIHYA_PLUGINS_DISABLE and restart the server."),
    "disabled-by-admin": (
        "Switched off by an admin (console or API); every worker and node sees it.",
        "Enable it here once the problem is solved."),
    "quarantined": (
        "Quarantined: its hooks failed too many times in a row.",
        "Read its audit events and logs, fix or upgrade it, then reset the quarantine here."),
    "not-allowlisted": (
        "Not approved: no allowlist entry names it.",
        "Review its files, then approve it here (or with `dihya plugins approve NAME`), or "
        "uninstall it."),
    "fingerprint-mismatch": (
        "Its files changed since they were approved.",
        "Review what changed and approve again if you trust it; otherwise reinstall the "
        "approved build."),
    "version-mismatch": (
        "The installed version is not the approved one.",
        "Review what changed in the new version and approve it, or reinstall the approved "
        "version."),
    "distribution-mismatch": (
        "The approval names another distribution than the one that installed it.",
        "Find out why another package declares this plugin; uninstall it unless you trust "
        "it."),
    "unlisted-file": (
        "Its package holds code files that its RECORD does not list.",
        "Reinstall the distribution (pip install --force-reinstall) and find who added "
        "the files."),
    "missing-file": (
        "Files listed in its RECORD are missing or unreadable.",
        "Reinstall the distribution."),
    "duplicate-name": (
        "Several installed distributions declare this plugin name.",
        "Uninstall all but one of them."),
    "outside-distribution": (
        "Its code is not a verified file of its distribution (an editable install, or a "
        "module found elsewhere on the path).",
        "Install a built wheel, and remove whatever shadows its module."),
    "shadowed-module": (
        "Another file on the import path would be imported instead of one of its modules.",
        "Remove the shadowing file or package, then reload."),
    "unsafe-in-process": (
        "Approved to run in the backend's process, but its class says it is not safe there.",
        "Approve it again in sandbox mode."),
    "import-error": (
        "Its module raised an error when it was imported.",
        "Read the server's log, fix or upgrade the plugin."),
    "invalid-plugin": (
        "Its class breaks the plugin contract (hooks, metadata, actions).",
        "Fix or upgrade the plugin; the message says what is wrong."),
    "missing-dependency": (
        "A requirement of its distribution is not installed, or in the wrong version.",
        "Install what the message names, then reload."),
    "sandbox-start-failed": (
        "Its sandbox worker could not start.",
        "See the health page: usually a missing isolation tool or user; then reload."),
}

HEALTH_CHECKS: Final[dict[str, tuple[str, str, str]]] = {
    # check -> (what it checks, said when it passes, what to do when it fails)
    "config": ("The config file", "is read and in use.",
               "Run `dihya config check` (or `dihya plugins verify`) on the server and fix "
               "what it names; the last good config keeps serving meanwhile."),
    "registry": ("The plugin registry", "is built.",
                 "Read the server's log for the failure, then reload."),
    "store": ("The state store", "answers.",
              "Check that the database ([store] url) is reachable and not full; sessions, "
              "tokens, switches and the audit log live there."),
    "sandbox": ("Sandbox workers", "start for every approved sandbox-mode plugin.",
                "Install bubblewrap (`apt-get install bubblewrap`), or set [sandbox] "
                "allow_root after reading the operator guide; then reload."),
}

_WARNINGS: Final = (
    # (text in the warning, what to do), first match wins
    ("runs as root", "Install bubblewrap (`apt-get install bubblewrap`, or `make "
     "sandbox-tools`) so that workers run as an unprivileged user, then reload."),
    ("falling back to unshare", "Install bubblewrap so that workers get their own minimal "
     "filesystem view, then reload."),
    ("no outer isolation", "Install bubblewrap (or at least util-linux's unshare) so that "
     "workers get their own namespaces, then reload."),
    ("cannot read", "Make that path readable by the sandbox user, or stop listing it."),
    ("none: runs in the backend process", "Runs unisolated, with the backend's rights: keep "
     "in-process mode for code you wrote or fully trust; approve others in sandbox mode."),
    ("unavailable", "This kernel or its libraries lack the layer; other layers still apply. "
     "A newer kernel (Landlock, seccomp) closes the gap."),
)


def reason_words(reason: str | None) -> str:
    return REASONS[reason][0] if reason in REASONS else (reason or "")


def reason_advice(reason: str | None) -> str:
    return REASONS[reason][1] if reason in REASONS else ""


def warning_advice(text: str) -> str:
    """What to do about an isolation warning or layer."""
    for needle, advice in _WARNINGS:
        if needle in text:
            return advice
    return "See the operator guide, section Sandbox mode."
