"""Quantise an enhancer to int8 for OpenVINO, and store the result inside its weights file.

Post-training quantisation with NNCF: the enhancer is exported to ONNX as at run time
(``core.enhance.runtime.export_enhancer_onnx``), read by OpenVINO, and its activation ranges
are calibrated on degraded crops (``training.lq_pairs``) at the enhancer's default fidelity.
The quantised OpenVINO IR (graph and int8 weights) goes into the enhancer's safetensors file
(``core.models.weights.INT8_IR_KEYS``), so one file, one sha256, carries both; ``--runtime
openvino`` (and ``auto``, see ``core.enhance.runtime``) then enhances in int8 unless
``CODERSIC_PRECISION=f32``. The torch tensors are kept as they are.

    python -m training.quantize_enhancer --enhancer enhancer-fast --pairs runs/distill/pairs.npz \\
        --out core/weights/enhancer-fast.safetensors

Needs ``pip install nncf`` (training only: nothing at run time imports it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.quantize_enhancer", description=__doc__.split("\n\n")[0])
    p.add_argument("--enhancer", required=True, help="registry name or .safetensors file")
    p.add_argument("--pairs", required=True, help="calibration crops: a pair cache (.npz) from training.lq_pairs")
    p.add_argument("--count", type=int, default=96, help="calibration crops, spread evenly over the cache")
    p.add_argument("--out", required=True, help="the weights file to write (may be the input: replaced atomically)")
    return p


def calibration_crops(pairs: str, count: int) -> np.ndarray:
    """``count`` degraded crops spread evenly over a pair cache, float32 in [0, 1]."""
    lq = np.load(pairs)["lq"]
    idx = np.linspace(0, len(lq) - 1, min(count, len(lq))).round().astype(int)
    return lq[idx].astype(np.float32) / 255


def quantize(loaded, crops: np.ndarray) -> tuple[bytes, bytes]:
    """The enhancer as an int8 OpenVINO IR calibrated on ``crops`` -> (xml bytes, bin bytes)."""
    import nncf
    import openvino as ov
    import torch

    from core.enhance.runtime import export_enhancer_onnx
    from core.models.runtime import openvino_core

    core = openvino_core()
    net = loaded.net.float().to(memory_format=torch.contiguous_format)
    fidelity = np.array([loaded.default_fidelity], np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        model = core.read_model(str(export_enhancer_onnx(net, Path(tmp) / "enhancer.onnx")))
        items = [{"input": c[None], "fidelity": fidelity} for c in crops]
        quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items))
        ov.save_model(quantized, str(Path(tmp) / "int8.xml"), compress_to_fp16=False)
        return (Path(tmp) / "int8.xml").read_bytes(), (Path(tmp) / "int8.bin").read_bytes()


def main(argv=None) -> int:
    args = setup_args().parse_args(argv)
    from core.models import load_enhancer, save_enhancer
    from core.models.files import resolve_enhancer
    from safetensors import safe_open

    loaded = load_enhancer(args.enhancer, "cpu")
    path, _ = resolve_enhancer(args.enhancer)
    with safe_open(str(path), "np") as f:
        info = json.loads((f.metadata() or {}).get("crsic_enhancer_info", "{}"))
    crops = calibration_crops(args.pairs, args.count)
    xml, weights = quantize(loaded, crops)
    info["int8"] = {"tool": "nncf post-training quantisation (OpenVINO IR)", "calibration": Path(args.pairs).name,
                    "crops": len(crops), "crop_size": int(crops.shape[-1]), "fidelity": loaded.default_fidelity}
    sha = save_enhancer(loaded.net, args.out, info, int8_ir=(xml, weights))
    print(json.dumps({"out": args.out, "sha256": sha, "int8_ir_bytes": len(xml) + len(weights)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
