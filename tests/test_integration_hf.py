"""The Hugging Face Trainer drives scalopt optimizers, offline: a tiny Llama built from a config,
generated tokens, ``optimizers=(optimizer, scheduler)`` and ``optimizer_cls_and_kwargs``, and
resuming from a Trainer checkpoint (optimizer.pt is loaded with ``weights_only=True``)."""

from __future__ import annotations

import os
import socket

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
pytest.importorskip("transformers", reason="the scalopt[hf] extra is not installed")
pytest.importorskip("accelerate", reason="the scalopt[hf] extra is not installed")

pytestmark = pytest.mark.slow  # each test trains through the HF Trainer (several seconds)

import scalopt  # noqa: E402
from integration_helpers import load_example  # noqa: E402

example = load_example("hf_trainer")
STEPS = 8


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _inner(trainer) -> torch.optim.Optimizer:
    return getattr(trainer.optimizer, "optimizer", trainer.optimizer)  # accelerate's wrapper


def _trajectory(trainer) -> list[float]:
    trainer.train()
    return example.losses(trainer)


def test_optimizers_tuple_trains_with_its_scheduler(tmp_path):
    trainer = example.make_trainer("optimizers", str(tmp_path), STEPS)
    losses = _trajectory(trainer)
    opt = _inner(trainer)
    assert isinstance(opt, scalopt.Shampoo)
    assert len(losses) == STEPS
    assert sum(losses[-2:]) < sum(losses[:2]) - 0.2  # it learns the counting sequences
    assert opt.metrics()["steps"] == STEPS
    assert opt.metrics()["blocks"] > 0
    assert trainer.lr_scheduler.last_epoch == STEPS  # the scheduler stepped once per optimizer step
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine to 0 at T_max


def test_optimizer_cls_and_kwargs_matches_torch_adamw(tmp_path):
    # the Trainer builds the optimizer on its decay / no-decay groups and drives it with its own
    # schedule; scalopt.AdamW must follow torch.optim.AdamW through the same path
    kw = {"weight_decay": 0.1}
    ours = example.make_trainer("cls-kwargs", str(tmp_path / "a"), STEPS, **kw)
    ours_losses = _trajectory(ours)
    opt = _inner(ours)
    assert isinstance(opt, scalopt.AdamW)
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.1]
    theirs = example.make_trainer("cls-kwargs", str(tmp_path / "b"), STEPS, **kw)
    theirs.optimizer_cls_and_kwargs = (torch.optim.AdamW, dict(theirs.optimizer_cls_and_kwargs[1]))
    theirs_losses = _trajectory(theirs)
    assert isinstance(_inner(theirs), torch.optim.AdamW)
    torch.testing.assert_close(ours_losses, theirs_losses, rtol=1e-5, atol=1e-6)
    for a, b in zip(ours.model.parameters(), theirs.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # measured: 1.6e-7


def test_resume_from_trainer_checkpoint_is_bitwise(tmp_path):
    assert example.resume_deviation("optimizers", str(tmp_path), STEPS, STEPS // 2) == 0.0
