"""``torch.compile(opt.step)``: after warm-up no recompiles and no new graphs, the same values as eager.

Counted with torch's own counters (``CompileCounterWithBackend("aot_eager")``: no C++ compiler)."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch._dynamo.utils import counters

from scalopt.optim import registry

ELEMENTWISE = [
    n for n, e in registry.OPTIMIZERS.items() if e.scalopt and e.family in ("adam", "smoothness", "proximal")
]
WARMUP, STEPS = 6, 50


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))


def _train(name: str, nonfinite: str, compiled: bool, steps: int) -> tuple[list, object, dict]:
    """(parameters, the step's compile counter or None, the recompile counts) after ``steps`` steps."""
    model = _model()
    entry = registry.get(name)
    opt = entry.build(model.parameters(), **entry.example, nonfinite=nonfinite)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, generator=gen), torch.randn(8, 2, generator=gen)
    cnt = CompileCounterWithBackend("aot_eager") if compiled else None
    step = torch.compile(opt.step, backend=cnt) if compiled else opt.step
    marks: dict = {}
    for i in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        step()
        if cnt is not None and i + 1 == WARMUP:
            marks = {"frames": cnt.frame_count, "recompiles": sum(counters["recompiles"].values())}
    return [p.detach().clone() for p in model.parameters()], (cnt, marks), opt.metrics()


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()
    counters.clear()


FAST = {("adamw", "raise"), ("clipped-sgd", "skip")}  # the others: slow (each ~5-10 s of compiling)
CASES = [
    pytest.param(n, m, marks=() if (n, m) in FAST else pytest.mark.slow)
    for n in ELEMENTWISE
    for m in ("raise", "skip")
]


@pytest.mark.parametrize(("name", "nonfinite"), CASES)
def test_elementwise_step_compiles_once(name: str, nonfinite: str) -> None:
    params, (cnt, marks), metrics = _train(name, nonfinite, True, WARMUP + STEPS)
    assert cnt.frame_count == marks["frames"] > 0  # no new graph after warm-up
    assert sum(counters["recompiles"].values()) == marks["recompiles"]
    if nonfinite == "skip":  # a masked update: no graph break at all
        assert not counters["graph_break"]
    eager, _, eager_metrics = _train(name, nonfinite, False, WARMUP + STEPS)
    for a, b in zip(params, eager):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert metrics["steps"] == eager_metrics["steps"] == WARMUP + STEPS
    assert metrics["skipped_steps"] == 0


def _poisoned_step(nonfinite: str) -> tuple[torch.nn.Module, object, object]:
    """AdamW compiled and warmed up, then a step whose gradient holds a NaN."""
    model = _model()
    names = dict(model.named_parameters())
    opt = registry.build("adamw", list(names.items()), lr=1e-2, nonfinite=nonfinite)
    step = torch.compile(opt.step, backend="aot_eager")
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        step()
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    model[2].weight.grad[0, 1] = float("nan")
    return model, opt, step


def test_compiled_skip_is_a_masked_no_op() -> None:
    model, opt, step = _poisoned_step("skip")
    before = [p.detach().clone() for p in model.parameters()]
    state = [v.clone() for s in opt.state.values() for v in s.values()]
    step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    after = [v for s in opt.state.values() for v in s.values()]
    assert len(after) == len(state) and all(torch.equal(a, b) for a, b in zip(state, after))
    assert opt.metrics()["skipped_steps"] == 1 and opt.metrics()["steps"] == 3


def test_compiled_raise_names_the_parameter() -> None:
    model, opt, step = _poisoned_step("raise")
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(FloatingPointError, match="2.weight"):
        step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize(
    ("name", "nonfinite"),
    [
        ("shampoo", "raise"),
        pytest.param("shampoo", "skip", marks=pytest.mark.slow),
        pytest.param("soap", "raise", marks=pytest.mark.slow),
    ],
)
def test_shampoo_step_between_roots_compiles_once(name: str, nonfinite: str) -> None:
    """Root steps (every 3rd) run eagerly in the untraced prologue; the steps between them are traced."""

    def run(compiled: bool) -> tuple[list[torch.Tensor], CompileCounterWithBackend | None]:
        model = _model()
        opt = registry.build(name, model.parameters(), lr=1e-2, precondition_frequency=3, momentum=0.5)
        opt.nonfinite = nonfinite
        cnt = CompileCounterWithBackend("aot_eager") if compiled else None
        step = torch.compile(opt.step, backend=cnt) if compiled else opt.step
        gen = torch.Generator().manual_seed(1)
        x, y = torch.randn(8, 3, generator=gen), torch.randn(8, 2, generator=gen)
        for i in range(WARMUP + STEPS):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            step()
            if cnt is not None and i + 1 == WARMUP:
                run.frames, run.recompiles = cnt.frame_count, sum(counters["recompiles"].values())
        assert opt.metrics()["steps"] == WARMUP + STEPS
        return [p.detach().clone() for p in model.parameters()], cnt

    params, cnt = run(True)
    assert cnt.frame_count == run.frames > 0
    assert sum(counters["recompiles"].values()) == run.recompiles
    eager, _ = run(False)
    for a, b in zip(params, eager):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_state_after_compiled_steps_round_trips(tmp_path: object) -> None:
    """Compiled steps leave tensor steps in the state: saved, loaded with weights_only, and stepped eagerly
    the result equals the optimizer that keeps going (whose next step runs the fused kernel eagerly)."""
    model = _model()
    opt = registry.build("adamw", model.parameters(), lr=1e-2, nonfinite="skip")
    step = torch.compile(opt.step, backend="aot_eager")
    x, y = torch.randn(8, 3), torch.randn(8, 2)

    def grads(m: torch.nn.Module) -> None:
        for p in m.parameters():
            p.grad = None
        torch.nn.functional.mse_loss(m(x), y).backward()

    for _ in range(3):
        grads(model)
        step()
    assert isinstance(next(iter(opt.state.values()))["step"], torch.Tensor)
    path = tmp_path / "opt.pt"  # type: ignore[operator]
    torch.save(opt.state_dict(), path)
    clone = _model()
    clone.load_state_dict(model.state_dict())
    other = registry.build("adamw", clone.parameters(), lr=1e-2, nonfinite="skip")
    other.load_state_dict(torch.load(path, weights_only=True))
    for m, o in ((model, opt), (clone, other)):
        grads(m)
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), clone.parameters()))
    assert other.metrics()["steps"] == opt.metrics()["steps"] == 4
