"""TRSGD and TRAdam: SGD with heavy-ball momentum / Adam on a proximal objective whose centre moves.

A proximal term centred at a recent iterate makes every S-step window of training strongly convex
and damps the noise of small batches; within each window the step size decays as η/(s+1):

    hyperparameters: η = lr (scheduled), S = period, λ_w = prox_weight, μ = momentum, wd = weight_decay
    each step, for every parameter x (s ∈ {0, …, S−1} its inner step, starting at 0):
        if s = 0:  x̃ ← x                              the anchor
        λ = λ_w/η                                     η the group's current lr
        d = ∇f_B(x) + 2λ·(x − x̃) + wd·x              gradient of f + λ‖x − x̃‖², coupled decay
        TRSGD:   buf ← μ·buf + d ;  x ← x − (η/(s+1))·buf        (no dampening, no Nesterov)
        TRAdam:  Adam on d (β1, β2, ε, bias correction, its own step count), step size η/(s+1)
        s ← (s + 1) mod S

Because λ = λ_w/η, a scheduler that decays η by 10 strengthens the pull by 10 (0.1 → 1 → 10 with
the defaults across two decays), as in the authors' code. Special cases (exact): S = 1 gives
x̃ = x at every step and step size η: TRSGD is ``torch.optim.SGD(momentum=μ, weight_decay=wd)`` and
TRAdam ``torch.optim.Adam(weight_decay=wd)``; λ_w = 0 is SGD (Adam) with the sawtooth step η/(s+1).

Arguments (defaults from the authors' code): ``lr`` 0.1 (TRSGD) / 1e-3 (TRAdam), ``period`` S 10,
``prox_weight`` λ_w = 0.1·lr when None, ``momentum`` μ 0.9 (TRSGD), ``betas`` (0.9, 0.999) and ``eps``
1e-8 (TRAdam), ``weight_decay`` 0. Deviation: the paper's runs use weight decay 1e-4; the default
here is 0, as in ``torch.optim``, so that the S = 1 reductions hold with default arguments. The
inner counter is per parameter (its step count mod S), not passed by the training loop; parameters
added later run their own cycle. Nothing is communicated.

State: the anchor x̃ (one copy of each parameter, when S > 1), the momentum buffer (TRSGD) or
Adam's two moments (TRAdam). A group with lr = 0 takes no step and skips the pull.

Reference: Y. Zhang, H. Qu, C. Chen, D. Metaxas, "Taming the Noisy Gradient: Train Deep Neural
Networks with Small Batch Sizes", IJCAI 2019, pp. 4348–4354, doi 10.24963/ijcai.2019/604.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from scalopt.core.chain import ChainOptimizer, chain
from scalopt.core.validate import check_betas, check_int, check_interval, check_lr, check_nonnegative
from scalopt.transforms import add_weight_decay, scale_by_adam, trace
from scalopt.transforms.proximal import add_proximal_pull, scale_by_sawtooth

_COMMON = {
    "lr": check_lr,
    "period": lambda n, v: check_int(n, v, minimum=1),
    "prox_weight": check_nonnegative,
    "weight_decay": check_nonnegative,
}


def _prox_weight(prox_weight: float | None, lr: Any) -> Any:
    if prox_weight is not None:
        return prox_weight
    return 0.1 * check_lr("lr", lr)


def _init(
    opt: ChainOptimizer,
    params: Iterable[Any],
    direction: Any,
    lr: float,
    period: int,
    prox_weight: float | None,
    hp: dict[str, Any],
    weight_decay: float,
    nonfinite: str,
) -> None:
    """The shared chain: proximal pull, L2 decay, the method's ``direction``, the sawtooth step sizes."""
    defaults = {"lr": lr, "period": period, "prox_weight": _prox_weight(prox_weight, lr), **hp}
    defaults["weight_decay"] = weight_decay
    transforms = chain(add_proximal_pull(), add_weight_decay(decoupled=False), direction, scale_by_sawtooth())
    ChainOptimizer.__init__(opt, params, defaults, transforms, nonfinite=nonfinite)


class TRSGD(ChainOptimizer):
    hyperparameters = {**_COMMON, "momentum": lambda n, v: check_interval(n, v, 0.0, 1.0)}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.1,
        period: int = 10,
        prox_weight: float | None = None,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        *,
        nonfinite: str = "raise",
    ) -> None:
        hp = {"momentum": momentum}
        _init(self, params, trace(), lr, period, prox_weight, hp, weight_decay, nonfinite)


class TRAdam(ChainOptimizer):
    hyperparameters = {**_COMMON, "betas": check_betas, "eps": check_nonnegative}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        period: int = 10,
        prox_weight: float | None = None,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        nonfinite: str = "raise",
    ) -> None:
        hp = {"betas": betas, "eps": eps}
        _init(self, params, scale_by_adam(), lr, period, prox_weight, hp, weight_decay, nonfinite)
