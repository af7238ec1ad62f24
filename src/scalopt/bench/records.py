"""Self-describing run records: ``header.json`` + ``rows.jsonl`` per run directory.

The header holds the resolved config, the seeds, the git SHA and dirty flag, Python/torch
versions, device, world size, torch threads and the workload's description (with its data hash).
Each row is one logged step: ``step``, ``loss`` (train), ``step_time`` (seconds in
``opt.step()``), ``wall`` (seconds since the run started, excluding evaluation), eval metrics as
``eval_<name>``, optimizer metrics as ``opt_<name>``, and communication counters when there are
any. A run is finished when its header says ``"status": "done"``.

One writer at a time: ``run_lock(run_dir)`` holds an exclusive ``fcntl`` lock on ``run_dir/lock``
while a run writes there; a second writer gets ``RunLockedError`` naming the holder's pid. On
resume the rows are de-duplicated by step (the last one logged for a step wins) and put in step
order, so a record stays one row per step whatever happened to it before.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

HEADER = "header.json"
ROWS = "rows.jsonl"
LOCK = "lock"


class RunLockedError(RuntimeError):
    """Another process is writing the run directory."""


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` for the block, or raise ``RunLockedError`` at once."""
    import fcntl  # POSIX; the benchmark runs on Linux and macOS

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    f = (run_dir / LOCK).open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "unknown pid"
        f.close()
        raise RunLockedError(
            f"run directory {run_dir} is being written by another scalopt process ({holder}); "
            "wait for it or stop it, then run again with --resume"
        ) from None
    try:
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no inf/nan; readers turn these strings back into floats
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def git_info() -> dict[str, Any]:
    """SHA and dirty flag of the checkout the package runs from (``None`` outside a git tree)."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return {"sha": sha, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def environment(device: torch.device | None = None) -> dict[str, Any]:
    device = torch.device("cpu") if device is None else device
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "git": git_info(),
    }


def write_header(run_dir: Path, header: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / (HEADER + ".tmp")
    tmp.write_text(json.dumps(_plain(header), indent=2, sort_keys=True))
    tmp.replace(run_dir / HEADER)


def read_header(run_dir: Path) -> dict[str, Any]:
    """The header as written, with the "nan"/"inf" strings of its numbers turned back into floats."""
    return _restore(json.loads((run_dir / HEADER).read_text()))


def _restore(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v) for v in value]
    return _float(value)


class RowWriter:
    """Appends rows as they come (flushed, so a crash keeps everything logged so far)."""

    def __init__(self, run_dir: Path, keep_until: int | None = None) -> None:
        path = run_dir / ROWS
        rows = read_rows(run_dir) if path.exists() else []
        if keep_until is not None:  # resuming: drop rows logged after the checkpoint, one row per step
            by_step = {r["step"]: r for r in rows if r["step"] <= keep_until}
            rows = [by_step[k] for k in sorted(by_step)]
        else:
            rows = []
        with path.open("w") as f:
            for row in rows:
                f.write(json.dumps(_plain(row)) + "\n")
        self._file = path.open("a")

    def write(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(_plain(row)) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _float(value: Any) -> Any:
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    return value


def read_rows(run_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for line in (run_dir / ROWS).read_text().splitlines():
        if line.strip():
            rows.append({k: _float(v) for k, v in json.loads(line).items()})
    return rows


def list_runs(out_dir: Path) -> list[Path]:
    """Run directories under ``out_dir/runs`` that have a header, sorted by name."""
    root = Path(out_dir) / "runs"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / HEADER).exists())
