"""`dihya plugins new`: write a complete plugin project, ready to test, lint and build.

The project is rendered from Jinja2 templates shipped with the core
(`dihya/templates/plugin/`): the hook stubs and the module docstring come from `HOOK_SPECS`,
the `dihya-core` requirement and the tox envs from `SUPPORTED_CORE_RANGE`, so a new plugin
always matches the hook API of the core that wrote it. License texts are shipped too
(`dihya/templates/licenses/<SPDX id>.txt`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import textwrap
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
from packaging.specifiers import SpecifierSet

from dihya import __version__
from dihya.plugin import DEFAULT_GROUP, HOOK_API_VERSION, HOOK_SPECS, SUPPORTED_CORE_RANGE, HookSpec
from dihya.reasons import FixedReasonError

if TYPE_CHECKING:
    from jinja2 import Environment

#: Entry-point names the scaffold accepts: lower-case words joined by single dashes.
NAME_PATTERN: Final = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
MAX_NAME: Final = 30
#: SPDX ids `--license` accepts; the first is the default.
LICENSES: Final = ("AGPL-3.0-or-later", "MIT", "Apache-2.0")
DEFAULT_LICENSE: Final = LICENSES[0]
#: Template -> path in the project ({package} is replaced by the import package).
FILES: Final = {
    "pyproject.toml.j2": "pyproject.toml",
    "tox.ini.j2": "tox.ini",
    "README.md.j2": "README.md",
    "CHANGELOG.md.j2": "CHANGELOG.md",
    "gitignore.j2": ".gitignore",
    "package_init.py.j2": "src/{package}/__init__.py",
    "plugin.py.j2": "src/{package}/plugin.py",
    "test_plugin.py.j2": "tests/test_plugin.py",
}
_PY_TYPES: Final = {"dict": "dict[str, Any]", "dict[str, str]": "dict[str, str]",
                    "None": "None"}
#: Each hook stub's arguments and body: it changes nothing, except `after_generation`, which
#: adds one file so that a first generation shows the plugin at work. The arguments are a
#: subset of the hook's (hooks are called by keyword; the docstring lists them all).
_BODIES: Final = {
    "before_generation": (("needs",), "return needs"),
    "after_generation": (("code", "needs"), "code[NOTE_PATH] = note(needs)\nreturn code"),
    "on_generation_error": (("error",), "return None"),
}


class ScaffoldError(FixedReasonError):
    """The arguments cannot make a project (bad name, license, author or target)."""

    REASON = "scaffold-refused"


@attrs.frozen
class PluginProject:
    """Everything the templates need to know about the new plugin."""

    name: str
    author: str
    license: str
    year: int

    @property
    def distribution(self) -> str:
        return f"dihya-plugin-{self.name}"

    @property
    def package(self) -> str:
        return self.distribution.replace("-", "_")

    @property
    def class_name(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("-")) + "Plugin"

    @property
    def title(self) -> str:
        return " ".join(part.capitalize() for part in self.name.split("-"))


def check_name(name: str) -> str:
    """`name` if it is a valid entry-point name for a new plugin; else `ScaffoldError`."""
    if name.startswith("dihya-plugin-"):
        raise ScaffoldError(f"give the plugin's name without the prefix: "
                            f"`dihya plugins new {name.removeprefix('dihya-plugin-')}` makes "
                            f"the distribution {name}")
    if not NAME_PATTERN.match(name) or len(name) > MAX_NAME:
        raise ScaffoldError(
            f"invalid plugin name {name!r}: use lower-case letters, digits and single dashes, "
            f"starting with a letter, at most {MAX_NAME} characters (e.g. `editorconfig`, "
            "`api-docs`); it becomes the entry-point name the operator approves")
    return name


def check_author(author: str) -> str:
    if not author.strip() or len(author) > 200 or any(ord(c) < 32 for c in author):
        raise ScaffoldError(f"invalid --author {author!r}: one line of at most 200 characters")
    return author.strip()


def core_requirement() -> str:
    """`dihya-core` with the range of the hook API this core implements."""
    return f"dihya-core{SUPPORTED_CORE_RANGE}"


def oldest_core() -> str:
    """The oldest dihya-core release of `SUPPORTED_CORE_RANGE` (its `>=` lower bound)."""
    lows = [s.version for s in SpecifierSet(SUPPORTED_CORE_RANGE) if s.operator == ">="]
    if len(lows) != 1:  # pragma: no cover - guards a future edit of the constant
        raise ValueError(f"SUPPORTED_CORE_RANGE {SUPPORTED_CORE_RANGE!r} needs one >= bound")
    parts = lows[0].split(".")
    return ".".join(parts + ["0"] * (3 - len(parts)))


def license_text(spdx: str, project: PluginProject) -> str:
    if spdx not in LICENSES:
        raise ScaffoldError(f"unknown --license {spdx!r}; choose one of {', '.join(LICENSES)}")
    text = (resources.files("dihya") / "templates" / "licenses" / f"{spdx}.txt").read_text(
        "utf-8")
    return text.replace("<year> <copyright holders>", f"{project.year} {project.author}")


def _wrap(text: str, indent: int, width: int = 92, hanging: int = 0) -> str:
    return textwrap.fill(" ".join(text.split()), width=width, initial_indent=" " * indent,
                         subsequent_indent=" " * (indent + hanging), break_on_hyphens=False)


def _hook(spec: HookSpec) -> dict[str, Any]:
    takes, text = _BODIES.get(spec.name, (spec.arg_names, "raise NotImplementedError"))
    params = ", ".join(["self", *(f"{a.name}: {_PY_TYPES[a.type]}" for a in spec.args
                                  if a.name in takes)])
    doc = [_wrap(spec.summary, 8), "",
           _wrap("Takes any of these arguments, by name (add those you need):", 8), ""]
    for arg in spec.args:
        since = f" (since hook API {arg.since})" if arg.since != "1.0" else ""
        doc.append(_wrap(f"`{arg.name}`{since}: {arg.doc}", 8))
    doc += [_wrap(f"Returns: {spec.returns_doc}", 8), "", " " * 8 + "The core checks:"]
    doc += [_wrap(f"- {rule}", 8, hanging=2) for rule in spec.validated]
    body = textwrap.indent(text, " " * 8)
    return {"name": spec.name, "signature": spec.signature, "since": spec.since,
            "def": f"def {spec.name}({params}) -> {_PY_TYPES[spec.returns]}:",
            "doc": "\n".join(line.rstrip() for line in doc).strip(), "body": body,
            "summary": _wrap(spec.summary, 4)}


def _environment() -> Environment:
    from jinja2 import Environment, PackageLoader, StrictUndefined  # only `plugins new`

    env = Environment(loader=PackageLoader("dihya", "templates/plugin"), autoescape=False,
                      keep_trailing_newline=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["str"] = lambda value: json.dumps(str(value), ensure_ascii=False)
    return env


def render(project: PluginProject, core: Path | None = None) -> dict[str, str]:
    """The project's files: relative path -> text. `core`: the wheel of the core its
    tox.ini tests against (default: the index's release)."""
    context = {
        "core_source": str(core) if core is not None else core_requirement(),
        "p": project, "group": DEFAULT_GROUP, "core_requirement": core_requirement(),
        "core_range": SUPPORTED_CORE_RANGE, "oldest_core": oldest_core(),
        "hook_api": HOOK_API_VERSION, "core_version": __version__,
        "hooks": [_hook(spec) for spec in HOOK_SPECS],
        "date": dt.date.today().isoformat(),
    }
    env = _environment()
    files = {path.format(package=project.package): env.get_template(name).render(context)
             for name, path in FILES.items()}
    files[f"src/{project.package}/py.typed"] = ""
    files["LICENSE"] = license_text(project.license, project)
    return dict(sorted(files.items()))


def check_project(name: str, target: Path, *, author: str | None = None,
                  license: str = DEFAULT_LICENSE) -> PluginProject:
    """The project `new_project` would write; `ScaffoldError` for an invalid name, author
    or license, or a target that is not a missing or empty directory."""
    name = check_name(name)
    project = PluginProject(name, check_author(author or f"The dihya-plugin-{name} authors"),
                            license, dt.date.today().year)
    if license not in LICENSES:
        raise ScaffoldError(f"unknown --license {license!r}; choose one of "
                            f"{', '.join(LICENSES)}")
    if target.exists() and not target.is_dir():
        raise ScaffoldError(f"{target} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()):
        raise ScaffoldError(f"{target} is not empty: choose a new directory with --dir, or "
                            "empty this one")
    return project


def new_project(name: str, target: Path, *, author: str | None = None,
                license: str = DEFAULT_LICENSE, core: Path | None = None) -> list[Path]:
    """Write the project of plugin `name` into `target` (missing or empty); return the files.
    `core`: a wheel of dihya-core its tox.ini tests against (see `dihya.authoring.corewheel`).

    Raises `ScaffoldError` for an invalid name, author or license, or a non-empty target;
    nothing is written then.
    """
    project = check_project(name, target, author=author, license=license)
    files = render(project, core)
    written = []
    for rel, text in files.items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
