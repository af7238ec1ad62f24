"""The closure protocol: optimizers that differentiate the loss themselves (Hessian-vector products).

Most optimizers read ``p.grad`` after the caller's ``loss.backward()``. An optimizer that needs the
loss more than once per step — at other points on the same batch (OASIS), or on fresh batches at
points it chooses (HVP-RVR) — sets the class attribute ``closure_protocol`` and is stepped as

    opt.step(closure)                   closure_protocol == "loss"
    opt.step(closure, sample)           closure_protocol == "loss+sample"

- ``closure()`` returns the scalar loss of the *current* batch at the parameters' current values.
  It must not call ``backward()`` (nor zero gradients): the optimizer calls
  ``torch.autograd.grad(loss, params, create_graph=True)`` itself and differentiates the gradient
  again for Hessian-vector products. It may be called several times per step, after the optimizer
  has temporarily loaded other values into the parameters (they are restored before ``step``
  returns).
- ``sample()`` draws a *fresh* batch — independent of every batch drawn before — and returns its
  scalar loss at the parameters' current values, also without ``backward()``. Every call consumes
  one batch from the caller's data stream.

Both run with gradients enabled and under the math scaled-dot-product-attention backend
(``torch.nn.attention.sdpa_kernel(SDPBackend.MATH)``): the fused CPU/GPU attention kernels have no
double backward. ``p.grad`` is neither read nor written. Without a closure (or without ``sample``
where the protocol needs it) ``step`` raises ``ValueError`` saying what is missing.

``SecondOrderOptimizer`` holds what such optimizers share: the argument checks, evaluating a
closure into per-group gradient batches (the shape ``ScaloptOptimizer.check_finite`` takes),
Hessian-vector products (counted in ``metrics()['hvps']``; gradient evaluations in
``metrics()['gradients']``), Rademacher vectors from the optimizer's own ``torch.Generator`` (its
state travels in ``state_dict``), and loading parameter values temporarily.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from scalopt.core.base import ScaloptOptimizer
from scalopt.core.validate import check_int

LOSS = "loss"
LOSS_AND_SAMPLE = "loss+sample"
PROTOCOLS = (LOSS, LOSS_AND_SAMPLE)

Closure = Callable[[], torch.Tensor]
#: (group, indices into group["params"], params, gradients) — one entry per group with gradients
Batch = tuple[dict[str, Any], list[int], list[torch.Tensor], list[torch.Tensor]]


def closure_protocol(obj: Any) -> str | None:
    """``"loss"``, ``"loss+sample"``, or ``None`` for optimizers stepped after ``loss.backward()``."""
    return getattr(obj, "closure_protocol", None)


@contextlib.contextmanager
def second_order_mode() -> Iterator[None]:
    """Gradients on, attention through the math backend (which has a double backward)."""
    with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
        yield


class SecondOrderOptimizer(ScaloptOptimizer):
    """Base of the optimizers that take a loss closure and form Hessian-vector products."""

    closure_protocol: ClassVar[str] = LOSS
    dtensor_unsupported = (
        "its Hessian-vector products differentiate the gradient with respect to the parameters, which "
        "FSDP2 all-gathers and frees around each forward and backward; train it unsharded or with DDP"
    )

    def __init__(
        self, params: Iterable[Any], defaults: dict[str, Any], *, seed: int = 0, nonfinite: str = "raise"
    ) -> None:
        self.seed = check_int("seed", seed)
        super().__init__(params, defaults, nonfinite=nonfinite)
        self._counters.update({"gradients": 0, "hvps": 0})
        first = self.param_groups[0]["params"][0]
        device = first.device if first.device.type != "meta" else torch.device("cpu")
        self.generator = torch.Generator(device=device).manual_seed(seed)

    # -- the protocol ------------------------------------------------------------------------
    def require(self, closure: Closure | None, sample: Closure | None = None) -> None:
        name = type(self).__name__
        if closure is None or not callable(closure):
            raise ValueError(
                f"{name}.step needs closure: a callable returning the loss of the current batch without "
                f"calling backward() ({name} differentiates it itself, twice for Hessian-vector "
                f"products); got {closure!r}. Use opt.step(lambda: loss_fn(model, batch))"
            )
        if self.closure_protocol == LOSS_AND_SAMPLE and (sample is None or not callable(sample)):
            raise ValueError(
                f"{name}.step needs sample: a callable that draws a fresh batch and returns its loss "
                f"without calling backward() (used for the resets' extra batches and the "
                f"Hessian-vector products); got {sample!r}. Use opt.step(closure, sample=lambda: "
                f"loss_fn(model, next(batches)))"
            )

    def trainable(self) -> list[tuple[dict[str, Any], list[int], list[torch.Tensor]]]:
        """(group, indices, params) of every parameter that requires a gradient."""
        out = []
        for group in self.param_groups:
            idx = [i for i, p in enumerate(group["params"]) if p.requires_grad]
            if idx:
                out.append((group, idx, [group["params"][i] for i in idx]))
        return out

    def gradients(
        self,
        fn: Closure,
        trainable: Sequence[tuple[dict[str, Any], list[int], list[torch.Tensor]]],
        *,
        create_graph: bool,
    ) -> tuple[torch.Tensor, list[Batch]]:
        """Evaluate ``fn`` and differentiate it: (loss, batches of the parameters it depends on).

        With ``create_graph`` the gradients carry their graph (for Hessian-vector products)."""
        flat = [p for _, _, params in trainable for p in params]
        with second_order_mode():
            loss = fn()
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ValueError(f"the closure must return a scalar loss tensor, got {loss!r}")
            grads = (
                torch.autograd.grad(loss, flat, create_graph=create_graph, allow_unused=True)
                if loss.requires_grad
                else [None] * len(flat)
            )
        self.count("gradients")
        batches: list[Batch] = []
        it = iter(grads)
        for group, idx, params in trainable:
            keep = [(i, p, g) for i, p, g in zip(idx, params, it) if g is not None]
            for i, _, g in keep:
                if g.is_sparse:
                    raise RuntimeError(
                        f"{type(self).__name__} does not support sparse gradients "
                        f"({self.param_name(group, i)}); build the embedding with sparse=False"
                    )
            if keep:
                batches.append((group, [k[0] for k in keep], [k[1] for k in keep], [k[2] for k in keep]))
        return loss.detach(), batches

    def hvp(
        self, batches: list[Batch], vectors: list[list[torch.Tensor]], *, retain_graph: bool = False
    ) -> list[list[torch.Tensor]]:
        """∇²F·v for the gradients in ``batches`` (built with ``create_graph=True``), per batch.

        ``retain_graph=True`` keeps the gradients' graph for another product at the same point."""
        params = [p for _, _, ps, _ in batches for p in ps]
        grads = [g for _, _, _, gs in batches for g in gs]
        vs = [v for vb in vectors for v in vb]
        with second_order_mode():
            hv = torch.autograd.grad(
                grads, params, grad_outputs=vs, retain_graph=retain_graph, allow_unused=True
            )
        self.count("hvps")
        flat = [h.detach() if h is not None else torch.zeros_like(p) for h, p in zip(hv, params)]
        out, start = [], 0
        for _, _, ps, _ in batches:
            out.append(flat[start : start + len(ps)])
            start += len(ps)
        return out

    def rademacher(self, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Independent ±1 vectors shaped like ``params``, drawn in order from the optimizer's generator."""
        dev = self.generator.device
        return [
            (torch.randint(0, 2, p.shape, generator=self.generator, device=dev) * 2 - 1).to(p) for p in params
        ]

    def uniform(self, n: int = 1) -> torch.Tensor:
        """``n`` draws of U[0, 1) from the optimizer's generator, as float64 on the CPU."""
        return torch.rand(
            n, generator=self.generator, device=self.generator.device, dtype=torch.float64
        ).cpu()

    @staticmethod
    @contextlib.contextmanager
    def loaded(params: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> Iterator[None]:
        """Temporarily set ``params`` to ``values``; the original values are restored on exit."""
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            torch._foreach_copy_(list(params), list(values))
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(list(params), saved)

    # -- state ---------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        """Optimizer-wide state beyond the per-parameter ``state`` (subclasses extend it)."""
        return {}

    def load_extra_state(self, extra: dict[str, Any]) -> None:
        """Restore what ``extra_state`` returned."""

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["second_order"] = {"rng": self.generator.get_state(), **self.extra_state()}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("second_order", None)
        super().load_state_dict(state_dict)
        if extra is not None:
            self.generator.set_state(extra["rng"].cpu())
            self.load_extra_state(extra)
