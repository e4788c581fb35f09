"""Build small, real plugin wheels for tests and benchmarks, and install them.

The wheels are ordinary PEP 427 archives (METADATA, WHEEL, entry_points.txt, RECORD) that
pip installs like any other; tests then discover them through real entry points.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from support import pipfork

GROUP = "dihya.generation_plugins"

NOOP_PLUGIN = '''\
"""A synthetic plugin {name}."""
import uuid

from dihya import GenerationPluginBase

INSTANCE = uuid.uuid4().hex  # tells one import (one worker) from another


class Plugin(GenerationPluginBase):
    name = {name!r}
    description = "synthetic plugin"
    version = {version!r}
    author = "tests"
    safe = {safe!r}
    priority = {priority!r}
{body}
'''

PASS_THROUGH_HOOKS = '''
    def before_generation(self, needs):
        return needs

    def after_generation(self, code, needs):
        return code
'''


def plugin_source(name: str, version: str = "1.0.0", safe: bool = True, priority: int = 100,
                  body: str = PASS_THROUGH_HOOKS) -> str:
    return NOOP_PLUGIN.format(name=name, version=version, safe=safe, priority=priority,
                              body=textwrap.indent(textwrap.dedent(body), "    "))


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(outdir: Path, distribution: str, version: str, files: Mapping[str, str | bytes],
                entry_points: Mapping[str, str], requires: Iterable[str] = ("dihya-core",),
                group: str = GROUP) -> Path:
    """Write `<dist>-<version>-py3-none-any.whl` holding `files` and return its path."""
    norm = distribution.replace("-", "_")
    info = f"{norm}-{version}.dist-info"
    metadata = ["Metadata-Version: 2.1", f"Name: {distribution}", f"Version: {version}"]
    metadata += [f"Requires-Dist: {r}" for r in requires]
    eps = f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    content: dict[str, bytes] = {
        path: data.encode() if isinstance(data, str) else data for path, data in files.items()
    }
    content[f"{info}/METADATA"] = ("\n".join(metadata) + "\n\n").encode()
    content[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: dihya-tests\n"
                                b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    content[f"{info}/entry_points.txt"] = eps.encode()
    record = "".join(f"{p},{_record_hash(d)},{len(d)}\n" for p, d in content.items())
    record += f"{info}/RECORD,,\n"
    content[f"{info}/RECORD"] = record.encode()
    outdir.mkdir(parents=True, exist_ok=True)
    wheel = outdir / f"{norm}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in content.items():
            zf.writestr(path, data)
    return wheel


def build_plugin_wheel(outdir: Path, name: str, version: str = "1.0.0", safe: bool = True,
                       priority: int = 100, source: str | None = None,
                       distribution: str | None = None, requires: Iterable[str] = ("dihya-core",),
                       extra_files: Mapping[str, str | bytes] | None = None) -> Path:
    """A wheel of distribution `dihya-plugin-<name>` with entry point `name`."""
    module = "dihya_plugin_" + name.replace("-", "_")
    files: dict[str, str | bytes] = {
        f"{module}/__init__.py": source or plugin_source(name, version, safe, priority),
    }
    files.update(extra_files or {})
    return build_wheel(outdir, distribution or f"dihya-plugin-{name}", version, files,
                       {name: f"{module}:Plugin"}, requires)


def pip_install(python: Path | str, *args: str, target: Path | None = None) -> None:
    """Install with the pip of `python`, offline from local wheels when possible (in a fork
    of a process that imported pip once: `support.pipfork`)."""
    cmd = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--no-warn-script-location"]
    if target is not None:
        cmd += ["--target", str(target), "--no-deps", "--upgrade"]
    pipfork.run([*cmd, *args], check=True)


def venv_pip(venv: Path, *args: str) -> None:
    """`pip install WHEEL` (no dependencies) or `pip uninstall -y DIST` in `venv`."""
    extra = ["--no-deps"] if args[0] == "install" else ["-y"]
    pipfork.run([str(venv / "bin" / "python"), "-m", "pip", *args, *extra, "--quiet",
                 "--disable-pip-version-check"], check=True)


@contextmanager
def tampered(path: Path) -> Iterator[None]:
    """`path` with one more line, for the block; restored after it."""
    original = path.read_bytes()
    path.write_bytes(original + b"\n# one more line\n")
    try:
        yield
    finally:
        path.write_bytes(original)


def site_packages(python: Path | str) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


if __name__ == "__main__":  # pragma: no cover - manual use
    print(build_plugin_wheel(Path(sys.argv[1]), sys.argv[2]))
