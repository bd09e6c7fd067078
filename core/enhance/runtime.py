"""The enhancer on OpenVINO (``--runtime openvino``), with torch as reference and fallback.

The whole network (code lookup, codebook decoder, HPIN fusion, gate) is exported to ONNX once
per weights into the transforms' cache, compiled once per window shape and thread count, in
bf16 where the CPU computes it natively (``options.PRECISION_ENV``), with a stream per thread:
a raster's row of windows runs one window per thread at once (``enhance_all``). Weights files that carry
an int8 network (``training.quantize_enhancer``: an OpenVINO IR inside the safetensors) run it
instead, unless f32 is asked.

Used when ``--runtime openvino`` is asked for, and with ``auto`` (the default) when the
weights carry an int8 network. Otherwise ``auto`` keeps the enhancer on torch (in bf16 where
native): OpenVINO's float buffers take the enhanced decoding of an 8192 x 8192 raster with
enhancer-lite to 1.55-1.59 GB, over the 1.5 GB budget, where torch stays at 1.41 GB (glibc
arenas capped at 2 changed nothing: 1.545 GB). torch is also the training and reference
path, and the fallback when OpenVINO is missing or fails (one-line notice), on a GPU, and for
``onnxruntime`` (not measured for the enhancer).
Measured: per 256 px window, 1 thread, bf16, 0.221 s against torch's 0.254 s (enhancer-lite,
ad hoc); whole process with the first enhancer-fast ``results/codec_throughput_bf16_fast_enhancer.json``,
with the int8 enhancer-fast ``results/codec_throughput_int8_enhancer.json``;
memory ``results/enhancer_openvino_memory.json``; LPIPS, PSNR and FID on the val crops as with
torch (``results/eval_enhancer_lite_bf16.json``, ``training.eval_enhance`` with
``CODERSIC_RUNTIME=openvino``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..format.tiling import padded
from ..options import DEFAULT_ENHANCE_WINDOW
from ..models.runtime import (OPSET, _threads, cache_dir, cached_files, failure, notice, openvino_core, openvino_precision,
                              requested_precision, requested_runtime, runtime_problem)


def export_enhancer_onnx(net, path: Path) -> Path:
    """The enhancer as ONNX: inputs ``input`` (1, 3, H, W) in [0, 1], H and W multiples of
    ``cfg.pad_multiple``, and ``fidelity`` (1,); output the enhanced image (not clamped)."""
    import warnings

    import torch

    class Forward(torch.nn.Module):
        def __init__(self, enhancer):
            super().__init__()
            self.enhancer = enhancer

        def forward(self, x, w):  # fusion is always in the graph: at w = 0 it adds 0 * its output
            return self.enhancer(x, w)[0]

    side = net.cfg.pad_multiple * 2
    example = (torch.rand(1, 3, side, side), torch.ones(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on the fidelity test and shape arithmetic
        torch.onnx.export(Forward(net.eval()), example, str(path), input_names=["input", "fidelity"],
                          output_names=["output"], opset_version=OPSET, dynamo=False,
                          dynamic_axes={"input": {2: "height", 3: "width"}, "output": {2: "height", 3: "width"}})
    return path


def cached_enhancer_export(loaded) -> Path:
    """The enhancer's ONNX file from the cache, exported on first use."""
    return cached_files(f"{loaded.sha256[:16]}-enhancer-opset{OPSET}", {"enhancer": "enhancer.onnx"},
                        lambda folder: export_enhancer_onnx(loaded.net, folder / "enhancer.onnx"))["enhancer"]


# StripEnhancer gives one window shape (a raster smaller than the window: its own size); the
# second place serves callers with their own sizes. Every compiled network holds its own buffers.
MAX_COMPILED_SHAPES = 2


