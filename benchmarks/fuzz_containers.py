"""Fuzz the container decoder: N damaged or hostile containers through the library decode.

Each case is one of the small seeded containers (format 1, 2 and 3, with and without a
nodata mask, uint8 and uint16) damaged at random: plain byte damage (the checksums should
catch it), or damage behind recomputed checksums (header JSON bytes, one header field,
tile masks, tile stream framing, entropy-coded bytes, tile order and symbols CRCs),
sometimes stacked, sometimes decoded through a window. The hand-made hostile headers of
tests/fuzzing.py run first. Every case is decoded in-process (``container_info`` then
``decompress_raster``) under a per-case alarm, and counted:

- clean: a one-line ``CodecError``, no file left behind;
- decoded: a readable raster (the original pixels where the damage cannot change them);
- other: anything else (a traceback, a multi-line message, a left-over file, wrong pixels);
- hang: the case ran past ``--timeout`` seconds.

With ``--canary`` (the default) every rANS decode runs twice, once with zeros and once
with a canary pattern beyond the slack ``rans_slack`` appends: a difference means the
decoder read past the slack (counted as ``overreads``; the goal is 0).

A hang inside C code cannot be interrupted by the alarm: ``faulthandler`` then dumps the
stacks and ends the run after three timeouts (the partial counts are written every 250
cases). Run it niced, on one thread::

    nice -n 10 python benchmarks/fuzz_containers.py --cases 10000 --out results/fuzz_containers.json
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import platform
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fuzzing import (  # noqa: E402
    HARMLESS_HEADERS,
    HOSTILE_HEADERS,
    Parts,
    damage_bytes,
    damage_reframed,
    make_source,
    run_case,
)

# A decode of these damages must give the original pixels. Not so for "tiles": a tile moved
# together with its symbols CRC (one dropped, another repeated) decodes, at another place.
PIXELS_MUST_MATCH = {"bytes", "stream-framing", "stream-bytes"}


class CaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CaseTimeout()


def setup_args() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=10000, help="random cases (after the hand-made ones)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per case before it counts as a hang")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default=str(ROOT / "results" / "fuzz_containers.json"))
    p.add_argument("--keep", default=None, help="folder to keep the cases that were not clean or decoded")
    p.add_argument("--no-canary", dest="canary", action="store_false",
                   help="skip the check that rANS decoding stays inside the slack (twice as fast)")
    return p


def watch_overreads(coder, counter: dict) -> None:
    """Decode every rANS stream with zeros and with a canary beyond the slack; count differences
    (the integer path's coder, and the float path's entropy models for format 1)."""
    from core.models.compressai_backend import EntropyModel
    from core.models.rans import BoundedRansCoder, rans_slack

    class Watched(BoundedRansCoder):
        def decode_with_indexes(self, string, indexes, *rest):
            padded = bytes(string) + bytes(rans_slack(len(string), len(indexes)))
            zeros = self.raw_decoder.decode_with_indexes(padded + bytes(1 << 16), indexes, *rest)
            if self.raw_decoder.decode_with_indexes(padded + b"\xa5" * (1 << 16), indexes, *rest) != zeros:
                counter["overreads"] += 1
            return zeros

    coder.exact.coder = Watched()
    for module in coder.model.net.modules():
        if isinstance(module, EntropyModel):
            module.entropy_coder = Watched()


def make_originals(folder: Path, weights: str) -> dict[str, tuple[bytes, np.ndarray]]:
    import rasterio

    from core.codec.compress import compress_raster
    from core.codec.decompress import decompress_raster
    from core.options import CompressParams

    made = {}
    for name, fmt, masked, dtype, bands in (("f3-masked", 3, True, "uint8", 3), ("f3-u16-4band", 3, False, "uint16", 4),
                                            ("f2-masked", 2, True, "uint8", 3), ("f1", 1, False, "uint8", 3),
                                            ("f2-u16-4band", 2, False, "uint16", 4), ("f1-masked", 1, True, "uint8", 3)):
        src = folder / f"{name}.tif"
        make_source(src, masked=masked, dtype=dtype, bands=bands)
        path = folder / f"{name}.crsic"
        compress_raster(src, path, CompressParams(model=weights, quality=1.5, tile=64, overlap=0 if fmt == 3 else 16,
                                                  format=fmt,
                                                  bands=list(range(1, bands + 1))))
        decompress_raster(path, folder / f"{name}.dec.tif", model=weights)
        with rasterio.open(folder / f"{name}.dec.tif") as ds:
            made[name] = (path.read_bytes(), ds.read())
    return made


def tiny_weights(folder: Path) -> str:
    """The test suite's seeded random elic-tiny (tests/conftest.py)."""
    from core.models import REGISTRY, build_model, save_weights

    torch.manual_seed(0)
    spec = REGISTRY["elic-tiny"]
    net = build_model(spec).eval()
    net.update(force=True)
    path = folder / "elic-tiny.safetensors"
    save_weights(net, spec, path)
    return str(path)


