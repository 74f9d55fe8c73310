"""The sweep that finishes the job: the extra seeds a report asks for, as one command to paste.

For every comparison its family left undecided at the first look (lossbench.decisions), the report knows how
many more paired seeds would decide it. The extension runs exactly those: the undecided groups at their own
(tuned) settings and the reference beside them, on new seeds, in the same sweep (``tracking.sweep_id``), marked
as its second stage (``tracking.stage=2``), through lossbench's sweeper's ``groups`` (one small sweep per
group). Every run that FINISHED is skipped, and the sweep's end writes the report again: the second look.

Below :data:`~lossbench.stats.MIN_SEEDS` paired seeds no test ran, so there is no plan yet: then the extension adds
the seeds a first test needs, as more of the sweep's first stage (no ``tracking.stage=2``: that first test is the
first look).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from lossbench.report.aggregate import Comparison, Findings, GroupRow
from lossbench.stats import MIN_SEEDS, TOO_FEW

OVERRIDE_KEYS = {
    "loss": "loss",
    "optimizer": "optimizer",
    "model": "model",
    "data": "data",
    "noise": "data.label_noise.rate",
    "input_noise": "data.input_noise.rate",
}
"""The command-line key that chooses each grouping dimension of a report (lossbench.report.aggregate)."""
COMMAND = "python -m lossbench.train -m"


@dataclass(frozen=True)
class Extension:
    """The runs a report asks for: per group, its overrides (seeds included) and how many new seeds it gets."""

    groups: tuple[tuple[str, str, int], ...]
    """(group label, its Hydra overrides, new seeds) for each group to run, the references included."""
    command: str | None
    """The command that runs them in the same sweep; None when the runs are not one sweep's (no sweep id)."""
    first_test: bool = False
    """The seeds add up to the first test (no comparison had :data:`MIN_SEEDS` pairs), not to its second look."""

    @property
    def runs(self) -> int:
        return sum(new for _, _, new in self.groups)

    def to_json(self) -> dict[str, object]:
        return {
            "groups": [{"group": g, "overrides": o, "new_seeds": n} for g, o, n in self.groups],
            "runs": self.runs,
            "command": self.command,
            "first_test": self.first_test,
        }


def sweep_overrides(tag: str | None) -> list[str]:
    """The sweep's command-line overrides from its parent run's tag: a JSON list (older runs: space-joined)."""
    if not tag:
        return []
    return list(json.loads(tag)) if tag.startswith("[") else tag.split()


def _chooses(row: GroupRow, varying: set[str]) -> list[str]:
    """The overrides that select ``row``: its varying dimensions and its setting's params."""
    keys = [f"{OVERRIDE_KEYS[d]}={v}" for d, v in row.key.items() if d in varying]
    setting = row.runs[0].params if row.setting else {}
    return keys + [f"{k}={setting[k]}" for k in (p.split("=", 1)[0] for p in row.setting.split(", ")) if k in setting]


def extension(findings: Findings, sweep_id: str | None, base: list[str]) -> Extension | None:
    """The extension of the report's sweep, or None when every comparison is decided or cannot be: the seeds the
    undecided comparisons' plans ask for, or, when no comparison could be tested yet, the seeds a first test needs."""
    wanted = [(c, c.decision.plan.extra) for c in comparisons_to_extend(findings)]
    first_test = not wanted
    if first_test:
        wanted = [(c, MIN_SEEDS - c.paired.n) for c in findings.decided if c.outcome == TOO_FEW]
    if not wanted:
        return None
    finished = findings.selection.finished
    varying = {d for d in OVERRIDE_KEYS if len({r.dimension(d) for r in finished}) > 1} | {"loss"}
    start = 1 + max((int(r.seed) for r in finished if str(r.seed).lstrip("-").isdigit()), default=-1)
    per_row: dict[str, tuple[GroupRow, int]] = {}
    for c, extra in wanted:
        for row in (c.row, c.reference):  # the reference runs every new seed its comparisons need
            held = per_row.get(row.label, (row, 0))[1]
            per_row[row.label] = (row, max(held, extra))
    groups = tuple(
        (label, " ".join([*_chooses(row, varying), f"seed=range({start},{start + extra})"]), extra)
        for label, (row, extra) in per_row.items()
    )
    command = None if sweep_id is None else _command(groups, sweep_id, base, stage=1 if first_test else 2)
    return Extension(groups, command, first_test)


def _command(groups: tuple[tuple[str, str, int], ...], sweep_id: str, base: list[str], stage: int = 2) -> str:
    keys = {o.split("=", 1)[0] for _, overrides, _ in groups for o in overrides.split()}
    keys |= {"tracking.sweep_id", "tracking.stage", "+hydra.sweeper.groups"}
    kept = [o for o in base if o.split("=", 1)[0].lstrip("+~") not in keys and o.split("=", 1)[0] not in keys]
    listing = "[" + ",".join(json.dumps(overrides) for _, overrides, _ in groups) + "]"
    return " ".join(
        [COMMAND, *map(shlex.quote, kept), f"tracking.sweep_id={shlex.quote(sweep_id)}"]
        + (["tracking.stage=2"] if stage == 2 else [])
        + [shlex.quote(f"+hydra.sweeper.groups={listing}")]
    )


def comparisons_to_extend(findings: Findings) -> list[Comparison]:
    """The comparisons an extension would decide (undecided at look 1 with a finite plan)."""
    return [c for c in findings.decided if c.decision.plan is not None and c.decision.plan.extra is not None]
