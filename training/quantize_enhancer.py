"""Quantise an enhancer to int8 for OpenVINO, and store the result inside its weights file.

Post-training quantisation with NNCF: the enhancer is exported to ONNX as at run time
(``core.enhance.runtime.export_enhancer_onnx``), read by OpenVINO, and its activation ranges
are calibrated on degraded crops (``training.lq_pairs``) at one fidelity (``--fidelity``, the
enhancer's default): calibrated at 0.5, a student broke at 1, and calibrated at 0, 0.5 and 1
in turns it agreed with its float network to 24 dB only. The fidelity goes into the file;
other fidelities run the float network (``core.enhance.runtime``).
Activations are quantised asymmetrically (NNCF's ``MIXED`` preset): with the symmetric
default, the 8-channel full-resolution student lost 5 dB against its float network.
NNCF quantises it as a Transformer (``ModelType.TRANSFORMER``): its attention products then
stay whole for OpenVINO's fused attention kernel, without quantisers (and the copies they
force) between them. On enhancer-fast, against the generic scheme: 46.5 dB against its float
network instead of 41.2, and 0.048 s a 256 px window on one thread instead of 0.060
(``results/enhancer_int8_transformer.json``). The int8 network is then checked against the
float one on the calibration crops and refused below ``MIN_AGREEMENT_DB``.
The quantised OpenVINO IR (graph and int8 weights) goes into the enhancer's safetensors file
(``core.models.files.INT8_IR_KEYS``), so one file, one sha256, carries both; ``--runtime
openvino`` (and ``auto``, see ``core.enhance.runtime``) then enhances in int8 unless
``CODERSIC_PRECISION=f32``. The torch tensors are kept as they are.

    python -m training.quantize_enhancer --enhancer enhancer-fast --pairs runs/distill/pairs.npz \\
        --out core/weights/enhancer-fast.safetensors

Needs nncf (``pip install -e .[quantize]``; training only: nothing at run time imports it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

MIN_AGREEMENT_DB = 28.0  # PSNR of the int8 output against the float output (a good one: 31-32 dB; broken: ~20)


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.quantize_enhancer", description=__doc__.split("\n\n")[0])
    p.add_argument("--enhancer", required=True, help="registry name or .safetensors file")
    p.add_argument("--pairs", required=True, help="calibration crops: a pair cache (.npz) from training.lq_pairs")
    p.add_argument("--count", type=int, default=96, help="calibration crops, spread evenly over the cache")
    p.add_argument("--fidelity", type=float, default=1.0, help="the fidelity int8 serves (the enhancer's default)")
    p.add_argument("--out", required=True, help="the weights file to write (may be the input: replaced atomically)")
    return p


def calibration_crops(pairs: str, count: int) -> np.ndarray:
    """``count`` degraded crops spread evenly over a pair cache, float32 in [0, 1]."""
    lq = np.load(pairs)["lq"]
    idx = np.linspace(0, len(lq) - 1, min(count, len(lq))).round().astype(int)
    return lq[idx].astype(np.float32) / 255


def quantize(loaded, crops: np.ndarray, fidelity: float) -> tuple[bytes, bytes]:
    """The enhancer as an int8 OpenVINO IR calibrated on ``crops`` at ``fidelity`` -> (xml bytes, bin bytes)."""
    import nncf
    import openvino as ov
    import torch

    from core.enhance.runtime import export_enhancer_onnx
    from core.models.runtime import openvino_core

    core = openvino_core()
    net = loaded.net.float().to(memory_format=torch.contiguous_format)
    with tempfile.TemporaryDirectory() as tmp:
        model = core.read_model(str(export_enhancer_onnx(net, Path(tmp) / "enhancer.onnx")))
        items = [{"input": c[None], "fidelity": np.array([fidelity], np.float32)} for c in crops]
        quantized = nncf.quantize(model, nncf.Dataset(items), subset_size=len(items),
                                  preset=nncf.QuantizationPreset.MIXED, model_type=nncf.ModelType.TRANSFORMER)
        ov.save_model(quantized, str(Path(tmp) / "int8.xml"), compress_to_fp16=False)
        return (Path(tmp) / "int8.xml").read_bytes(), (Path(tmp) / "int8.bin").read_bytes()


def agreement_db(loaded, int8_ir: tuple[bytes, bytes], crops: np.ndarray, fidelity: float) -> float:
    """PSNR (dB) of the int8 network's outputs against the float network's (f32) on ``crops``."""
    import copy

    from core.compare.psnr import psnr_from_mse
    from core.enhance.runtime import OpenVinoEnhancer

    with_int8 = copy.copy(loaded)
    with_int8.int8_ir, with_int8.int8_fidelity = int8_ir, fidelity
    f32, int8 = OpenVinoEnhancer(loaded, precision="f32"), OpenVinoEnhancer(with_int8, precision="int8")
    mse = np.mean([np.mean((int8.enhance(c[None], fidelity) - f32.enhance(c[None], fidelity)) ** 2) for c in crops])
    return psnr_from_mse(mse, peak=1.0)


def main(argv=None) -> int:
    args = setup_args().parse_args(argv)
    from core.models import load_enhancer, save_enhancer

    loaded = load_enhancer(args.enhancer, "cpu")
    info = dict(loaded.info)
    crops = calibration_crops(args.pairs, args.count)
    xml, weights = quantize(loaded, crops, args.fidelity)
    agreement = agreement_db(loaded, (xml, weights), crops[:: max(1, len(crops) // 8)], args.fidelity)
    if agreement < MIN_AGREEMENT_DB:
        print(f"error: the int8 network departs from the float one ({agreement:.1f} dB < {MIN_AGREEMENT_DB:g} dB "
              "on the calibration crops): not written", file=sys.stderr)
        return 1
    info["int8"] = {"tool": "nncf post-training quantisation (OpenVINO IR)", "calibration": Path(args.pairs).name,
                    "crops": len(crops), "crop_size": int(crops.shape[-1]), "fidelity": args.fidelity,
                    "preset": "mixed", "model_type": "transformer", "agreement_db": round(agreement, 2)}
    sha = save_enhancer(loaded.net, args.out, info, int8_ir=(xml, weights))
    print(json.dumps({"out": args.out, "sha256": sha, "int8_ir_bytes": len(xml) + len(weights),
                      "agreement_db": round(agreement, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
