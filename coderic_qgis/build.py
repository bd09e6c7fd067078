"""Build the installable plugin zip: ``python3 -m coderic_qgis.build`` -> dist/coderic_qgis.zip.

The zip holds one folder, ``coderic_qgis/``, with the plugin's modules, its icons and the
top-level ``metadata.txt`` (QGIS's "Install from ZIP" expects exactly that). It also holds
the codec's contract: ``core/options.py`` and ``core/errors.py`` copied, unchanged, into
``coderic_qgis/_contract/`` (see that package), so the installed plugin has core's
defaults and checks without the project on ``sys.path``. Those files must import only
the standard library and each other; the build refuses otherwise.

It also holds a wheel of the project (``coderic_qgis/wheels/code_rsic-*.whl``, with the
shipped weights), built with ``pip wheel --no-deps`` from a clean copy of the sources: what
*Set up worker environment…* installs of ours, so only third-party packages come from
the package index. That needs pip and setuptools in the Python running the build
(``--no-wheel`` leaves the wheel out). It needs neither QGIS nor the codec's packages, and
the same sources give the same bytes.
"""

from __future__ import annotations

import argparse
import ast
import configparser
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent
ROOT = PLUGIN_DIR.parent
REQUIRED_METADATA = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
                     "repository")
EXCLUDE_FILES = {"build.py"}
FIXED_TIME = (2024, 1, 1, 0, 0, 0)
FIXED_EPOCH = 1704067200  # FIXED_TIME as SOURCE_DATE_EPOCH: the wheel's own timestamps
WHEEL_DIR = "wheels"  # coderic_qgis/wheels/ in the zip (coderic_qgis.setup_env looks there)
WHEEL_SOURCES = ("pyproject.toml", "README.md", "core", "training", "coderic_qgis")
CONTRACT_DIR = PLUGIN_DIR / "_contract"
CONTRACT_FILES = ("options.py", "errors.py")  # = coderic_qgis._contract.FILES (a test checks)


def read_metadata(path: Path) -> dict[str, str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keys are case-sensitive (qgisMinimumVersion)
    if not parser.read(path, encoding="utf-8"):
        raise SystemExit(f"error: {path} not found")
    if "general" not in parser:
        raise SystemExit(f"error: {path} has no [general] section")
    meta = dict(parser["general"])
    missing = [k for k in REQUIRED_METADATA if not meta.get(k)]
    if missing:
        raise SystemExit(f"error: {path} lacks {', '.join(missing)}")
    return meta


def plugin_files() -> list[Path]:
    files = []
    for path in sorted(PLUGIN_DIR.rglob("*")):
        rel = path.relative_to(PLUGIN_DIR)
        if not path.is_file() or "__pycache__" in rel.parts or path.suffix in (".pyc", ".pyo"):
            continue
        if rel.name in EXCLUDE_FILES or rel.name.startswith("."):
            continue
        if path.parent == CONTRACT_DIR and rel.name in CONTRACT_FILES:
            continue  # a stray copy: the zip always gets core's current files
        if rel.parts[0] == WHEEL_DIR:
            continue  # the zip always gets a wheel of the current sources
        files.append(path)
    return files


def contract_files(core: Path = ROOT / "core") -> list[tuple[str, bytes]]:
    """(name in the zip, bytes) of core's contract files, after checking that they import
    only the standard library and each other (anything else would not be in the zip)."""
    entries = []
    for name in CONTRACT_FILES:
        path = core / name
        if not path.is_file():
            raise SystemExit(f"error: {path} not found: build the plugin from a Code-RSIC checkout")
        data = path.read_bytes()
        for node in ast.walk(ast.parse(data, filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level:
                targets = [node.module] if node.module else [a.name for a in node.names]
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                bad = [n for n in names if n.split(".")[0] not in sys.stdlib_module_names | {"__future__"}]
                if bad:
                    raise SystemExit(f"error: {path}:{node.lineno} imports {bad[0]}; the plugin's copy of the "
                                     "contract may import only the standard library")
                continue
            else:
                continue
            for target in targets:
                if node.level != 1 or f"{target}.py" not in CONTRACT_FILES:
                    raise SystemExit(f"error: {path}:{node.lineno} imports {'.' * node.level}{target}, which "
                                     f"is not one of the contract files {', '.join(CONTRACT_FILES)}")
        entries.append((f"coderic_qgis/_contract/{name}", data))
    return entries


def project_wheel(python: str = sys.executable) -> tuple[str, bytes]:
    """(name in the zip, bytes) of a wheel of the project, built from a clean copy of its
    sources (no stale build/ folder, nothing written into the checkout)."""
    with tempfile.TemporaryDirectory(prefix="coderic-wheel-") as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", WHEEL_DIR)
        for name in WHEEL_SOURCES:
            path = ROOT / name
            if path.is_dir():
                shutil.copytree(path, src / name, ignore=ignore)
            elif path.is_file():
                src.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, src / name)
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(FIXED_EPOCH), PIP_DISABLE_PIP_VERSION_CHECK="1",
                   PYTHONDONTWRITEBYTECODE="1")
        cmd = [python, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wheels = sorted(out.glob("*.whl")) if res.returncode == 0 else []
        if len(wheels) != 1:
            last = (res.stderr.strip().splitlines() or ["no wheel was written"])[-1]
            raise SystemExit(f"error: building the project's wheel with {python} failed ({last}): that Python "
                             "needs pip and setuptools (e.g. build with .venv/bin/python), or build without "
                             "it: --no-wheel")
        return f"coderic_qgis/{WHEEL_DIR}/{wheels[0].name}", wheels[0].read_bytes()


def build(output: Path, metadata: Path, wheel: bool = True) -> Path:
    meta = read_metadata(metadata)
    icon = meta.get("icon")
    if icon and not (PLUGIN_DIR / icon).is_file():
        raise SystemExit(f"error: metadata icon {icon} is not in {PLUGIN_DIR}")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        entries = [(f"coderic_qgis/{p.relative_to(PLUGIN_DIR).as_posix()}", p.read_bytes()) for p in plugin_files()]
        entries += contract_files()
        if wheel:
            entries.append(project_wheel())
        entries.append(("coderic_qgis/metadata.txt", metadata.read_bytes()))
        for name, data in sorted(entries):
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, data)
    tmp.replace(output)
    return output


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m coderic_qgis.build", description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", type=Path, default=ROOT / "dist" / "coderic_qgis.zip")
    p.add_argument("--metadata", type=Path, default=ROOT / "metadata.txt")
    p.add_argument("--no-wheel", action="store_true",
                   help="leave out the project's wheel (Set up worker environment then installs from the checkout)")
    args = p.parse_args(argv)
    out = build(args.output, args.metadata, wheel=not args.no_wheel)
    with zipfile.ZipFile(out) as zf:
        n = len(zf.namelist())
    print(f"{out} ({n} files, version {read_metadata(args.metadata)['version']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
