"""The project's import structure, read from the sources (nothing is imported, nothing heavy loads).

Layers inside ``core`` (a module may import its own layer and the layers listed for it):

    base        core, core.options, core.errors         standard library only
    format      core.format.*                           base
    compare     core.compare.*                          base, format
    models      core.models.*                           base
    codec       core.codec.*                            base, format, compare, models
    enhance     core.enhance.*                          base, format, compare, codec, models
    usecases    core.usecases                           base, format, compare, codec, models, enhance
    scale       core.scale.*                            the layers above, usecases included
    evaluation  core.evaluation.*                       every layer above except cli
    cli         core.cli (+ core.cli_args, its          base, format, compare, codec, enhance,
                arguments; core.tile_codec, its name    usecases, scale (core.evaluate also
                for python -m), core.qgis_worker,       evaluation, the others
                core.evaluate                           core.evaluation.tile_metrics only);
                                                        a CLI never imports another CLI (its own
                                                        modules are part of it)

Nothing in ``core`` imports ``training`` or ``coderic_qgis``; the plugin (QGIS's Python,
no torch) imports only the standard library, QGIS and itself (it reaches ``core/options.py``
through ``coderic_qgis._contract``, which loads the file by path). No import cycle anywhere
in ``core``, ``training`` and ``coderic_qgis`` (imports inside functions count too), every
project import names a module that exists, and no module of ``core`` is over 500 lines.

Each rule is checked per module, so a failure names the module, the line and the rule.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "training", "coderic_qgis")
MAX_LINES = 500

BASE = {"core", "core.options", "core.errors"}
CLIS = {"core.cli", "core.cli_args", "core.tile_codec", "core.qgis_worker", "core.evaluate"}
CLI_PARTS = {"core.cli": {"core.cli_args"}, "core.tile_codec": {"core.cli"}}  # a front end's own modules
LAYER_PACKAGES = ("format", "compare", "models", "codec", "enhance", "usecases", "scale", "evaluation")
MAY_IMPORT = {
    "base": set(),
    "format": {"base"},
    "compare": {"base", "format"},
    "models": {"base"},
    "codec": {"base", "format", "compare", "models"},
    "enhance": {"base", "format", "compare", "codec", "models"},
    "usecases": {"base", "format", "compare", "codec", "models", "enhance"},
    "scale": {"base", "format", "compare", "codec", "models", "enhance", "usecases"},  # batch runs the use cases
    "evaluation": {"base", "format", "compare", "codec", "models", "enhance", "usecases", "scale"},
    "cli": {"base", "format", "compare", "codec", "enhance", "usecases", "scale"},
}
EVALUATION_FRONT_END = "core.evaluate"  # the only module of core that may import core.evaluation at large
# ... and the one evaluation module the codec's front ends may import: the per-tile quality
# map's optional perceptual metric (it imports torch and the metric weights only when it runs).
QUALITY_MAP_METRICS = "core.evaluation.tile_metrics"
PLUGIN_MAY_IMPORT = {"qgis"}  # besides the standard library and coderic_qgis itself


# ---------------------------------------------------------------- reading the sources

@dataclass(frozen=True)
class Import:
    line: int
    text: str  # the statement as written, for messages
    target: str | None  # the project module it loads; None: not a project module, or missing
    missing: str | None = None  # the project module it names that does not exist
    external: str | None = None  # top-level name of a non-project import
    why: str = ""  # why ``missing`` is missing, when not simply absent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _source_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" not in path.parts:
                files[_module_name(path)] = path
    return files


FILES = _source_files()
MODULES = set(FILES)
# Folders without __init__.py are namespace packages: importable, but they hold no names.
NAMESPACES = {".".join(m.split(".")[:i]) for m in MODULES for i in range(1, m.count(".") + 1)} - MODULES


def _is_package(module: str) -> bool:
    return FILES[module].name == "__init__.py" if module in FILES else module in NAMESPACES


def _is_project(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _statement(node: ast.AST) -> str:
    text = ast.unparse(node)
    return text if len(text) <= 90 else text[:87] + "..."


def _resolve_from(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module if _is_package(module) else module.rpartition(".")[0]
    parts = package.split(".")
    if node.level > 1:
        parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def _top_level_names(module: str) -> set[str]:
    names = set()
    for node in ast.parse(FILES[module].read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


_DEFINES: dict[str, set[str]] = {}


def _defined_in(name: str) -> list[str]:
    """The project modules that define ``name`` at top level (for "moved to" hints)."""
    if not _DEFINES:
        _DEFINES.update({m: _top_level_names(m) for m in sorted(MODULES)})
    return [m for m, names in _DEFINES.items() if name in names]


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of imports under ``if TYPE_CHECKING:`` (never run, so no dependency)."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def imports_of(module: str) -> list[Import]:
    """Every import of a module, at module level or inside functions, resolved to modules."""
    tree = ast.parse(FILES[module].read_text(encoding="utf-8"), filename=str(FILES[module]))
    skip = _type_checking_only(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append(_absolute(alias.name, node))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(module, node)
            if not _is_project(base):
                found.append(Import(node.lineno, _statement(node), None, external=base.split(".")[0]))
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in MODULES or sub in NAMESPACES:
                    found.append(Import(node.lineno, _statement(node), sub))
                elif base in MODULES:  # a name defined in that module (or package __init__)
                    found.append(Import(node.lineno, _statement(node), base))
                elif base in NAMESPACES:
                    found.append(Import(node.lineno, _statement(node), None, missing=sub,
                                        why=f"{base} has no __init__.py, so {alias.name} is neither a module "
                                            f"nor a name there"))
                else:
                    home = _defined_in(alias.name)
                    why = f"there is no module {base}; {alias.name} is in {' and '.join(home)}" if home else ""
                    found.append(Import(node.lineno, _statement(node), None, missing=base, why=why))
    return sorted(set(found), key=lambda i: (i.line, i.target or "", i.missing or ""))


def _absolute(name: str, node: ast.Import) -> Import:
    if not _is_project(name):
        return Import(node.lineno, _statement(node), None, external=name.split(".")[0])
    if name in MODULES or name in NAMESPACES:
        return Import(node.lineno, _statement(node), name)
    return Import(node.lineno, _statement(node), None, missing=name)


IMPORTS = {m: imports_of(m) for m in sorted(MODULES)}


def _where(module: str, imp: Import) -> str:
    path = FILES[module].relative_to(ROOT) if module in FILES else module
    return f"{path}:{imp.line} `{imp.text}`"


# ---------------------------------------------------------------- layers of core

def layer_of(module: str) -> str | None:
    if module in BASE:
        return "base"
    if module in CLIS:
        return "cli"
    parts = module.split(".")
    if parts[0] == "core" and len(parts) > 1 and parts[1] in LAYER_PACKAGES:
        return parts[1]
    return None


CORE = sorted(m for m in MODULES if m.split(".")[0] == "core")


def _stdlib(name: str) -> bool:
    return name in sys.stdlib_module_names or name == "__future__"


def layer_problems(module: str, imports: list[Import]) -> list[str]:
    """The layering rules broken by ``module``'s imports, one sentence each."""
    layer = layer_of(module)
    if layer is None:
        return [f"{module} is in no layer of core: move it into one of core.{{{', '.join(LAYER_PACKAGES)}}} "
                f"or make it one of the front ends {sorted(CLIS)}"]
    allowed = MAY_IMPORT[layer] | ({layer} if layer != "cli" else set())
    problems = []
    for imp in imports:
        if imp.external is not None:
            if layer == "base" and not _stdlib(imp.external):
                problems.append(f"{_where(module, imp)}: {module} is stdlib-only (the QGIS plugin loads it "
                                f"without torch), but imports {imp.external}")
            continue
        if imp.target is None:
            continue  # a missing module: test_project_imports_resolve reports it
        top = imp.target.split(".")[0]
        if top != "core":
            problems.append(f"{_where(module, imp)}: core never imports {top}")
            continue
        target_layer = layer_of(imp.target)
        if imp.target == module or target_layer is None or imp.target in CLI_PARTS.get(module, ()):
            continue  # the target's own test says it is in no layer
        if target_layer == "evaluation" and layer != "evaluation":
            if module != EVALUATION_FRONT_END and not (layer == "cli" and imp.target == QUALITY_MAP_METRICS):
                problems.append(f"{_where(module, imp)}: only {EVALUATION_FRONT_END} imports core.evaluation "
                                f"(the other front ends: {QUALITY_MAP_METRICS} only)")
            continue
        if target_layer not in allowed:
            why = ("a front end does not import another front end" if layer == target_layer == "cli" else
                   f"{layer} imports only {', '.join(sorted(allowed)) or 'the standard library'}")
            problems.append(f"{_where(module, imp)}: {module} ({layer}) imports {imp.target} ({target_layer}); {why}")
    return problems


