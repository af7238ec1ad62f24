"""The claims of the ``claims`` suite and the rules that decide each verdict, fixed before any run.

Every rule is a pure function of measured numbers (``nan`` = not measured or never reached) returning a
:class:`Verdict`: ``holds``, ``does not hold`` or ``inconclusive``, with the reason in words. The
thresholds are the ones each claim states; nothing here depends on a result. Shared conventions:

- a run that never reaches a target has ``nan`` steps / rounds / bytes to it;
- a reference that never reaches its own target (nothing to compare against) makes the claim
  ``inconclusive``; the method under test never reaching it makes the claim ``does not hold``;
- for claims with several parts, any part that does not hold decides ``does not hold``; otherwise any
  inconclusive part decides ``inconclusive``; otherwise the claim ``holds``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

HOLDS = "holds"
FAILS = "does not hold"
INCONCLUSIVE = "inconclusive"

#: gaps below this are treated as equal to it (a ratio of two exact zeros says nothing)
GAP_FLOOR = 1e-12
#: float64 slack of claim 10's comparison of a measured contraction with the certified ρ²
RATE_SLACK = 1e-12


@dataclass(frozen=True)
class Verdict:
    outcome: str  # HOLDS, FAILS or INCONCLUSIVE
    reason: str

    def __post_init__(self) -> None:
        if self.outcome not in (HOLDS, FAILS, INCONCLUSIVE):
            raise ValueError(
                f"outcome must be one of {HOLDS!r}, {FAILS!r}, {INCONCLUSIVE!r}, got {self.outcome!r}"
            )


@dataclass(frozen=True)
class Claim:
    number: int
    name: str  # short: the method and what it claims
    statement: str  # the claim as its paper makes it
    rule: str  # the rule of the verdict, in words


CLAIMS: tuple[Claim, ...] = (
    Claim(1, "Shampoo vs AdamW", "Shampoo reaches AdamW's final loss in fewer steps and less wall time",
          "holds if steps ≤ 0.8× and wall ≤ 0.95× AdamW's (AdamW at the best lr of a sweep in the same run)"),
    Claim(2, "CELGC", "CELGC needs fewer communication rounds than synchronous clipped SGD for the same "
          "loss, "
          "and more workers reach the target in fewer steps",
          "holds if on every workload rounds to target ≤ 0.5× synchronous clipped SGD's at period ≥ 8, "
          "and 4 workers need fewer steps than 2"),
    Claim(3, "Generalized SignSGD",
          "generalized SignSGD is robust where SGD is not under unbounded smoothness",
          "holds if at the largest L1 SGD's best final gap over the lr grid is ≥ 10× generalized SignSGD's"),
    Claim(4, "Adam sufficient condition", "Adam with a schedule that satisfies the sufficient condition "
          "converges on Reddi's counterexample where constant β2 = 0.1 goes to the worst point",
          "holds if the schedule's final gap ≤ the workload's target and β2 = 0.1 ends at ≥ 0.95× the "
          "worst gap"),
    Claim(5, "Data-parallel Adam", "data-parallel Adam speeds up with workers",
          "holds if steps to target at 2 and 4 workers are ≤ 0.62× and ≤ 0.36× of 1 worker's"),
    Claim(6, "Efficient-Adam", "Efficient-Adam reaches data-parallel Adam's loss with far fewer bytes",
          "holds if it reaches DP Adam's loss at 50 % of its steps with ≤ 0.1× DP Adam's bytes to it; "
          "never reached = does not hold"),
    Claim(7, "Overlap Local-SGD", "Overlap Local-SGD hides communication delay",
          "holds if its wall per step with the delay is ≤ 1.15× without while synchronous SGD pays ≥ 1.3× "
          "(synchronous SGD < 1.3×: the delay was no real cost, inconclusive)"),
    Claim(8, "Hogwild!", "Hogwild! with diminishing steps converges",
          "holds if the diminishing schedule's final gap ≤ the tolerance and < the constant schedule's"),
    Claim(9, "FedLADA", "FedLADA needs fewer rounds than FedAvg on non-IID clients",
          "holds if FedLADA's rounds to the accuracy target < FedAvg's; inconclusive until it exists"),
    Claim(10, "Biased-SGD certificate", "the biased-SGD certificate bounds the measured rate",
          "holds if for 3 values of δ the measured contraction per step is ≤ ρ² and "
          "1 − measured ≤ 2(1 − ρ²); "
          "inconclusive until the certificate exists"),
)  # fmt: skip


def claim(number: int) -> Claim:
    for c in CLAIMS:
        if c.number == number:
            return c
    raise ValueError(f"number must be one of {[c.number for c in CLAIMS]}, got {number!r}")


def _finite(*values: float) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def combine(parts: Sequence[Verdict]) -> Verdict:
    """Any part that does not hold decides; then any inconclusive part; else the claim holds."""
    if not parts:
        return Verdict(INCONCLUSIVE, "nothing was measured")
    for outcome in (FAILS, INCONCLUSIVE):
        bad = [p.reason for p in parts if p.outcome == outcome]
        if bad:
            return Verdict(outcome, "; ".join(bad))
    return Verdict(HOLDS, "; ".join(p.reason for p in parts))


def not_available(what: str) -> Verdict:
    return Verdict(INCONCLUSIVE, f"not available: {what} does not exist in this version")


def ratio_at_most(name: str, value: float, reference: float, limit: float) -> Verdict:
    """``value / reference ≤ limit``; reference missing → inconclusive, value missing → does not hold."""
    if not _finite(reference) or reference <= 0:
        return Verdict(INCONCLUSIVE, f"{name}: no reference to compare with")
    if not _finite(value):
        return Verdict(FAILS, f"{name}: never reached")
    r = value / reference
    return Verdict(
        HOLDS if r <= limit else FAILS, f"{name} {r:.2f}× ({'≤' if r <= limit else '>'} {limit:g}×)"
    )


# -- one rule per claim ------------------------------------------------------------------------------
def rule_shampoo(shampoo_steps: float, adamw_steps: float, shampoo_wall: float, adamw_wall: float) -> Verdict:
    """Claim 1: steps ≤ 0.8× and wall ≤ 0.95× AdamW's, both to AdamW's final loss."""
    return combine(
        [
            ratio_at_most("steps", shampoo_steps, adamw_steps, 0.8),
            ratio_at_most("wall", shampoo_wall, adamw_wall, 0.95),
        ]
    )


def rule_celgc(
    period: int, workloads: Sequence[tuple[str, float, float, float, float]]
) -> Verdict:  # fmt: skip
    """Claim 2: per workload (name, sync rounds, CELGC rounds, CELGC 2-worker steps, 4-worker steps)."""
    if period < 8:
        return Verdict(INCONCLUSIVE, f"period {period} < 8: outside the claim")
    parts = []
    for name, sync_rounds, celgc_rounds, steps2, steps4 in workloads:
        if not _finite(sync_rounds):  # the target is synchronous SGD's own loss: without it, no target
            parts.append(Verdict(INCONCLUSIVE, f"{name}: no synchronous reference, no target"))
            continue
        parts.append(ratio_at_most(f"{name} rounds", celgc_rounds, sync_rounds, 0.5))
        if not _finite(steps4):
            parts.append(Verdict(FAILS, f"{name}: 4 workers never reached the target"))
        elif not _finite(steps2) or steps4 < steps2:
            parts.append(Verdict(HOLDS, f"{name} steps 4 vs 2 workers {steps4:g} vs {steps2:g}"))
        else:
            parts.append(Verdict(FAILS, f"{name} steps 4 vs 2 workers {steps4:g} vs {steps2:g} (not fewer)"))
    return combine(parts)


def rule_signsgd(
    l1_values: Sequence[float], sgd_gaps: Sequence[float], sign_gaps: Sequence[float]
) -> Verdict:
    """Claim 3: at the largest L1, SGD's best final gap ≥ 10× generalized SignSGD's (diverged = inf)."""
    if not l1_values or not (len(l1_values) == len(sgd_gaps) == len(sign_gaps)):
        return Verdict(INCONCLUSIVE, "no L1 measured")
    i = max(range(len(l1_values)), key=lambda k: l1_values[k])
    sgd, sign = sgd_gaps[i], sign_gaps[i]
    if not _finite(sign) or math.isnan(sgd):
        return Verdict(INCONCLUSIVE, f"L1 = {l1_values[i]:g}: generalized SignSGD had no finite gap")
    r = max(sgd, GAP_FLOOR) / max(sign, GAP_FLOOR)
    text = "SGD diverged at every lr" if math.isinf(r) else f"SGD / generalized SignSGD gap {r:.3g}×"
    return Verdict(
        HOLDS if r >= 10 else FAILS, f"L1 = {l1_values[i]:g}: {text} ({'≥' if r >= 10 else '<'} 10×)"
    )


def rule_adam_condition(schedule_gap: float, target: float, constant_gap: float, worst_gap: float) -> Verdict:
    """Claim 4: the condition-satisfying schedule reaches the target, constant β2 = 0.1 the worst point."""
    if not _finite(schedule_gap, target, constant_gap, worst_gap):
        return Verdict(INCONCLUSIVE, "a run is missing")
    parts = [
        Verdict(
            HOLDS if schedule_gap <= target else FAILS,
            f"schedule gap {schedule_gap:.3g} ({'≤' if schedule_gap <= target else '>'} target {target:g})",
        ),
        Verdict(
            HOLDS if constant_gap >= 0.95 * worst_gap else FAILS,
            f"β2 = 0.1 gap {constant_gap:.3g} ({'≥' if constant_gap >= 0.95 * worst_gap else '<'} 0.95 × "
            f"worst {worst_gap:.3g})",
        ),
    ]
    return combine(parts)


def rule_dp_adam(steps1: float, steps2: float, steps4: float) -> Verdict:
    """Claim 5: steps to target at 2 and 4 workers ≤ 0.62× and ≤ 0.36× of 1 worker's."""
    return combine(
        [ratio_at_most("2 workers", steps2, steps1, 0.62), ratio_at_most("4 workers", steps4, steps1, 0.36)]
    )


