"""The integer entropy path's speed under each OpenBLAS kernel set (``OPENBLAS_CORETYPE``).

OpenBLAS chooses its kernels when it loads, by the CPU's model number, and a virtual machine
that hides the model gets its generic SSE3 kernels. ``core`` sets ``OPENBLAS_CORETYPE``
from the CPU's flags (``core.openblas_coretype``). Each variant runs in its own process:
``detected`` is OpenBLAS's own choice (NumPy loaded before ``core``), the others are forced.
Per variant: float64 GEMM GFLOP/s at the shape of the default model's largest entropy
layer at a 768 px tile, and the integer entropy coding (encode and decode) of one 768 px
tile of a Dubai val image, on 1 and 2 threads, median of ``--repeat``.

    python benchmarks/blas_kernels.py --out results/blas_kernels.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("detected", "SkylakeX", "Haswell")


def measure(repeat: int) -> dict:
    """In this process, with whatever kernels OpenBLAS loaded."""
    import numpy as np
    from PIL import Image
    from threadpoolctl import threadpool_info, threadpool_limits

    sys.path.insert(0, str(ROOT))
    from core.codec.tile_coder import get_coder
    from core.models import quality_to_level

    arch = [i.get("architecture") for i in threadpool_info() if i["internal_api"] == "openblas"]
    coder = get_coder()
    image = sorted((ROOT.parent / "shared/data/val/dubai").glob("*.jpg"))[0]
    x = np.asarray(Image.open(image).convert("RGB"), np.float32)[:768, :768].transpose(2, 0, 1)[None] / 255
    level = quality_to_level(6, coder.model.spec.levels)
    y = np.ascontiguousarray(coder.analysis(x, level))
    rng = np.random.default_rng(0)
    a, b = rng.integers(-2**15, 2**15, (128, 320)).astype(np.float64), rng.integers(-2**20, 2**20, (320, 2304)).astype(np.float64)

    def median_seconds(fn) -> float:
        fn()
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    out = {"openblas_architecture": arch[0] if arch else None, "threads": {}}
    for threads in (1, 2):
        with threadpool_limits(threads, user_api="blas"):
            gemm = median_seconds(lambda: a @ b)
            coded = coder.exact.compress(y)
            encode = median_seconds(lambda: coder.exact.compress(y))
            decode = median_seconds(lambda: coder.exact.decompress(coded["strings"], (y.shape[2] // 4, y.shape[3] // 4)))
        out["threads"][threads] = {"gemm_gflops": 2 * a.shape[0] * a.shape[1] * b.shape[1] / gemm / 1e9,
                                   "entropy_encode_seconds": encode, "entropy_decode_seconds": decode}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out")
    p.add_argument("--inner", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.inner:
        if args.inner == "detected":
            import numpy  # noqa: F401 - loaded before core: OpenBLAS keeps its own choice
        print(json.dumps(measure(args.repeat)))
        return 0
    sys.path.insert(0, str(ROOT))
    from core import openblas_coretype  # the choice core makes; each variant runs in its own process

    rows = {}
    for variant in VARIANTS:
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
        if variant != "detected":
            env["OPENBLAS_CORETYPE"] = variant
        run = subprocess.run([sys.executable, __file__, "--inner", variant, "--repeat", str(args.repeat)], env=env,
                             capture_output=True, text=True, check=True)
        rows[variant] = json.loads(run.stdout.strip().splitlines()[-1])
        for threads, r in rows[variant]["threads"].items():
            print(f"{variant:>9} ({rows[variant]['openblas_architecture']}), {threads} thread(s): GEMM "
                  f"{r['gemm_gflops']:.1f} GFLOP/s, entropy encode {r['entropy_encode_seconds']:.3f} s, "
                  f"decode {r['entropy_decode_seconds']:.3f} s per 768 px tile")
    result = {"command": "python benchmarks/blas_kernels.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "cpu_flags_choice": openblas_coretype(), "variants": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