@pytest.mark.parametrize("module", CORE)
def test_core_layers(module):
    problems = layer_problems(module, IMPORTS[module])
    assert not problems, f"{len(problems)} layering violation(s) in {module}:\n  " + "\n  ".join(problems)


PLUGIN = sorted(m for m in MODULES if m.split(".")[0] == "coderic_qgis")


@pytest.mark.parametrize("module", PLUGIN)
def test_plugin_imports_only_qgis_and_stdlib(module):
    """QGIS's Python has no torch, rasterio or numpy to spare: the plugin stays light."""
    problems = []
    for imp in IMPORTS[module]:
        if imp.external is not None and not (_stdlib(imp.external) or imp.external in PLUGIN_MAY_IMPORT):
            problems.append(f"{_where(module, imp)}: the plugin imports {imp.external}")
        elif imp.target is not None and not imp.target.startswith("coderic_qgis"):
            problems.append(f"{_where(module, imp)}: the plugin imports {imp.target}; it reaches "
                            "core/options.py and core/errors.py through coderic_qgis._contract")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- every import exists

def _suggest(missing: str) -> str:
    last = missing.rsplit(".", 1)[-1]
    near = sorted(m for m in MODULES if m.rsplit(".", 1)[-1] == last)
    return f" (moved to {' or '.join(near)}?)" if near else ""


