"""Networks and their weights: the registry, ELIC, the enhancer, one load / save path.

Names are imported on first use (PEP 562): the registry and the weights files' helpers
need no torch, so decoding and encoding, which run on NumPy and an inference runtime,
start without importing it.
"""

from .. import lazy_exports

_WHERE = {
    "MIN_LEVEL": "registry", "VariableRateElic": "elic", "build_model": "elic", "quality_to_level": "registry",
    "DEFAULT_MODEL": "registry", "ENHANCERS": "registry", "REGISTRY": "registry", "WEIGHTS_DIR": "registry",
    "EnhancerSpec": "registry", "ModelSpec": "registry",
    "ModelInfo": "files", "file_sha256": "files", "model_info": "files", "read_spec": "files",
    "resolve_weights": "files",
    "LoadedEnhancer": "files", "LoadedModel": "weights", "enhancer_available": "files",
    "get_enhancer": "files", "get_model": "weights", "load_enhancer": "files", "load_model": "weights",
    "resolve_enhancer": "files", "save_enhancer": "weights", "save_weights": "weights",
}

__all__ = sorted(_WHERE)
__getattr__ = lazy_exports(__name__, _WHERE)
