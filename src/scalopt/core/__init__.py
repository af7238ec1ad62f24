"""The core layer: the optimizer base, transforms protocol and chain adapter, validation.

The torch-using names load on first access, so ``scalopt.core.validate`` (plain Python, used by the
NumPy-only ``scalopt.theory``) imports without torch. ``scalopt.core.chain`` is the submodule (its
``chain`` function is ``scalopt.core.chain.chain``): a lazy package attribute of the same name as a
submodule would change meaning once the submodule is imported.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module it lives in (imported on first access)
_EXPORTS: dict[str, str] = {
    "ChainOptimizer": "scalopt.core.chain",
    "GroupBatch": "scalopt.core.chain",
    "ScaloptOptimizer": "scalopt.core.base",
    "StepContext": "scalopt.core.chain",
    "Transform": "scalopt.core.chain",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'scalopt.core' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = list(_EXPORTS)
