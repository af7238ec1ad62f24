"""The core layer: the optimizer base, transforms protocol and chain adapter, validation."""

from scalopt.core.base import ScaloptOptimizer
from scalopt.core.chain import ChainOptimizer, GroupBatch, StepContext, Transform, chain

__all__ = ["ChainOptimizer", "GroupBatch", "ScaloptOptimizer", "StepContext", "Transform", "chain"]
