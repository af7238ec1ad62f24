"""Lightning drives scalopt optimizers: configure_optimizers with a per-step scheduler, a Trainer
checkpoint that loads with ``weights_only=True``, and resuming with ``ckpt_path``.

The bound: a scalopt optimizer's resumed run ends no farther from its uninterrupted run than
``torch.optim.AdamW``'s does in the same harness. At an epoch end Lightning resumes exactly, so
both deviations are 0 (bitwise). Inside an epoch Lightning replays the epoch's first batches
(a plain DataLoader is not resumable; it warns), which moves torch's AdamW as much as scalopt's.
"""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("lightning", reason="the scalopt[lightning] extra is not installed")

pytestmark = pytest.mark.slow  # each test runs a Lightning Trainer (several seconds)

from integration_helpers import load_example  # noqa: E402

example = load_example("lightning_shampoo")
EPOCHS = 4  # 8 steps per epoch, 32 in all
_torch_deviation: dict[int, float] = {}


def _run(optimizer: str, stop_step: int, tmp_path) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's tips and the mid-epoch resume warning
        return example.run(optimizer, epochs=EPOCHS, stop_step=stop_step, root=str(tmp_path))


def _torch_baseline(stop_step: int, tmp_path) -> float:
    if stop_step not in _torch_deviation:
        _torch_deviation[stop_step] = _run("torch-adamw", stop_step, tmp_path)["deviation"]
    return _torch_deviation[stop_step]


@pytest.mark.parametrize("optimizer", ["shampoo", "shampoo-async", "scalopt-adamw"])
def test_resume_at_epoch_end_is_bitwise(optimizer, tmp_path):
    # step 16 ends epoch 2; Shampoo's roots were refreshed at steps 5, 10, 15 (async: one pending)
    torch_dev = _torch_baseline(16, tmp_path)
    result = _run(optimizer, 16, tmp_path)
    assert result["checkpoint_step"] == 16
    assert result["final_loss"] < result["initial_loss"]
    assert torch_dev == 0.0  # what Lightning gives torch's own AdamW here
    assert result["deviation"] <= torch_dev


def test_resume_mid_epoch_no_worse_than_torch_adamw(tmp_path):
    torch_dev = _torch_baseline(12, tmp_path)
    result = _run("scalopt-adamw", 12, tmp_path)
    assert result["checkpoint_step"] == 12
    assert result["deviation"] <= torch_dev + 1e-6


def test_checkpoint_holds_scalopt_state_and_scheduler(tmp_path):
    model = example.Regressor("shampoo", total_steps=8)
    trainer = example.make_trainer(str(tmp_path), max_steps=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, torch.utils.data.DataLoader(example.make_data(96), batch_size=16))
    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    (opt_state,) = ckpt["optimizer_states"]
    (sched_state,) = ckpt["lr_schedulers"]
    assert opt_state["scalopt"]["shampoo"]["world_size"] == 1
    assert any(k.startswith("block") and k.endswith("root0") for s in opt_state["state"].values() for k in s)
    assert sched_state["last_epoch"] == 6  # stepped once per training step
    opt = trainer.optimizers[0]
    expected = 0.5 * 3e-3 * (1 + torch.cos(torch.tensor(6 / 8 * torch.pi)).item())
    assert opt.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-6)
