"""Networks and their weights: the registry, ELIC, the enhancer, one load / save path."""

from .elic import MIN_LEVEL, VariableRateElic, build_model, quality_to_level
from .registry import DEFAULT_MODEL, ENHANCERS, REGISTRY, WEIGHTS_DIR, EnhancerSpec, ModelSpec
from .weights import (
    LoadedEnhancer,
    LoadedModel,
    enhancer_available,
    file_sha256,
    get_enhancer,
    get_model,
    load_enhancer,
    load_model,
    read_spec,
    resolve_enhancer,
    resolve_weights,
    save_enhancer,
    save_weights,
)

__all__ = ["DEFAULT_MODEL", "ENHANCERS", "MIN_LEVEL", "REGISTRY", "WEIGHTS_DIR", "EnhancerSpec", "LoadedEnhancer",
           "LoadedModel", "ModelSpec", "VariableRateElic", "build_model", "enhancer_available", "file_sha256",
           "get_enhancer", "get_model", "load_enhancer", "load_model", "quality_to_level", "read_spec",
           "resolve_enhancer", "resolve_weights", "save_enhancer", "save_weights"]