class OpenVinoEnhancer:
    """``enhance(x, fidelity)`` like ``Enhancer.enhance``, on numpy, through OpenVINO."""

    name = "openvino"

    def __init__(self, loaded, threads: int | None = None, precision: str | None = None,
                 window: int = DEFAULT_ENHANCE_WINDOW):
        self.core = openvino_core()
        # int8: the IR the weights file carries (training.quantize_enhancer), unless f32 is asked
        self.int8_ir = loaded.int8_ir if precision in (None, "int8") and requested_precision() == "auto" else None
        if precision == "int8" and self.int8_ir is None:
            raise ValueError("these enhancer weights carry no int8 network (python -m training.quantize_enhancer)")
        self.path = None if self.int8_ir else cached_enhancer_export(loaded)
        # compiled networks are kept on disk: compiling int8 takes seconds per window shape
        self._compiled_cache = (cache_dir() / f"{loaded.sha256[:16]}-enhancer-int8" if self.int8_ir
                                else self.path.parent) / "openvino"
        self.multiple = loaded.cfg.pad_multiple
        # the layers int8 leaves in float run as bf16 where native, like the float network
        self.precision = "int8" if self.int8_ir else (precision or openvino_precision(self.core))
        self.float_precision = openvino_precision(self.core) if self.int8_ir else self.precision
        self.fixed, self._compiled, self._weights = threads, {}, None
        self.loaded, self._float = loaded, None  # the float network, for fidelities int8 does not serve
        # compile here, where the caller can still fall back, at the windows' size, and keep it:
        # StripEnhancer runs every window at that size (edge windows grow inwards)
        self.window = window
        side = padded(window, self.multiple)
        self._compile(side, side)

    def _compile(self, h: int, w: int):
        """The network compiled for (h, w) windows, with one infer request per stream."""
        threads = _threads(self.fixed)
        key = (h, w, threads)
        if key in self._compiled:
            self._compiled[key] = self._compiled.pop(key)  # most recently used last
        else:
            while len(self._compiled) >= MAX_COMPILED_SHAPES:  # memory: each holds its buffers
                self._compiled.pop(next(iter(self._compiled)))
            model = self._read()  # not kept: the compiled network suffices
            model.reshape({"input": [1, 3, h, w], "fidelity": [1]})
            # one window per thread at once (see enhance_all); with one thread this is LATENCY's plan
            config = {"INFERENCE_PRECISION_HINT": self.float_precision, "PERFORMANCE_HINT": "THROUGHPUT",
                      "NUM_STREAMS": threads, "INFERENCE_NUM_THREADS": threads,
                      "CACHE_DIR": str(self._compiled_cache)}
            compiled = self.core.compile_model(model, "CPU", config)
            self._compiled[key] = (compiled, [compiled.create_infer_request() for _ in range(threads)])
        return self._compiled[key]

    def _read(self):
        if self.int8_ir is None:
            return self.core.read_model(str(self.path))
        from openvino import Tensor

        if self._weights is None:  # OpenVINO keeps pointing into this buffer: it lives as long as we do
            self._weights = np.frombuffer(self.int8_ir[1], np.uint8).copy()
        return self.core.read_model(self.int8_ir[0].decode(), Tensor(self._weights))

    def enhance(self, x: np.ndarray, fidelity: float) -> np.ndarray:
        """(1, 3, h, w) float32 in [0, 1], any size -> enhanced, same size, clamped to [0, 1]."""
        return self.enhance_all([x], fidelity)[0]

    def enhance_all(self, xs: list[np.ndarray], fidelity: float) -> list[np.ndarray]:
        """``enhance`` of each window, a window per thread at once (streams): on 2 cores about
        x1.2 the windows per second of each window on both threads (ad hoc, int8 enhancer-fast,
        256 px: 0.044-0.051 s against 0.053-0.063 s a window); the same network and results."""
        if self.int8_ir is not None and fidelity != self.loaded.int8_fidelity:
            if self._float is None:  # int8 is calibrated at one fidelity (training.quantize_enhancer)
                self._float = OpenVinoEnhancer(self.loaded, self.fixed, self.float_precision, self.window)
            return self._float.enhance_all(xs, fidelity)
        inputs = []
        for x in xs:
            h, w = x.shape[-2:]
            ph, pw = (-h) % self.multiple, (-w) % self.multiple
            inputs.append(np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="edge") if ph or pw else x)
        out, w_in, i = [], np.array([fidelity], np.float32), 0
        while i < len(xs):  # a batch: up to one window per stream, all of one shape
            shape = inputs[i].shape[-2:]
            _, requests = self._compile(*shape)
            batch = []
            while i < len(xs) and len(batch) < len(requests) and inputs[i].shape[-2:] == shape:
                request = requests[len(batch)]
                request.start_async([np.ascontiguousarray(inputs[i], dtype=np.float32), w_in], share_inputs=False)
                batch.append((request, xs[i].shape[-2:]))
                i += 1
            for request, (h, w) in batch:
                request.wait()
                out.append(np.clip(request.get_output_tensor(0).data[..., :h, :w], 0, 1))  # a copy
        return out


def enhancer_runtime(loaded, window: int = DEFAULT_ENHANCE_WINDOW):
    """What enhances ``window``-sized windows in this process: ``OpenVinoEnhancer``, or the
    torch network (see the module docstring). The int8 path never builds the torch network."""
    from ..models.files import LoadedEnhancer

    requested = requested_runtime()
    wanted = requested == "openvino" or (requested == "auto" and getattr(loaded, "int8_ir", None) is not None)
    if not isinstance(loaded, LoadedEnhancer) or not wanted or loaded.device != "cpu":
        return loaded.net  # stand-ins, other runtimes, GPUs
    problem = runtime_problem("openvino")
    if problem is None:
        try:
            return OpenVinoEnhancer(loaded, window=window)
        except Exception as exc:  # a broken install or export must not stop the job
            problem = failure(exc)
    notice(f"enhancer on openvino {problem}: using torch")
    return loaded.net
