"""The shampoo-gpu suite at a tiny size on the CPU, --device / --autocast, the gpt57m preset."""

from __future__ import annotations

import json

import pytest
import torch

from scalopt import workloads
from scalopt.bench import RunSpec, run_specs
from scalopt.bench.suites import build, get
from scalopt.bench.suites.shampoo_gpu import RUNS, shampoo_gpu
from scalopt.cli import main
from scalopt.report import render


def test_the_tiny_suite_runs_on_the_cpu_and_its_report_has_the_gpu_columns(tmp_path):
    specs = shampoo_gpu(1, device="cpu", tiny=True)
    assert [s.label for s in specs] == [label for label, _, h in RUNS if h.get("root_device") != "device"]
    assert all(s.device == "cpu" and s.autocast == "bf16" for s in specs)
    headers = run_specs(specs, tmp_path, progress=False, checkpoint_every=None, log=lambda *_: None)
    assert all(h["status"] == "done" and h["device"] == "cpu" and h["autocast"] == "bf16" for h in headers)
    assert "peak_memory_bytes" not in headers[0]  # CUDA only
    report = render(tmp_path).read_text()
    assert "median fwd+bwd (ms)" in report and "peak memory" in report and "cpu, bf16 autocast" in report
    assert "Shampoo host roots" in report
    assert list(tmp_path.glob("*wall*.png"))


def test_the_full_suite_is_the_gpt57m_preset_with_device_roots_on_cuda():
    specs = get("shampoo-gpu")(1)
    assert len(specs) == 5 and {s.device for s in specs} == {"cuda"}
    assert specs[0].hparams == {"lr": 1e-3, "weight_decay": 0.0, "fused": True}
    assert specs[-1].hparams["root_device"] == "device"
    assert all(s.workload_overrides == {"preset": "gpt57m"} and s.steps == 400 for s in specs)


def test_preset_matches_the_gpu_model_and_fields_still_override_it():
    wl = workloads.get("stdlib-lm", preset="gpt57m")
    assert (wl.d_model, wl.n_layers, wl.n_heads, wl.seq_len, wl.batch_size) == (768, 8, 12, 256, 32)
    assert workloads.get("stdlib-lm", preset="gpt57m", n_layers=2).n_layers == 2
    with pytest.raises(ValueError, match="preset"):
        workloads.get("stdlib-lm", preset="huge")


def test_device_and_autocast_are_validated_and_default_runs_keep_their_identity():
    base = dict(workload="digits", optimizer="adam", steps=3)
    assert "device" not in RunSpec(**base).to_dict() and "autocast" not in RunSpec(**base).to_dict()
    assert RunSpec(**base, device="cuda").run_id != RunSpec(**base).run_id
    with pytest.raises(ValueError, match="device"):
        RunSpec(**base, device="tpu")
    with pytest.raises(ValueError, match="autocast"):
        RunSpec(**base, autocast="fp8")
    assert [s.device for s in build("quick", 1, device="cpu", autocast="bf16")][:1] == ["cpu"]
    assert {s.autocast for s in build("quick", 1, autocast="bf16")} == {"bf16"}


def test_cli_device_flag(tmp_path, capsys):
    argv = ["train", "--workload", "digits", "--optimizer", "adam", "--steps", "2", "--eval-every", "2"]
    assert (
        main([*argv, "--device", "cpu", "--autocast", "bf16", "--out", str(tmp_path), "--no-progress"]) == 0
    )
    header = json.loads(next(tmp_path.glob("runs/*/header.json")).read_text())
    assert (
        header["device"] == "cpu"
        and header["autocast"] == "bf16"
        and header["environment"]["device"] == "cpu"
    )
    if not torch.cuda.is_available():
        assert main([*argv, "--device", "cuda", "--out", str(tmp_path / "x")]) == 2
        assert "--device cuda" in capsys.readouterr().err and not (tmp_path / "x").exists()
