"""The documentation is tested: README.md and docs/*.md.

- Every fenced code block that is Python, or that holds a ``python -m`` / ``python FILE.py``
  command, carries a marker on the line before it: ``<!-- doc-test: run ... -->`` (this
  test runs it) or ``<!-- doc-test: not runnable: REASON -->``. The commands of a block
  that is not run are still checked: the module or script exists, and its arguments are
  accepted by its argparse parser (``setup_args()``) or, for a script without one, every
  ``--option`` is one the script defines. Python blocks that are not run must compile.
- Every module, function and path the docs name exists (``core.x.y``, ``core.x.f``,
  ``core/...``, ``results/...``, relative links).
- Every row of the README's "Measured" table names a committed file under ``results/``,
  and the speed row's numbers are those of the files it names.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from testdata import ROOT, TEST_DATA

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!--\s*doc-test:\s*(?:(?P<run>run)\b[^>]*|not runnable:\s*(?P<why>.+?))\s*-->")
COMMAND = re.compile(r"(?:^|[\s/])python3?\s+(-m\s+[\w.]+|[\w./-]+\.py)(.*)$")
PACKAGES = ("core", "training", "coderic_qgis", "benchmarks")
FIXTURE = TEST_DATA / "neon_rgb_uint8_0p1m_utm17n_deepforest_OSBS_029.tif"


@dataclass
class Block:
    doc: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    marker: str | None  # "run", "not runnable", or None
    why: str | None

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    def commands(self) -> list[tuple[str, list[str]]]:
        """(module or script, arguments) of every python command, continuation lines joined."""
        joined = re.sub(r"\\\n\s*", " ", self.text)
        found = []
        for line in joined.splitlines():
            m = COMMAND.search(line.split(" #")[0] if not line.lstrip().startswith("#") else "")
            if m:
                target = m.group(1)
                found.append((target[2:].strip() if target.startswith("-m") else target, m.group(2)))
        return found


def blocks(doc: Path) -> list[Block]:
    lines = doc.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        fence = lines[i].strip()
        if fence.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            indent = len(lines[i]) - len(lines[i].lstrip())
            text = "\n".join(line[indent:] for line in lines[i + 1 : j])
            prev = next((lines[k] for k in range(i - 1, -1, -1) if lines[k].strip()), "")
            m = MARKER.search(prev)
            marker = None if m is None else ("run" if m.group("run") else "not runnable")
            out.append(Block(doc, i + 1, fence[3:].strip(), text, marker, m and m.group("why")))
            i = j + 1
        else:
            i += 1
    return out


ALL = [b for doc in DOCS for b in blocks(doc)]
CODE = [b for b in ALL if b.lang == "python" or b.commands()]


def test_the_docs_have_code_to_test():
    assert len(DOCS) >= 6 and len(CODE) >= 20
    assert {b.marker for b in CODE} == {"run", "not runnable"}


@pytest.mark.parametrize("block", CODE, ids=[b.where for b in CODE])
def test_every_code_block_is_run_or_says_why_not(block):
    assert block.marker is not None, (f"{block.where}: a block with Python or a python command needs "
                                      "<!-- doc-test: run --> or <!-- doc-test: not runnable: REASON --> before it")
    if block.marker == "not runnable":
        assert block.why and len(block.why.split()) >= 2, f"{block.where}: say why it is not run"


# ---------------------------------------------------------------- commands: they exist, their options too

def _script_options(path: Path) -> set[str]:
    return set(re.findall(r"""["'](--[\w-]+)["']""", path.read_text(encoding="utf-8")))


def _parser(target: str):
    """The argparse parser of a module or script, if it has a ``setup_args()``; else None."""
    if target == "core.tile_codec":
        from core.cli_args import setup_args

        return setup_args()
    if target.endswith(".py"):
        spec = importlib.util.spec_from_file_location(f"_doc_{Path(target).stem}", ROOT / target)
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(ROOT))
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(ROOT))
    else:
        module = importlib.import_module(target)
    make = getattr(module, "setup_args", None)
    return make() if callable(make) else None


def _source(target: str) -> Path:
    if target.endswith(".py"):
        return ROOT / target
    spec = importlib.util.find_spec(target)
    return Path(spec.origin)


