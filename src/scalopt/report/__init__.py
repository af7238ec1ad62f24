"""Reports from run records: ``render(out_dir)`` writes report.md and PNG figures. Never trains."""

from __future__ import annotations

import json
from pathlib import Path

from scalopt.bench.spec import config_id
from scalopt.report.federated import is_federated, section
from scalopt.report.figures import loss_figure
from scalopt.report.frontier import frontier_figure
from scalopt.report.markdown import document
from scalopt.report.summary import group_runs, load_runs

REPORT = "report.md"


def render(out_dir: str | Path) -> Path:
    """Re-render ``out_dir/report.md`` and its figures from the records in ``out_dir/runs``."""
    out_dir = Path(out_dir)
    runs = load_runs(out_dir)
    if not runs:
        raise FileNotFoundError(
            f"no run records under {out_dir / 'runs'}; run `scalopt bench` or `scalopt train` first"
        )
    suite_file = out_dir / "suite.json"
    suite = json.loads(suite_file.read_text()) if suite_file.exists() else {}
    order: dict[str, int] = {}
    for i, spec in enumerate(suite.get("specs", [])):
        order.setdefault(config_id(spec), i)
    groups = sorted(group_runs(runs), key=lambda g: order.get(g.config_id, len(order)))
    federated = section([g for g in groups if is_federated(g)], out_dir)
    groups = [g for g in groups if not is_federated(g)]
    figures: dict[str, list[Path]] = {}
    head: list[str] = []
    if suite.get("suite") == "claims":  # the verdict table first; its runs are too many to draw per workload
        from scalopt.report.claims import section as claims_section

        head = claims_section(out_dir)
    else:
        for workload in dict.fromkeys(g.workload for g in groups):
            for axis in ("step", "wall", "bytes"):
                path = loss_figure(groups, workload, axis, out_dir / f"{workload}_loss_vs_{axis}.png")
                if path is not None:
                    figures.setdefault(workload, []).append(path)
            path = frontier_figure(groups, workload, out_dir / f"{workload}_loss_vs_bytes_per_step.png")
            if path is not None:
                figures.setdefault(workload, []).append(path)
    report = out_dir / REPORT
    report.write_text(document(suite, groups, runs, figures, federated, head=head))
    return report


__all__ = ["render"]
