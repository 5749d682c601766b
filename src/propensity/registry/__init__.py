"""Model registry: versions with weights, metadata and reference statistics; a champion pointer.

`load_model(cfg, version=None) -> (PropensityModel, metadata)` is what scoring and explanations
use; torch is imported only when a model is loaded.
"""

from propensity.registry.store import load_model

__all__ = ["load_model"]
