"""Gradient transforms: the named steps element-wise optimizers are chained from."""

from scalopt.transforms.adam import scale_by_adam
from scalopt.transforms.clip import clip_by_global_norm
from scalopt.transforms.momentum import trace
from scalopt.transforms.normalize import normalize_by_global_norm
from scalopt.transforms.sign import scale_by_generalized_sign
from scalopt.transforms.weight_decay import add_weight_decay

__all__ = [
    "add_weight_decay",
    "clip_by_global_norm",
    "normalize_by_global_norm",
    "scale_by_adam",
    "scale_by_generalized_sign",
    "trace",
]
