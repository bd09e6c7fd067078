"""Build the installable plugin zip: ``python3 -m coderic_qgis.build`` -> dist/coderic_qgis.zip.

The zip holds one folder, ``coderic_qgis/``, with the plugin's modules, its icons and the
top-level ``metadata.txt`` (QGIS's "Install from ZIP" expects exactly that). It needs
neither QGIS nor the codec's packages, and the same sources give the same bytes.
"""

from __future__ import annotations

import argparse
import configparser
import sys
import zipfile
from pathlib import Path

PLUGIN_DIR = Path(__file__).resolve().parent
ROOT = PLUGIN_DIR.parent
REQUIRED_METADATA = ("name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
                     "repository")
EXCLUDE_FILES = {"build.py"}
FIXED_TIME = (2024, 1, 1, 0, 0, 0)


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
        files.append(path)
    return files


def build(output: Path, metadata: Path) -> Path:
    meta = read_metadata(metadata)
    icon = meta.get("icon")
    if icon and not (PLUGIN_DIR / icon).is_file():
        raise SystemExit(f"error: metadata icon {icon} is not in {PLUGIN_DIR}")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        entries = [(f"coderic_qgis/{p.relative_to(PLUGIN_DIR).as_posix()}", p.read_bytes()) for p in plugin_files()]
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
    args = p.parse_args(argv)
    out = build(args.output, args.metadata)
    with zipfile.ZipFile(out) as zf:
        n = len(zf.namelist())
    print(f"{out} ({n} files, version {read_metadata(args.metadata)['version']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
