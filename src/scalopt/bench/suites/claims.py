"""The ``claims`` suite: every seed paper's claim, one small experiment each, with a verdict.

    scalopt bench --suite claims --out runs/claims

Ten claims (``claims_rules.CLAIMS``), each measured by one small experiment on the embedded
workloads (``claims_specs``, ``claims_extra``) and judged by a rule written before any run
(``claims_rules``: pure functions of the measured numbers, the thresholds each claim states). The
report's first table is claim → setting → measured figure → verdict (holds / does not hold /
inconclusive). A claim whose code does not exist in this version (an import check) is shown as
``inconclusive — not available``, never skipped.

Stages (``run_suite``), all into one output directory:

1. every RunSpec experiment (claims 1–7 without a network, 9), through the ordinary runner;
2. claim 7's network, fixed by a rule from stage 1's synchronous run (``calibrate_overlap``), and its
   two runs under it (real gloo processes: the only wall-clock claim about communication);
3. Hogwild! (claim 8, shared-memory processes) and the certificate (claim 10, NumPy);
4. the run time and the load average before and after each stage go to ``OUT/claims/meta.json``.

``scalopt report OUT`` recomputes every figure and verdict from the records (never trains). Each
experiment runs at seed 0 only; learning rates are tuned where the claim says so (claims 1 and 5),
elsewhere they come from the suite that studies the method. ``size="tiny"`` runs the same pipeline
in seconds (tests).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from scalopt.bench.runner import run_specs, write_manifest
from scalopt.bench.spec import RunSpec
from scalopt.bench.suites import claims_extra as extra
from scalopt.bench.suites import claims_measure as measure
from scalopt.bench.suites import claims_specs as cs
from scalopt.bench.suites.claims_measure import CLAIMS_DIR, Result

SUITE = "claims"
META = "meta.json"
MEASURES = (
    measure.measure_1,
    measure.measure_2,
    measure.measure_3,
    measure.measure_4,
    measure.measure_5,
    measure.measure_6,
    measure.measure_7,
    extra.measure_8,
    extra.measure_9,
    extra.measure_10,
)


def stage1(size: cs.Size) -> list[RunSpec]:
    groups = [cs.claim1, cs.claim2, cs.claim3, cs.claim4, cs.claim5, cs.claim6, extra.claim9]
    specs = [spec for group in groups for spec in group(size).values()]
    return specs + list(cs.claim7(size, None).values())


def claims(seeds: int = 1, size: str = "full") -> list[RunSpec]:
    """The RunSpecs known before any run (claim 7's network runs are added by ``run_suite``)."""
    return stage1(cs.SIZES[size])


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def run_suite(
    out_dir: Path,
    *,
    seeds: int = 1,
    resume: bool = False,
    threads: int = 1,
    checkpoint_every: int | None = 100,
    progress: bool = True,
    log: Any = print,
    size: str = "full",
) -> list[Result]:
    """Run every stage into ``out_dir`` and return the verdicts (see the module docstring)."""
    if size not in cs.SIZES:
        raise ValueError(f"size must be one of {', '.join(cs.SIZES)}, got {size!r}")
    if seeds != 1:
        log(f"claims: every experiment runs at seed 0 only (--seeds {seeds} is not used)")
    s = cs.SIZES[size]
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    loads = [("start", _load())]
    common = dict(suite=SUITE, threads=threads, checkpoint_every=checkpoint_every, progress=progress, log=log)
    first = stage1(s)
    run_specs(first, out_dir, resume=resume, **common)
    loads.append(("runs", _load()))
    network = measure.overlap_network(out_dir) if resume else None
    network = network or measure.calibrate_overlap(out_dir, s)
    second = list(cs.claim7(s, network).values()) if network is not None else []
    if second:
        log(f"claim 7: network {network[0] * 1e3:g} ms latency, {network[1] / 1e6:.3g} MB/s (calibrated)")
        run_specs(second, out_dir, resume=resume, **common)
    write_manifest(out_dir, first + second, suite=SUITE, threads=threads)
    loads.append(("overlap", _load()))
    log("claim 8: Hogwild! (2 processes, diminishing vs constant steps)")
    extra.run_hogwild(out_dir, s, resume=resume)
    log("claim 10: biased-SGD certificate")
    extra.run_certificate(out_dir, s, resume=resume)
    loads.append(("end", _load()))
    meta = {"size": size, "total_s": time.perf_counter() - t0, "load_average": loads, "cpus": os.cpu_count()}
    path = out_dir / CLAIMS_DIR / META
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=2))
    return results(out_dir)


def read_meta(out_dir: Path) -> dict[str, Any]:
    path = Path(out_dir) / CLAIMS_DIR / META
    return json.loads(path.read_text()) if path.exists() else {"size": "full"}


def results(out_dir: Path) -> list[Result]:
    """Every claim's setting, measured figure and verdict, from the records in ``out_dir``."""
    size = cs.SIZES[read_meta(out_dir).get("size", "full")]
    return [m(Path(out_dir), size) for m in MEASURES]