def command_problem(target: str, args: str) -> str | None:
    """None when ``python -m target args`` (or ``python target args``) is a valid command."""
    if target.endswith(".py"):
        if not (ROOT / target).is_file():
            return f"there is no script {target}"
    elif target.split(".")[0] in PACKAGES and importlib.util.find_spec(target) is None:
        return f"there is no module {target}"
    elif target.split(".")[0] not in PACKAGES:
        return None  # another program's module (venv, pytest)
    try:
        argv = shlex.split(args, comments=True)
    except ValueError as exc:
        return f"cannot split the arguments: {exc}"
    argv = [a for a in argv if a not in ("&&", "|")]
    if any(a.startswith("[") or a.startswith("<") for a in argv):
        return None  # a synopsis: the module's existence is what can be checked
    if target == "core.tile_codec":
        from core.cli_args import normalise_argv

        argv = normalise_argv(argv)
    parser = _parser(target)
    if parser is None:
        unknown = {a.split("=")[0] for a in argv if a.startswith("--")} - _script_options(_source(target))
        return f"options {sorted(unknown)} are not defined in {target}" if unknown else None
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(argv)
    except SystemExit as exc:
        if exc.code not in (0, None):
            return f"its parser refuses {argv}: {err.getvalue().strip().splitlines()[-1]}"
    return None


COMMANDS = [(b, t, a) for b in CODE for t, a in b.commands()]


@pytest.mark.parametrize("block,target,args", COMMANDS, ids=[f"{b.where} {t}" for b, t, _ in COMMANDS])
def test_every_documented_command_exists_with_its_options(block, target, args):
    problem = command_problem(target, args)
    assert problem is None, f"{block.where}: `python {'-m ' if not target.endswith('.py') else ''}{target}{args}`: {problem}"


def test_the_command_check_catches_stale_commands():
    assert command_problem("core.tile_codec", " compress big.tif --quality 2") is None
    assert "refuses" in command_problem("core.tile_codec", " compress big.tif --qualty 2")
    assert "no module" in command_problem("core.tiles_codec", " x")
    assert "no script" in command_problem("benchmarks/nothing.py", "")
    assert "not defined" in command_problem("benchmarks/codec_throughput.py", " --sizes 2048 --no-such-option")


def test_python_blocks_that_are_not_run_compile():
    for block in CODE:
        if block.lang == "python" and block.marker == "not runnable":
            compile(block.text, block.where, "exec")


# ---------------------------------------------------------------- blocks that run

RUN = [b for b in CODE if b.marker == "run"]


@pytest.mark.parametrize("block", RUN, ids=[b.where for b in RUN])
def test_runnable_blocks_run(block, tmp_path):
    """Each in a fresh Python, in a folder where ``big.tif`` is the NEON test raster."""
    assert block.lang == "python", f"{block.where}: only Python blocks are run"
    shutil.copy(FIXTURE, tmp_path / "big.tif")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", block.text], cwd=tmp_path, capture_output=True, text=True,
                         timeout=600, env=env)
    assert out.returncode == 0, f"{block.where} failed:\n{out.stderr[-3000:]}"


