"""Gradient transforms: the named steps element-wise optimizers are chained from."""

from scalopt.transforms.adam import scale_by_adam
from scalopt.transforms.clip import clip_by_global_norm
from scalopt.transforms.momentum import trace
from scalopt.transforms.normalize import normalize_by_global_norm
from scalopt.transforms.proximal import add_proximal_pull, scale_by_sawtooth
from scalopt.transforms.sign import scale_by_generalized_sign
from scalopt.transforms.weight_decay import add_weight_decay

__all__ = [
    "add_proximal_pull",
    "add_weight_decay",
    "clip_by_global_norm",
    "normalize_by_global_norm",
    "scale_by_adam",
    "scale_by_generalized_sign",
    "scale_by_sawtooth",
    "trace",
]
