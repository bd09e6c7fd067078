"""Write the model card of exported enhancer weights from its run folders: the three stages,
or the one distillation run of a student (``training.distill_enhancer``).

    python -m training.enhancer_card --weights core/weights/enhancer-lite.safetensors \
        --runs runs/enh-codebook runs/enh-lookup runs/enh-hpin --eval runs/eval-enhance.json \
        --hardware "2-core CPU, 1 thread, shared with other jobs"
    python -m training.enhancer_card --weights core/weights/enhancer-fast.safetensors \
        --runs runs/distill --eval runs/distill/eval.json --hardware "..."
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.enhancer_card", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True)
    p.add_argument("--runs", nargs="+", required=True,
                   help="stage 1, 2, 3 run folders, or one distillation run folder")
    p.add_argument("--eval", help="JSON of training.eval_enhance")
    p.add_argument("--hardware", default="CPU")
    p.add_argument("--notes", default="", help="extra markdown appended to the card")
    p.add_argument("--out", help="card path (default: weights path with .md)")
    return p


def read_run(run: Path) -> tuple[dict, dict | None]:
    """Step and training time (``step``, ``elapsed_s``) of a run, and its last validation record.

    Step and time come from the run's checkpoint when it has one (``last.pt``, full or
    model-only), else from the last record of its log.
    """
    log = run / "log.jsonl"
    if not log.exists():
        raise SystemExit(f"error: no training log at {log}")
    last, val = None, None
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        last = rec
        if "val" in rec:
            val = rec
    if last is None:
        raise SystemExit(f"error: {log} is empty")
    ckpt = run / "last.pt"
    if ckpt.exists():
        import torch

        ck = torch.load(ckpt, map_location="cpu", weights_only=True)
        last = {"step": int(ck["step"]), "elapsed_s": float(ck["elapsed"])}
    return last, val


def main(argv=None) -> int:
    args = setup_args().parse_args(argv)
    from core.models import file_sha256

    weights = Path(args.weights)
    lines = [f"# {weights.stem}: Code-RSIC decoder-side enhancer", "",
             f"- file: `{weights.name}` (fp16 safetensors, {weights.stat().st_size / 1e6:.1f} MB)",
             f"- sha256: `{file_sha256(weights)}`",
             f"- hardware: {args.hardware}", ""]
    lines += ["| stage | steps | wall time (training, excl. validation) | last validation |", "|---|---|---|---|"]
    total = 0.0
    if len(args.runs) not in (1, 3):
        raise SystemExit("error: --runs takes the three stage folders or one distillation folder")
    stages = ("1 codebook (VQGAN)", "2 code lookup", "3 HPIN") if len(args.runs) == 3 else ("distillation",)
    for name, run in zip(stages, args.runs):
        last, val = read_run(Path(run))
        total += float(last["elapsed_s"])
        lines.append(f"| {name} | {last['step']} | {last['elapsed_s'] / 60:.1f} min | "
                     f"{json.dumps(val['val']) if val else '-'} |")
    lines += ["", f"Total training time: {total / 60:.1f} min.", ""]
    if args.eval:
        res = json.loads(Path(args.eval).read_text())
        cols = ["bpp", "psnr", "ms_ssim", "lpips", "dists", "fid", "kid"]
        lines += [f"Validation ({res['crops']} centre crops of {res['size']} px from ../shared/data/val, "
                  f"ELIC weights `{res['elic']}`):", "",
                  "| variant | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for key, s in sorted(res["results"].items(), key=lambda kv: (kv[0].split("/")[0], kv[1]["bpp"])):
            lines.append(f"| {key} | " + " | ".join(f"{s[c]:.4f}" if c in s else "-" for c in cols) + " |")
        lines += ["", f"Decode {res['decode_s_per_mp']:.2f} s/MP, enhancement {res['enhance_s_per_mp']:.2f} s/MP "
                  f"({res['threads']} thread(s)).", ""]
    if args.notes:
        lines += [args.notes, ""]
    out = Path(args.out) if args.out else weights.with_suffix(".md")
    out.write_text("\n".join(lines))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