def draw(originals, rng: np.random.Generator):
    """-> (label, container bytes, reference pixels or None, window or None)."""
    names = sorted(originals)
    name = names[int(rng.integers(0, len(names)))]
    data, reference = originals[name]
    if rng.random() < 0.3:
        what, case = "bytes", damage_bytes(data, rng)
    else:
        parts = Parts.parse(data)
        kinds = []
        for _ in range(int(rng.geometric(0.6))):
            what, parts = damage_reframed(parts, rng)
            kinds.append(what)
        what = "+".join(kinds)
        case = parts.build()
    must_match = all(k in PIXELS_MUST_MATCH for k in what.split("+"))
    window = None
    if rng.random() < 0.2:
        window = (int(rng.integers(0, 100)), int(rng.integers(0, 80)), int(rng.integers(1, 64)),
                  int(rng.integers(1, 64)))
        must_match = False  # a window's pixels are compared in the test suite, not here
    return f"{name}:{what}", case, reference if must_match else None, window


def main(argv=None) -> int:
    args = setup_args().parse_args(argv)
    torch.set_num_threads(args.threads)
    faulthandler.enable()
    signal.signal(signal.SIGALRM, _alarm)

    counts = {"clean": 0, "decoded": 0, "other": 0, "hang": 0}
    by_kind: dict[str, dict[str, int]] = {}
    errors: dict[str, int] = {}
    others: list[dict] = []
    keep = Path(args.keep) if args.keep else None
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="crsic-fuzz-") as tmp:
        tmp = Path(tmp)
        weights = tiny_weights(tmp)
        originals = make_originals(tmp, weights)
        overreads = {"overreads": 0}
        if args.canary:
            from core.codec.tile_coder import get_coder

            watch_overreads(get_coder(weights), overreads)
        (tmp / "out").mkdir()
        case_path, out = tmp / "case.crsic", tmp / "out" / "case.tif"

        fixed = []
        for name, (data, reference) in sorted(originals.items()):
            parts = Parts.parse(data)
            fixed += [(f"{name}:hostile:{h}", parts.with_header(f(parts.header_dict())).build(), None, None)
                      for h, f in HOSTILE_HEADERS.items()]
            fixed += [(f"{name}:harmless:{h}", parts.with_header(f(parts.header_dict())).build(), reference, None)
                      for h, f in HARMLESS_HEADERS.items()]
        rng = np.random.default_rng(args.seed)
        total = len(fixed) + args.cases

        def write(final: bool) -> None:
            res = {"cases": sum(counts.values()), "planned": total, "complete": final, "counts": counts,
                   "rans_overreads": overreads["overreads"] if args.canary else None,
                   "seed": args.seed, "timeout_s": args.timeout, "threads": args.threads,
                   "seconds": round(time.perf_counter() - t0, 1), "by_kind": by_kind, "errors": errors,
                   "others": others[:50], "python": platform.python_version(), "torch": torch.__version__,
                   "command": "python benchmarks/fuzz_containers.py " + " ".join(argv or sys.argv[1:])}
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(res, indent=1) + "\n")

        for i in range(total):
            label, data, reference, window = fixed[i] if i < len(fixed) else draw(originals, rng)
            case_path.write_bytes(data)
            faulthandler.dump_traceback_later(args.timeout * 3, exit=True)
            signal.setitimer(signal.ITIMER_REAL, args.timeout)
            try:
                outcome, detail = run_case(case_path, out, weights, window=window, reference=reference)
            except CaseTimeout:
                outcome, detail = "hang", f"over {args.timeout:g} s"
            except Exception as exc:  # noqa: BLE001 - a traceback is what we count
                outcome, detail = "other", "".join(traceback.format_exception(exc)[-3:]).strip()
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                faulthandler.cancel_dump_traceback_later()
            for leftover in out.parent.iterdir():
                leftover.unlink()
            counts[outcome] += 1
            kind = label.split(":")[1]
            by_kind.setdefault(kind, {}).setdefault(outcome, 0)
            by_kind[kind][outcome] += 1
            if outcome == "clean":
                cls, _, message = detail.partition(": ")
                # group messages by their start, without paths and numbers
                key = cls + ": " + "".join(c for c in message.replace(str(case_path), "") if not c.isdigit())[:70]
                errors[key] = errors.get(key, 0) + 1
            if outcome in ("other", "hang"):
                others.append({"case": i, "label": label, "window": window, "outcome": outcome, "detail": detail})
                if keep:
                    (keep / f"case{i}.crsic").write_bytes(data)
            if (i + 1) % 250 == 0:
                write(False)
                print(f"{i + 1}/{total} {counts} over-reads {overreads['overreads']} "
                      f"{time.perf_counter() - t0:.0f} s", flush=True)
        write(True)
    print(f"{total} cases in {time.perf_counter() - t0:.0f} s: clean {counts['clean']}, decoded {counts['decoded']}, "
          f"other {counts['other']}, hang {counts['hang']}, rANS over-reads {overreads['overreads']} -> {args.out}")
    return 0 if counts["other"] == counts["hang"] == overreads["overreads"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
