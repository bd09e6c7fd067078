"""How large the worker environment is: measured from an installed environment and a torch wheel.

The installed size of every distribution the project needs (its requirements, followed
through their own requirements, extras left out) is read from this Python's
environment; torch's CUDA build and its NVIDIA / triton libraries are counted apart. A
CPU-only torch wheel (from PyTorch's CPU index) is unpacked to measure its installed size.

    python benchmarks/worker_env_size.py --cpu-wheel /opt/wheels/torch-2.13.0+cpu-*.whl \
        --out results/worker_env_size.json
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from coderic_qgis.setup_env import requirements  # noqa: E402

GPU_ONLY = re.compile(r"^(nvidia-|triton$|cuda-)")


def _name(req: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", req, 1)[0].lower().replace("_", "-")


def closure() -> dict[str, float]:
    """Installed MB of each distribution the project needs (this environment's versions)."""
    dists = {d.metadata["Name"].lower().replace("_", "-"): d for d in md.distributions()}
    seen, stack = set(), [_name(r) for r in requirements(ROOT)]
    while stack:
        name = stack.pop()
        if name in seen or name not in dists:
            continue
        seen.add(name)
        stack += [_name(r) for r in dists[name].requires or [] if "extra ==" not in r]
    return {n: sum(f.size or 0 for f in dists[n].files or []) / 1e6 for n in sorted(seen)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-wheel", help="a CPU-only torch wheel to unpack and measure")
    p.add_argument("--out")
    args = p.parse_args(argv)
    sizes = closure()
    gpu = {n: s for n, s in sizes.items() if GPU_ONLY.match(n)}
    rest = {n: s for n, s in sizes.items() if n not in gpu and n != "torch"}
    res = {"torch_installed_mb": round(sizes.get("torch", 0)), "torch_version": md.version("torch"),
           "gpu_libraries_mb": round(sum(gpu.values())), "other_dependencies_mb": round(sum(rest.values())),
           "largest_other": sorted(((round(s), n) for n, s in rest.items()), reverse=True)[:8]}
    res["cuda_environment_gb"] = round((sizes.get("torch", 0) + sum(gpu.values()) + sum(rest.values())) / 1000, 2)
    if args.cpu_wheel:
        wheel = Path(args.cpu_wheel)
        with zipfile.ZipFile(wheel) as zf:
            unpacked = sum(i.file_size for i in zf.infolist())
        res.update(cpu_wheel=wheel.name, cpu_wheel_download_mb=round(wheel.stat().st_size / 1e6),
                   cpu_torch_installed_mb=round(unpacked / 1e6))
        res["cpu_environment_gb"] = round((unpacked / 1e6 + sum(rest.values())) / 1000, 2)
    res["command"] = "python benchmarks/worker_env_size.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(json.dumps(res, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