def rule_efficient_adam(ea_bytes: float, dp_bytes: float) -> Verdict:
    """Claim 6: bytes to DP Adam's half-way loss ≤ 0.1× DP Adam's; never reached = does not hold."""
    return ratio_at_most("bytes to target", ea_bytes, dp_bytes, 0.1)


def rule_overlap(overlap_ratio: float, sync_ratio: float) -> Verdict:
    """Claim 7: wall per step with / without the delay: Overlap ≤ 1.15× while synchronous SGD ≥ 1.3×."""
    if not _finite(overlap_ratio, sync_ratio):
        return Verdict(INCONCLUSIVE, "a run is missing")
    if sync_ratio < 1.3:
        return Verdict(
            INCONCLUSIVE, f"synchronous SGD paid only {sync_ratio:.2f}× (< 1.3×): no real delay to hide"
        )
    ok = overlap_ratio <= 1.15
    return Verdict(
        HOLDS if ok else FAILS,
        f"Overlap {overlap_ratio:.2f}× ({'≤' if ok else '>'} 1.15×), synchronous SGD {sync_ratio:.2f}×",
    )


def rule_hogwild(diminishing_gap: float, constant_gap: float, tolerance: float) -> Verdict:
    """Claim 8: the diminishing schedule's final gap ≤ tolerance and below the constant schedule's."""
    if not _finite(tolerance) or math.isnan(diminishing_gap) or math.isnan(constant_gap):
        return Verdict(INCONCLUSIVE, "a run is missing")
    parts = [
        Verdict(
            HOLDS if diminishing_gap <= tolerance else FAILS,
            f"diminishing gap {diminishing_gap:.3g} ({'≤' if diminishing_gap <= tolerance else '>'} "
            "tolerance "
            f"{tolerance:g})",
        ),
        Verdict(
            HOLDS if diminishing_gap < constant_gap else FAILS,
            f"constant gap {constant_gap:.3g} ({'>' if diminishing_gap < constant_gap else '≤'} diminishing)",
        ),
    ]
    return combine(parts)