def test_the_readme_quick_start_round_trip_runs():
    """The README's first command (after the set-up): a round trip of the shipped sample."""
    start = next(b for b in CODE if b.doc.name == "README.md")
    (target, args), = [c for c in start.commands() if c[0] == "core.tile_codec"]
    argv = shlex.split(args, comments=True)
    out = subprocess.run([sys.executable, "-m", target, *argv, "--quiet", "--json"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0 < result["bpp"] < 2 and 20 < result["psnr"] < 60


# ---------------------------------------------------------------- names and paths

PATH = re.compile(r"(?<![\w./~-])((?:core|training|coderic_qgis|benchmarks|tests|scripts|results|docs)/[\w./*-]*[\w*])")
DOTTED = re.compile(r"(?<![\w./-])((?:core|training|coderic_qgis)(?:\.\w+)+)")
LINK = re.compile(r"\]\(([^)\s#]*[./][^)\s#]*)(?:#[^)]*)?\)")  # a markdown link to a file


def _top_level_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def name_problem(dotted: str) -> str | None:
    """None when ``dotted`` is a module, or a module's top-level name (an attribute of that
    name may follow: ``Class.method`` is not looked into)."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        path = _module_file(".".join(parts[:n]))
        if path is None:
            continue
        if n == len(parts) or parts[n] in _top_level_names(path):
            return None
        return f"{'.'.join(parts[:n])} has no {parts[n]}"
    return f"there is no module {dotted}"


def doc_names() -> list[tuple[str, str, str]]:
    found = []
    for doc in DOCS:
        for i, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            where = f"{doc.relative_to(ROOT)}:{i}"
            for m in PATH.finditer(line):
                found.append((where, "path", m.group(1)))
            for m in DOTTED.finditer(line):
                found.append((where, "name", m.group(1).rstrip(".")))
            for m in LINK.finditer(line):
                if not re.match(r"[a-z]+:", m.group(1)):
                    found.append((where, "link", str((doc.parent / m.group(1)).resolve().relative_to(ROOT))))
    return found


NAMES = doc_names()


def test_the_docs_name_things():
    kinds = {kind for _, kind, _ in NAMES}
    assert kinds == {"path", "name", "link"} and len(NAMES) > 100


@pytest.mark.parametrize("doc", [d.name for d in DOCS])
def test_every_module_function_and_path_the_docs_name_exists(doc):
    problems = []
    for where, kind, value in NAMES:
        if not where.split(":")[0].endswith(doc):
            continue
        if kind == "name":
            problem = name_problem(value)
        elif "*" in value:
            problem = None if list(ROOT.glob(value)) else f"nothing matches {value}"
        else:
            problem = None if (ROOT / value).exists() else f"there is no {value}"
        if problem:
            problems.append(f"{where}: {problem}")
    assert not problems, "\n".join(problems)


def test_the_name_check_catches_stale_names():
    assert name_problem("core.usecases.decompress") is None and name_problem("core.format.tiling") is None
    assert name_problem("core.enhance_raster") == "core has no enhance_raster"
    assert name_problem("core.codec.CompressOptions") == "core.codec has no CompressOptions"
    assert name_problem("core.scale.batch.run_batch") is None
    assert name_problem("core.batch.run_batch") == "core has no batch"


# ---------------------------------------------------------------- the README's numbers

def _measured_rows() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Measured", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| what")
            and not line.startswith("|---")]


def test_every_measured_number_names_its_results_file():
    rows = _measured_rows()
    assert len(rows) >= 10
    for row in rows:
        result = row.split(" | ")[1]
        if not re.search(r"\d", result.replace("2026-11-26", "")):
            continue
        files = re.findall(r"\((results/[^)\s]+)\)", row)
        assert files, f"README row without its results file: {row[:80]}"
        for f in files:
            assert (ROOT / f).exists(), f"README names {f}, which is not committed"


def test_the_speed_row_quotes_its_files():
    """The numbers of the speed row, computed again from the two files it names."""
    row = next(r for r in _measured_rows() if r.startswith("| speed"))
    runs = [json.loads((ROOT / f).read_text())["rows"] for f in
            ("results/codec_throughput.json", "results/enhance_throughput.json")]
    rows = [r for run in runs for r in run]
    by_size = {r["size"]: r for r in runs[0]}
    expected = [f"encode {by_size[8192]['encode_mp_s']:.2f} MP/s, decode {by_size[8192]['decode_mp_s']:.2f} MP/s",
                f"4096: {by_size[4096]['encode_mp_s']:.2f} / {by_size[4096]['decode_mp_s']:.2f}",
                f"2048: {by_size[2048]['encode_mp_s']:.2f} / {by_size[2048]['decode_mp_s']:.2f}",
                f"{runs[1][0]['encode_mp_s']:.2f} / {runs[1][0]['decode_mp_s']:.2f} in a second run"]

    def span(values, digits=2):
        return f"{min(values):.{digits}f}-{max(values):.{digits}f}"

    expected += [f"{span([r['avif_encode_mp_s'] for r in rows], 1)} MP/s",
                 f"encode at {span([r['encode_mp_s'] / r['avif_encode_mp_s'] for r in rows])}x",
                 f"decode at {span([r['decode_mp_s'] / r['avif_encode_mp_s'] for r in rows])}x",
                 f"x{span([r['vs_previous']['encode_mp_s'] for r in rows])} encode",
                 f"x{span([r['vs_previous']['decode_mp_s'] for r in rows])} decode"]
    missing = [e for e in expected if e not in row]
    assert not missing, f"the speed row does not say {missing}"


MEASURED = re.compile(r"\d+(?:\.\d+)?\s*(?:%|dB|bpp|MP/s|GB|:1|x\b|DN\b|minutes)")
SOURCE = re.compile(r"results/[\w./-]+|core/weights/[\w.-]+\.md")


def readme_units() -> list[str]:
    """The README's prose outside code blocks, cut into paragraphs and bullets; a table is
    one unit with the paragraph that introduces it."""
    text = re.sub(r"```.*?```", "\n\n", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)
    text = text.split("## Measured", 1)[0]  # the table below is checked row by row
    units = []
    for para in re.split(r"\n\s*\n", text):
        if para.lstrip().startswith("|") and units:
            units[-1] += "\n" + para
        else:
            units.extend(re.split(r"\n(?=- )", para))
    return units


def test_every_readme_number_names_its_file():
    """A measurement in the README's prose (%, dB, bpp, MP/s, GB, ratios...) names the
    committed file it comes from: under results/, or a model card in core/weights/."""
    problems = []
    for unit in readme_units():
        if MEASURED.search(unit):
            sources = SOURCE.findall(unit)
            if not sources:
                problems.append(f"no results file named beside: {unit.strip()[:100]!r}")
            problems += [f"{s} is not committed" for s in sources if not (ROOT / s).exists()]
    assert not problems, "\n".join(problems)
