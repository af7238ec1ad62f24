"""Shampoo at scale: blocked Kronecker-factored preconditioning with grafting (see ``shampoo.py``).

Files: ``blocking.py`` (the shape plan, block costs), ``grafting.py`` (graft directions, norm matching),
``preconditioner.py`` (stacked statistics and roots per shape group), ``refresh.py`` (root schedule,
failure policy), ``placement.py`` (where roots are computed: inline, host threads, a side CUDA
stream), ``guard.py`` (failed steps change nothing), ``plan.py`` (one param group's units and per-step
phases), ``distributed.py`` (comm=, over ``scalopt.optim.sharding``), ``soap.py``
(eigenvalue_correction=True: Adam in the factors' eigenbases), ``shampoo.py`` (the optimizer).
"""

from scalopt.optim.shampoo.refresh import RootFailureError
from scalopt.optim.shampoo.shampoo import Shampoo

__all__ = ["RootFailureError", "Shampoo"]
