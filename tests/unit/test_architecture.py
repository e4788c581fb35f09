"""The layout holds the rule `docs/architecture.md` states: a package imports only packages
on its own layer or below, and the page lists exactly the packages and modules of the tree.
The layers are read from the page's table, so the page and the test cannot disagree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "core" / "dihya"
DOC = ROOT / "docs" / "architecture.md"
ROW = re.compile(r"^\| (\d+) [a-z]+ \| `(dihya\.[a-z_]+)` \| (.*) \|$")


def layers() -> dict[str, tuple[int, str]]:
    """unit (a top-level package or module of dihya) -> (layer, its description)."""
    found = {}
    for line in DOC.read_text().splitlines():
        match = ROW.match(line)
        if match:
            found[match.group(2)] = (int(match.group(1)), match.group(3))
    assert found, "no layer table in docs/architecture.md"
    return found


def module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str, units: dict[str, tuple[int, str]]) -> str | None:
    return next((u for u in units if module == u or module.startswith(u + ".")), None)


def imports(path: Path) -> set[str]:
    """Every dihya module `path` imports, at module level or inside a function (a lazy
    import is a dependency too), TYPE_CHECKING imports included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "dihya" or node.module.startswith("dihya."):
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("dihya."))
    return found


def test_every_package_and_module_of_the_tree_is_on_the_page_and_back() -> None:
    units = layers()
    tree = {f"dihya.{p.stem}" for p in CORE.glob("*.py") if p.stem != "__init__"}
    tree |= {f"dihya.{p.name}" for p in CORE.iterdir()
             if p.is_dir() and (p / "__init__.py").exists()}
    assert tree == set(units), (f"on disk, not on the page: {sorted(tree - set(units))}; "
                                f"on the page, not on disk: {sorted(set(units) - tree)}")
    for package in (p for p in CORE.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        if package.name in ("web", "testing", "cli"):  # faces: their own pages say more
            continue
        for module in package.glob("*.py"):
            # the lower packages' modules are named in their row, one by one
            if module.stem != "__init__":
                assert f"`{module.stem}`" in units[f"dihya.{package.name}"][1], \
                    f"dihya.{package.name}.{module.stem} is not named in its row"


def test_no_package_imports_one_above_it() -> None:
    units = layers()
    upward = []
    for path in CORE.rglob("*.py"):
        source = module_name(path)
        here = unit_of(source, units)
        if here is None:
            continue  # the package root: its re-exports are checked below
        for target in imports(path):
            there = unit_of(target, units)
            if there is not None and units[there][0] > units[here][0]:
                upward.append(f"{source} imports {target} (layer {units[there][0]} above "
                              f"{units[here][0]})")
    assert not upward, "\n".join(sorted(set(upward)))


def test_no_cycle_between_packages() -> None:
    units = layers()
    graph: dict[str, set[str]] = {u: set() for u in units}
    for path in CORE.rglob("*.py"):
        here = unit_of(module_name(path), units)
        if here is None:
            continue
        graph[here] |= {t for t in (unit_of(m, units) for m in imports(path))
                        if t is not None and t != here}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        assert node not in visiting, " -> ".join([*visiting[visiting.index(node):], node])
        if node in done:
            return
        visiting.append(node)
        for nxt in graph[node]:
            visit(nxt)
        visiting.pop()
        done.add(node)

    for node in graph:
        visit(node)


def test_the_public_api_comes_from_the_two_lowest_layers() -> None:
    units = layers()
    for target in imports(CORE / "__init__.py"):
        there = unit_of(target, units)
        assert there is None or units[there][0] <= 1, target
