"""The QGIS plugin keeps core.options' contract, checked without QGIS.

The plugin's job parameters (``coderic_qgis.jobs``) are imported (they need no QGIS); the
dialogs and Processing algorithms (which do) are read as source: no default or limit may
be written there as a number or repeated as a string. tests/qgis/test_contract.py checks
the same on the live widgets and algorithms inside QGIS. The built zip carries core's
contract files and works without the project on the path.
"""

from __future__ import annotations

import ast
import dataclasses
import subprocess
import sys
import zipfile

import pytest

from core import options
from testdata import ROOT

from coderic_qgis import _contract, build, jobs

# The plugin loads core/options.py under its own name (coderic_qgis._contract.options), so
# its classes are not core.options' in this process: values are compared, and what is
# handed to the plugin is made with its own module.
plugin_options = _contract.options


def _values(value):
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value

PLUGIN = ROOT / "coderic_qgis"
PLUGIN_MODULES = sorted(p for p in PLUGIN.glob("*.py") if p.name != "build.py")
CONTRACT_CLASSES = (options.CompressParams, options.DecompressParams, options.EnhanceParams)
CONTRACT_FIELDS = {f.name for cls in CONTRACT_CLASSES for f in dataclasses.fields(cls)}


def test_the_plugin_reads_cores_own_contract_file():
    assert _contract.options.__file__ == options.__file__
    assert _contract.options.DEFAULT_TILE == options.DEFAULT_TILE
    assert tuple(_contract.FILES) == build.CONTRACT_FILES


def test_plugin_params_have_cores_defaults():
    for plugin_cls, core_cls in ((jobs.CompressParams, options.CompressParams),
                                 (jobs.DecompressParams, options.DecompressParams)):
        assert issubclass(plugin_cls, _contract.options.__dict__[core_cls.__name__])
        plugin, core = plugin_cls(), core_cls()
        for f in dataclasses.fields(core_cls):
            assert _values(getattr(plugin, f.name)) == _values(getattr(core, f.name)), f"{plugin_cls.__name__}.{f.name}"
    assert jobs.CompressParams().enhance == options.DecompressParams().enhance
    assert _values(jobs.CompressParams().enhancement) == _values(options.EnhanceParams())


def test_enhance_choices_are_cores():
    assert set(jobs.ENHANCE_VALUES) == set(options.ENHANCE_CHOICES) and len(jobs.ENHANCE_VALUES) == len(
        options.ENHANCE_CHOICES)
    assert jobs.ENHANCE_VALUES[jobs.DEFAULT_ENHANCE_INDEX] == options.DecompressParams().enhance
    assert jobs.PROCESSING_ENHANCE in options.ENHANCE_CHOICES  # a deliberate choice among core's
    assert set(jobs.ENHANCE_JOB_FIELDS) <= {f.name for f in dataclasses.fields(options.EnhanceParams)}


def test_jobs_carry_every_contract_field_by_name(tmp_path):
    p = jobs.CompressParams(input="a.tif", output="a.crsic", bands=[3, 2, 1], quality=1.5, tile=512,
                            decoded_output="a.decoded.tif", enhance=True,
                            enhancement=jobs.enhancement(True, 0.25))
    job = p.to_job(threads=2)
    for f in dataclasses.fields(options.CompressParams):
        assert job[f.name] == getattr(p, f.name), f.name
    assert (job["action"], job["decode_to"], job["threads"]) == ("compress", "a.decoded.tif", 2)
    assert (job["enhance"], job["fidelity"]) == (True, 0.25)
    assert "decode_to" not in dataclasses.replace(p, decode=False).to_job()

    class Rect:  # what the job needs of a QgsRectangle
        def xMinimum(self): return 1.0  # noqa: E704,N802
        def yMinimum(self): return 2.0  # noqa: E704,N802
        def xMaximum(self): return 3.0  # noqa: E704,N802
        def yMaximum(self): return 4.0  # noqa: E704,N802

    d = jobs.DecompressParams(container="a.crsic", output="b.tif", model="m.safetensors", enhance=False,
                              enhancement=jobs.enhancement(False, 0.5), extent_only=True, extent=Rect(),
                              extent_crs="EPSG:4326")
    job = d.to_job()
    for f in dataclasses.fields(options.DecompressParams):
        if f.name not in ("enhancement", "bbox"):
            assert job[f.name] == getattr(d, f.name), f.name
    assert job["fidelity"] is None  # off: the disabled slider's value is not sent
    assert job["bbox"] == [1.0, 2.0, 3.0, 4.0] and job["bbox_crs"] == "EPSG:4326"
    job = jobs.add_extras(jobs.enhance_job("a.tif", "b.tif", plugin_options.EnhanceParams(fidelity=0.5)),
                          {"threads": 1, "enhancer": "e.safetensors"})
    assert (job["fidelity"], job["enhancer"], job["threads"], job["device"]) == (0.5, "e.safetensors", 1,
                                                                                 options.DEFAULT_DEVICE)


def test_plugin_checks_are_cores():
    half = options.DEFAULT_TILE // 2
    problems = jobs.compress_problems(jobs.CompressParams(overlap=half + 1))
    assert problems == [jobs.sentence(options.tiling_problem(options.DEFAULT_TILE, half + 1))]
    too_high = options.DEFAULT_MODEL_LEVELS + 1
    assert jobs.compress_problems(jobs.CompressParams(quality=too_high))[0].startswith(
        jobs.sentence(options.quality_problem(too_high, options.DEFAULT_MODEL_LEVELS)))
    assert jobs.compress_problems(jobs.CompressParams(quality=too_high, target_bpp=0.5)) == []
    assert jobs.compress_problems(jobs.CompressParams(device="tpu")) == [
        jobs.sentence(options.device_problem("tpu"))]
    assert jobs.decompress_problems(jobs.DecompressParams(enhancement=plugin_options.EnhanceParams(fidelity=2.0))) == [
        jobs.sentence(options.fidelity_problem(2.0))]
    assert jobs.compress_problems(jobs.CompressParams()) == []
    assert jobs.decompress_problems(jobs.DecompressParams()) == []