def rule_fedlada(fedlada_rounds: float, fedavg_rounds: float) -> Verdict:
    """Claim 9: FedLADA reaches the accuracy target in fewer rounds than FedAvg."""
    if not _finite(fedavg_rounds):
        return Verdict(INCONCLUSIVE, "FedAvg never reached the target: nothing to compare with")
    if not _finite(fedlada_rounds):
        return Verdict(FAILS, "FedLADA never reached the target")
    ok = fedlada_rounds < fedavg_rounds
    return Verdict(
        HOLDS if ok else FAILS,
        f"rounds {fedlada_rounds:g} vs FedAvg {fedavg_rounds:g} ({'fewer' if ok else 'not fewer'})",
    )


def rule_certificate(points: Sequence[tuple[float, float, float]]) -> Verdict:
    """Claim 10: for each (δ, measured contraction, certified ρ²): measured ≤ ρ², 1 − measured ≤ 2(1 − ρ²)."""
    if len(points) < 3:
        return Verdict(INCONCLUSIVE, f"{len(points)} values of δ measured, 3 needed")
    parts = []
    for delta, measured, rho2 in points:
        if not _finite(measured, rho2):
            parts.append(Verdict(INCONCLUSIVE, f"δ = {delta:g}: no number"))
            continue
        bound = measured <= rho2 + RATE_SLACK
        tight = 1 - measured <= 2 * (1 - rho2)
        parts.append(
            Verdict(
                HOLDS if bound and tight else FAILS,
                f"δ = {delta:g}: measured {measured:.4f} {'≤' if bound else '>'} ρ² {rho2:.4f}"
                + ("" if tight else ", 1 − measured > 2(1 − ρ²): the bound is loose"),
            )
        )
    return combine(parts)