@pytest.mark.parametrize("module", sorted(MODULES))
def test_project_imports_resolve(module):
    missing = [f"{_where(module, imp)}: {imp.why or 'there is no module ' + imp.missing + _suggest(imp.missing)}"
               for imp in IMPORTS[module] if imp.missing]
    assert not missing, f"{len(missing)} import(s) of missing modules in {module}:\n  " + "\n  ".join(missing)


# ---------------------------------------------------------------- no cycles

def import_cycles() -> list[list[str]]:
    """Strongly connected groups of modules (Tarjan), each a cycle or several entangled ones."""
    graph = {m: sorted({i.target for i in IMPORTS[m] if i.target in MODULES and i.target != m}) for m in MODULES}
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(groups)


def test_no_import_cycles():
    lines = []
    for group in import_cycles():
        members = set(group)
        lines.append("cycle: " + " <-> ".join(group))
        for m in group:
            for imp in IMPORTS[m]:
                if imp.target in members and imp.target != m:
                    lines.append(f"    {_where(m, imp)} -> {imp.target}")
    assert not lines, "import cycles (imports inside functions included):\n" + "\n".join(lines)


# ---------------------------------------------------------------- short modules

@pytest.mark.parametrize("module", CORE)
def test_core_modules_are_short(module):
    n = len(FILES[module].read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, (f"{FILES[module].relative_to(ROOT)} has {n} lines (at most {MAX_LINES}): "
                            "split it along the concepts it holds")


@pytest.mark.parametrize("module", CORE)
def test_core_modules_say_what_they_hold(module):
    """A docstring whose first line alone says what the module holds."""
    doc = ast.get_docstring(ast.parse(FILES[module].read_text(encoding="utf-8")))
    assert doc, f"{FILES[module].relative_to(ROOT)} has no docstring"
    summary = doc.split("\n\n")[0]
    assert "\n" not in summary and len(summary) <= 120, (
        f"{FILES[module].relative_to(ROOT)}: the docstring's first paragraph is not one line: {summary[:80]!r}...")


def test_the_checker_sees_the_project():
    """Guard against a silently empty check (a moved folder, a wrong ROOT)."""
    assert {"core.options", "core.errors", "core.qgis_worker", "coderic_qgis.plugin"} <= MODULES
    assert layer_of("core.options") == "base" and layer_of("core.codec.compress") == "codec"
    assert any(i.target == "core.errors" for i in IMPORTS["core.options"])


def test_the_layer_rules_catch_violations():
    """The rules on made-up imports (the real tree may be clean)."""
    def imp(target=None, external=None):
        return Import(1, f"import {target or external}", target, external=external)

    assert layer_problems("core.format.tiling", [imp("core.options"), imp(external="numpy")]) == []
    assert "format imports only base" in layer_problems("core.format.tiling", [imp("core.codec.jobs")])[0]
    assert "stdlib-only" in layer_problems("core.options", [imp(external="numpy")])[0]
    assert "core never imports training" in layer_problems("core.codec.jobs", [imp("training.qat")])[0]
    assert "only core.evaluate imports" in layer_problems("core.cli", [imp("core.evaluation.codec_adapters")])[0]
    assert layer_problems("core.evaluate", [imp("core.evaluation.runner")]) == []
    assert layer_problems("core.qgis_worker", [imp("core.evaluation.tile_metrics")]) == []
    assert "only core.evaluate imports" in layer_problems("core.codec.tile_map",
                                                          [imp("core.evaluation.tile_metrics")])[0]
    assert "another front end" in layer_problems("core.qgis_worker", [imp("core.cli")])[0]
    assert "another front end" in layer_problems("core.qgis_worker", [imp("core.cli_args")])[0]
    assert layer_problems("core.cli", [imp("core.cli_args"), imp("core.usecases")]) == []
    assert layer_problems("core.tile_codec", [imp("core.cli")]) == []
    assert "format imports only base" in layer_problems("core.format.tiling", [imp("core.compare.psnr")])[0]
    assert "usecases imports only" in layer_problems("core.usecases", [imp("core.scale.batch")])[0]
    assert "models imports only base" in layer_problems("core.models.elic", [imp("core.format.tiling")])[0]
    assert "in no layer" in layer_problems("core.helpers", [])[0]


def test_the_contract_imports_nothing_heavy():
    """What the AST says, confirmed at run time (as the QGIS tests do for the plugin)."""
    import subprocess

    code = ("import sys; import core.options, core.errors, coderic_qgis.jobs\n"
            "print(sorted(m for m in ('torch', 'numpy', 'rasterio', 'compressai', 'qgis') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