# ---------------------------------------------------------------- the QGIS modules, read as source

LIMIT_CALLS = {"setRange", "setMinimum", "setMaximum", "setValue", "QgsProcessingParameterNumber"}
LIMIT_KEYWORDS = {"defaultValue", "minValue", "maxValue"}


def _contract_strings() -> set[str]:
    """core.options' names for things (models, devices, file suffixes, enhancement choices)."""
    found = set()
    for name, value in vars(options).items():
        if name.startswith("DEFAULT_") or name.endswith("_SUFFIX") or name in ("DEVICES", "ENHANCE_CHOICES"):
            for v in value if isinstance(value, tuple) else (value,):
                if isinstance(v, str):
                    found.add(v)
    return found


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _number(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp):
        node = node.operand
    return (isinstance(node, ast.Constant) and isinstance(node.value, (int, float))
            and not isinstance(node.value, bool))


def restatements(path, name: str | None = None) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = name or str(path.relative_to(ROOT))
    where = lambda node: f"{name}:{node.lineno}"  # noqa: E731
    aliases = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
               and isinstance(node.value, ast.Name) and node.value.id in LIMIT_CALLS
               for t in node.targets if isinstance(t, ast.Name)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            args = [a for a in node.args if func in LIMIT_CALLS | aliases]
            args += [k.value for k in node.keywords if k.arg in LIMIT_KEYWORDS]
            for arg in args:
                for sub in ast.walk(arg):
                    if _number(sub) and sub.value != 0:
                        found.append(f"{where(node)}: {ast.unparse(node)[:80]} writes the number {sub.value}; "
                                     "take it from core.options (coderic_qgis._contract.options)")
        elif isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                        and stmt.target.id in CONTRACT_FIELDS and isinstance(stmt.value, ast.Constant)
                        and stmt.value.value not in (None, "")):
                    found.append(f"{where(stmt)}: {node.name}.{stmt.target.id} restates a default of "
                                 "core.options' parameter dataclasses; inherit it or name the constant")
    strings = _contract_strings()
    distinctive = {s for s in strings if len(s) >= 5}
    docstrings = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            hit = node.value if node.value in strings else next((s for s in distinctive if s in node.value), None)
            if hit:
                found.append(f"{where(node)}: {node.value!r} repeats core.options' {hit!r}; use the constant")
    return found


@pytest.mark.parametrize("path", PLUGIN_MODULES, ids=lambda p: p.name)
def test_plugin_sources_restate_no_default_or_limit(path):
    found = restatements(path)
    assert not found, "\n".join(found)


def test_the_source_check_catches_restatements(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from dataclasses import dataclass\n"
                     "@dataclass\nclass P:\n    tile: int = 512\n    enhancer: str = ''\n"
                     "def f(box, q):\n"
                     "    Number = QgsProcessingParameterNumber\n"
                     "    box.setRange(0, 8192)\n"
                     "    Number('TILE', 'Tile', Number.Integer, 512)\n"
                     "    q.addParameter(QgsProcessingParameterEnum('DEVICE', 'Device', [], defaultValue=1))\n"
                     "    box.setMaximumWidth(32)\n"
                     "    return 'elic-lite-s', f'out{x}.crsic', 'cpu'\n")
    found = "\n".join(restatements(probe, name="probe.py"))
    for wanted in ("P.tile restates", "number 8192", "number 512", "number 1;", "'elic-lite-s'", "'.crsic'",
                   "'cpu'"):
        assert wanted in found, wanted
    assert "enhancer" not in found and "32" not in found and "number 0" not in found


# ---------------------------------------------------------------- the built zip

def test_the_zip_carries_the_contract_and_works_without_the_project(tmp_path):
    out = tmp_path / "coderic_qgis.zip"
    assert build.main(["-o", str(out)]) == 0
    with zipfile.ZipFile(out) as zf:
        for name in build.CONTRACT_FILES:
            assert zf.read(f"coderic_qgis/_contract/{name}") == (ROOT / "core" / name).read_bytes()
        zf.extractall(tmp_path / "plugins")
    # QGIS's Python sees the plugins folder, not the project: -I -S keeps the checkout and the
    # venv's site-packages (where the project is installed) off the path.
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "from coderic_qgis import jobs\n"
            "from coderic_qgis._contract import options\n"
            "assert options.__file__.startswith(sys.argv[1]), options.__file__\n"
            "assert 'core' not in sys.modules\n"
            "print(jobs.CompressParams().to_job()['tile'])\n")
    res = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(tmp_path / "plugins")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(options.DEFAULT_TILE)


def test_the_build_refuses_a_contract_that_imports_more(tmp_path):
    core = tmp_path / "core"
    core.mkdir()
    (core / "errors.py").write_text("import sys\n")
    (core / "options.py").write_text("from .errors import BadInput\nfrom .format import tiling\n")
    with pytest.raises(SystemExit, match="imports .format"):
        build.contract_files(core)
    (core / "options.py").write_text("import numpy\n")
    with pytest.raises(SystemExit, match="imports numpy"):
        build.contract_files(core)
    (core / "options.py").write_text("from __future__ import annotations\nimport math\nfrom .errors import X\n")
    assert [name for name, _ in build.contract_files(core)] == [f"coderic_qgis/_contract/{n}"
                                                                for n in build.CONTRACT_FILES]
