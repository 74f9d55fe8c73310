"""The claims' verdicts, written: ``claims.md``, a self-contained ``claims.html`` (figures embedded), ``claims.json`` and
one figure per claim (``claim<n>.png``), and the same files on an MLflow run (experiment ``claims``) whose
description is the verdict table, as a sweep's report sits on its parent run (lossbench.report.build).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from lossbench import plots, provenance
from lossbench.claims.protocols import Design, Launched, portable
from lossbench.claims.rules import HOLDS, MEASURES, Finding, Measured, Tested
from lossbench.names import CLAIMS_EXPERIMENT, CLAIMS_ID_TAG, COMMAND_TAG, KIND_CLAIMS, KIND_TAG, NOTE_TAG
from lossbench.report import content, tables
from lossbench.report.parent_run import NOTE_LIMIT, artifact_src

ARTIFACT_PATH = "claims"
FILES = ("claims.md", "claims.html", "claims.json", "evidence.csv")
EVIDENCE_COLUMNS = (
    "claim",
    "prediction",
    "where",
    "measure",
    "test",
    "margin",
    "outcome",
    "seed",
    "candidate",
    "reference",
    "candidate_value",
    "reference_value",
    "difference",
)
"""``evidence.csv``: one row per prediction (and positive control, claim ``control``) x seed, the values it read."""
SEEDS_DRIVE = (
    "Every claims protocol sets `data.redraw: true`: a run's seed draws its validation split, its training subset, "
    "its label-noise and input-noise draws, its initial weights and its batch order (the run's tag "
    "`lossbench.seed_drives` lists them), so an interval over seeds covers every source a replication varies, not "
    "one data draw."
)
QUICK_NOTE = (
    "**Quick protocols: a pilot, not final verdicts** (`--quick`: fewer epochs, images and models, three seeds). The "
    "pilot checks the pipeline end to end and its spread sizes the full protocols' seeds; run without `--quick` for "
    "verdicts."
)


@dataclass(frozen=True)
class Context:
    """What the claims' pages say about how they were made."""

    command: str
    quick: bool
    seconds: float
    """Wall time of the whole command, up to the writing (sweeps, reading, judging)."""
    designs: list[Design]
    launched: list[Launched] = field(default_factory=list)
    not_finished: list[tuple[str, str, str, str]] = field(default_factory=list)
    """(protocol, run name, status, reason) of each run a sweep made that did not FINISH."""
    code: str = ""
    decide: str = ""
    """The command that runs the seeds the undecided predictions need (empty: none)."""
    controls: list[Tested] = field(default_factory=list)
    """The positive controls, decided before the verdicts are read (lossbench.claims.evaluate.controls)."""
    tuned: list[str] = field(default_factory=list)
    """The learning rates the tuning protocols chose, as the overrides every other protocol got."""


def figure_name(finding: Finding) -> str:
    return f"claim{finding.claim.number}.png"


# ------------------------------------------------------------------------------------------ figures


def _panel(ax, measured: Sequence[Measured], colours: Sequence[str]) -> None:
    """One measure: a cluster per block (the group without its loss), a colour per loss (its place in ``colours``,
    the same in every panel), each seed a dot, the mean with its interval as a bar (no bar below 3 seeds)."""
    m = MEASURES[measured[0].measure]
    blocks = list(dict.fromkeys(_block(g) for g in measured))
    losses = list(dict.fromkeys(g.group.get("loss", "") for g in measured))
    width = 0.8 / max(1, len(losses))
    for i, loss in enumerate(losses):
        colour = f"C{colours.index(loss) % 10}"
        for g in (g for g in measured if g.group.get("loss", "") == loss):
            x = blocks.index(_block(g)) + (i - (len(losses) - 1) / 2) * width
            seeds = [v * m.scale for v in g.values.values() if math.isfinite(v)]
            ax.scatter([x] * len(seeds), seeds, s=12, color=colour, alpha=0.6, zorder=3)
            iv = g.interval
            if iv.n and math.isfinite(iv.mean):
                # max(0, ...): a Wilson interval of 12 of 12 ends at 0.9999999999999999, a hair below its share
                below, above = max(0.0, iv.mean - iv.low) * m.scale, max(0.0, iv.high - iv.mean) * m.scale
                err = [[below], [above]] if iv.has_interval else None
                ax.errorbar(
                    [x],
                    [iv.mean * m.scale],
                    yerr=err,
                    fmt="D",
                    color=colour,
                    ms=6,
                    capsize=4,
                    zorder=4,
                    label=loss if g is next(h for h in measured if h.group.get("loss", "") == loss) else None,
                )
    ax.set_xticks(range(len(blocks)), [b or "all" for b in blocks], fontsize="small")
    ax.set_title(m.label + (f" ({m.unit})" if m.unit else ""), fontsize="medium")
    ax.grid(axis="y", alpha=0.3)


def _block(g: Measured) -> str:
    return "\n".join(str(v) + (" classes" if k == "classes" else "") for k, v in g.group.items() if k != "loss")


def _drawn(finding: Finding, out: Path) -> Path | None:
    """:func:`draw` into ``out``; a figure that fails is reported in the claim's notes, never the pages' end."""
    try:
        return draw(finding, out / figure_name(finding))
    except Exception as e:  # matplotlib on unexpected values: the verdicts and tables still get written
        finding.notes.append(f"The figure was not drawn: {type(e).__name__}: {e}")
        return None


def draw(finding: Finding, path: Path) -> Path | None:
    """The claim's figure: one panel per measure (None when nothing was measured)."""
    measures = list(dict.fromkeys(g.measure for g in finding.measured))
    if not measures:
        return None
    fig = Figure(figsize=(6.5 * min(len(measures), 3), 4.2 * math.ceil(len(measures) / 3)), layout="constrained")
    axes = fig.subplots(math.ceil(len(measures) / 3), min(len(measures), 3), squeeze=False).ravel()
    colours = list(dict.fromkeys(g.group.get("loss", "") for g in finding.measured))
    for ax, measure in zip(axes, measures):
        _panel(ax, [g for g in finding.measured if g.measure == measure], colours)
    for ax in axes[len(measures) :]:
        ax.set_visible(False)
    legend = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels())}
    if legend:  # one legend for every panel, below them: off the data
        fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncols=min(len(legend), 8), frameon=False)
    fig.suptitle(f"Claim {finding.claim.number}: {finding.claim.statement}", fontsize="medium")
    return plots._save(fig, path)


# ------------------------------------------------------------------------------------------ Markdown


def _jobs(design: Design) -> str:
    swept = " · ".join(f"{k} {', '.join(v)}" for k, v in design.grid.items())
    fixed = "; ".join(f"{k} {v}" for k, v in design.fixed.items())
    return f"{content.code('+experiment=' + design.protocol)} ({design.jobs} jobs): {fixed}; swept: {swept}"


def measured_table(measured: Sequence[Measured]) -> str:
    """One row per group (block and loss), one column per measure: mean [95 % interval] (n) over seeds."""
    measures = list(dict.fromkeys(g.measure for g in measured))
    keys = list(dict.fromkeys(tuple(g.group.items()) for g in measured))
    dims = [k for k, _ in keys[0]] if keys else []
    cells = {(tuple(g.group.items()), g.measure): g.text for g in measured}
    columns = [
        *dims,
        *(f"{MEASURES[m].label} ({MEASURES[m].unit})" if MEASURES[m].unit else MEASURES[m].label for m in measures),
    ]
    rows = [[v for _, v in key] + [cells.get((key, m), "—") for m in measures] for key in keys]
    return tables.table(columns, rows, numeric_from=len(dims), numeric_to=len(columns))


def tests_table(tested: Sequence[Tested]) -> str:
    rows = []
    for t in tested:
        where = ", ".join(v for k, v in t.prediction.block.items() if k not in ("loss", "against"))
        rows.append([where, t.prediction.expects, t.difference, t.outcome, t.plan])
    columns = [
        "where, measure",
        "prediction",
        "difference (candidate − reference), Holm-adjusted p",
        "outcome",
        "to decide",
    ]
    return tables.table(columns, rows)


def claim_section(finding: Finding, designs: Mapping[str, Design]) -> list[str]:
    c, v = finding.claim, finding.verdict
    parts = [
        f"## Claim {c.number}. “{tables.escape(c.statement)}”",
        f"**Verdict: {v.kind}** — {tables.escape(v.text)}."
        + (f" *{tables.escape(v.standing)}.*" if v.standing else ""),
        f"*Rule:* {tables.escape(v.rule)}",
    ]
    if v.decide:
        parts.append(f"*What would decide it:* {tables.escape(v.decide)}.")
    protocols = "; ".join(_jobs(designs[p]) for p in c.protocols if p in designs)
    parts += [f"**Protocol.** {protocols}. **Measured:** {tables.escape(c.measured)}."]
    if finding.measured:
        parts += [
            "**Measured figures** (mean [95 % interval] over seeds, n = seeds; shares with Wilson intervals for claim 6):",
            measured_table(finding.measured),
        ]
    if finding.tested:
        parts += [
            "**Predictions**, written before the run (conf/claims.yaml), decided as one family:",
            tests_table(finding.tested),
        ]
    if finding.notes:
        parts.append("\n".join(f"- {tables.escape(n)}" for n in finding.notes))
    if finding.measured:  # nothing measured: no figure was drawn
        parts.append(f"![Claim {c.number}: the measured figures, one dot per seed]({figure_name(finding)})")
    return parts


def verdict_table(findings: Sequence[Finding]) -> str:
    rows = [[f"{f.claim.number}. {f.claim.statement}", _kind(f), f.verdict.text, f.key] for f in findings]
    return tables.table(["claim", "verdict", "on what", "key figure"], rows)


def _kind(f: Finding) -> str:
    return f"{f.verdict.kind} (no standing)" if f.verdict.standing else f.verdict.kind


def controls_section(controls: Sequence[Tested]) -> list[str]:
    """On top of the page: whether the positive controls reproduced, each with its test."""
    if not controls:
        return ["**Positive controls: not run** (no runs of their protocols): the verdicts below have no standing."]
    held = all(t.outcome == HOLDS for t in controls)
    head = (
        "**Positive controls reproduced**: the protocols find what is known, so their verdicts stand."
        if held
        else "**Positive controls did not reproduce** (or were not decided or not measured): every verdict below has no "
        "standing (marked) until they do."
    )
    rows = [
        [
            t.prediction.where and ", ".join(f"{k} {v}" for k, v in t.prediction.where) or "all",
            t.prediction.expects,
            MEASURES[t.prediction.measure].short,
            t.difference,
            t.outcome,
            t.plan,
        ]
        for t in controls
    ]
    table = tables.table(["where", "control", "measure", "found", "outcome", "to decide"], rows)
    return [head, table]


def tuned_section(tuned: Sequence[str]) -> list[str]:
    if not tuned:
        return []
    chosen = ", ".join(f"{o.removeprefix('++tuned.lr.').replace('=', ': ')}" for o in tuned)
    return [
        "**Equal tuning** (`+experiment=claim_tuning`, `claim_tuning_binary`): each loss x model x number of classes "
        "got the same budget (three Adam learning rates, one seed, clean data, 20 epochs) and the rate with the best "
        f"validation accuracy: {tables.escape(chosen)}."
    ]


def markdown(findings: Sequence[Finding], context: Context) -> str:
    minutes = context.seconds / 60
    head = [
        "# The textbook's claims about losses, measured",
        f"Command: {content.code(context.command)} · wall time {minutes:.1f} min · code {tables.escape(context.code)}",
    ]
    if context.quick:
        head.append(QUICK_NOTE)
    head += [
        *controls_section(context.controls),
        verdict_table(findings),
        SEEDS_DRIVE,
        *tuned_section(context.tuned),
        "Each claim is tested through predictions a tutorial's rule makes about runs that differ only in the loss; "
        "every run records the same yardsticks, and the measures are scale-free where losses differ in scale. A "
        "verdict names what it depends on; an undecided prediction says how many more seeds would decide it.",
    ]
    if context.decide and context.quick:
        head.append(f"The full protocols: {content.code(context.decide)}")
    elif context.decide:
        head.append(
            "Decide what is undecided, as one second look on every protocol (the most seeds any undecided prediction "
            f"asks for; each claim says what its own need): {content.code(context.decide)}"
        )
    designs = {d.protocol: d for d in context.designs}
    body = [part for f in findings for part in claim_section(f, designs)]
    return "\n\n".join([*head, *body, *runs_section(context)]) + "\n"


def _log_name(path: Path | None) -> str:
    """A sweep's log as the pages' folder sees it: ``sweeps/<protocol>.log``."""
    return f"{path.parent.name}/{path.name}" if path else ""


def runs_section(context: Context) -> list[str]:
    rows = []
    for launched in context.launched:
        counts = launched.counts()
        rows.append(
            [
                launched.protocol,
                counts["finished"],
                counts["skipped"],
                counts["failed"] + counts["killed"],
                f"{launched.seconds / 60:.1f}",
                _log_name(launched.log),
            ]
        )
    parts = [
        "## The runs",
        tables.table(["protocol", "ran", "reused (skipped)", "failed or killed", "minutes", "sweep log"], rows, 1, 5),
    ]
    if context.not_finished:
        parts.append(
            "Not counted (did not finish): " + "; ".join(f"{p}: {n} {s} ({r})" for p, n, s, r in context.not_finished)
        )
    return parts


# ------------------------------------------------------------------------------------------ JSON


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def finding_json(f: Finding) -> dict[str, Any]:
    return {
        "number": f.claim.number,
        "statement": f.claim.statement,
        "protocols": list(f.claim.protocols),
        "measured_how": f.claim.measured,
        "verdict": {
            "kind": f.verdict.kind,
            "text": f.verdict.text,
            "rule": f.verdict.rule,
            "decide": f.verdict.decide,
            "standing": f.verdict.standing or None,
        },
        "key_figure": f.key,
        "figure": figure_name(f),
        "measured": [
            {
                "group": g.group,
                "measure": g.measure,
                "unit": MEASURES[g.measure].unit,
                "scale": MEASURES[g.measure].scale,
                "values": g.values,
                "interval": g.interval.to_json(),
            }
            for g in f.measured
        ],
        "predictions": [
            {
                "block": t.prediction.block,
                "measure": t.prediction.measure,
                "candidate": t.prediction.candidate,
                "reference": t.prediction.reference,
                "sign": t.prediction.sign,
                "outcome": t.outcome,
                "to_decide": t.plan,
                **prediction_json(t),
            }
            for t in f.tested
        ],
        "notes": f.notes,
    }


def prediction_json(t: Tested) -> dict[str, Any]:
    """What a prediction was written as, how it was decided, and the per-seed values it read."""
    return {
        "expects": t.prediction.expects,
        "test": t.prediction.test,
        "margin": t.prediction.margin,
        "seeds_planned": t.prediction.seeds,
        "decision": None if t.decision is None else t.decision.to_json(),
        "values": {str(s): {"candidate": _never(c), "reference": _never(r)} for s, (c, r) in t.values.items()},
    }


def _never(value: float) -> float | str:
    """+inf (a censored time: never reached) as the text ``inf``, which JSON has no number for; NaN stays null."""
    return "inf" if value == math.inf else value


def evidence_rows(findings: Sequence[Finding], controls: Sequence[Tested]) -> list[dict[str, Any]]:
    """The tidy table of evidence: one row per prediction x seed (:data:`EVIDENCE_COLUMNS`)."""
    out = []
    for claim, tested in [("control", controls), *((f.claim.number, f.tested) for f in findings)]:
        for t in tested:
            p = t.prediction
            where = "; ".join(f"{k}={v}" for k, v in p.where)
            for seed, (c, r) in t.values.items():
                out.append(
                    dict(
                        zip(
                            EVIDENCE_COLUMNS,
                            (
                                claim,
                                p.expects,
                                where,
                                p.measure,
                                p.test,
                                p.margin,
                                t.outcome,
                                seed,
                                p.candidate,
                                p.reference,
                                c,
                                r,
                                c - r,
                            ),
                        )
                    )
                )
    return out


def write_evidence(path: Path, findings: Sequence[Finding], controls: Sequence[Tested]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, EVIDENCE_COLUMNS)
        writer.writeheader()
        writer.writerows(evidence_rows(findings, controls))
    return path


def _portable_command(command: Sequence[str], out: Path | None = None) -> list[str]:
    """A sweep's command as the JSON records it: no interpreter path, the sweep folder relative to the pages."""
    shown = []
    for word in command[1:]:
        key, _, value = word.partition("=")
        shown.append(f"{key}=sweeps/{Path(value).name}" if key == "hydra.sweep.dir" else portable(word))
    return shown


def summary_json(findings: Sequence[Finding], context: Context) -> dict[str, Any]:
    return _clean(
        {
            "command": context.command,
            "quick": context.quick,
            "wall_time_s": context.seconds,
            "code": context.code,
            "decide": context.decide or None,
            "protocols": [
                {
                    "protocol": d.protocol,
                    "jobs": d.jobs,
                    "grid": d.grid,
                    "fixed": {k: str(v) for k, v in d.fixed.items()},
                    "tracking_uri": portable(f"tracking.uri={d.tracking_uri}").partition("=")[2],
                    "experiment": d.experiment,
                }
                for d in context.designs
            ],
            "sweeps": [
                {
                    "protocol": s.protocol,
                    "returncode": s.returncode,
                    "outcomes": dict(s.counts()),
                    "seconds": s.seconds,
                    "command": _portable_command(s.command),
                }
                for s in context.launched
            ],
            "not_finished": [list(n) for n in context.not_finished],
            "seeds_drive": SEEDS_DRIVE,
            "tuned": list(context.tuned),
            "controls": [
                {"outcome": t.outcome, "measure": t.prediction.measure, "to_decide": t.plan, **prediction_json(t)}
                for t in context.controls
            ],
            "claims": [finding_json(f) for f in findings],
        }
    )


# ------------------------------------------------------------------------------------------ files and MLflow


def write(out: Path, findings: Sequence[Finding], context: Context) -> list[Path]:
    """Write every file into ``out``; returns them (figures first)."""
    out.mkdir(parents=True, exist_ok=True)
    figures = [p for f in findings if (p := _drawn(f, out)) is not None]
    text = markdown(findings, context)
    (out / FILES[0]).write_text(text, encoding="utf-8")
    (out / FILES[1]).write_text(
        content.to_html(text, "The textbook's claims about losses, measured", out), encoding="utf-8"
    )
    (out / FILES[2]).write_text(
        json.dumps(summary_json(findings, context), indent=1, allow_nan=False) + "\n", encoding="utf-8"
    )
    write_evidence(out / FILES[3], findings, context.controls)
    return [*figures, *(out / name for name in FILES)]


def claims_id(arguments: Sequence[Sequence[str]]) -> str:
    """Which claims run these protocols' arguments make: the same command updates the same MLflow run."""
    return hashlib.sha256(json.dumps([list(a) for a in arguments]).encode()).hexdigest()[:10]


def description(findings: Sequence[Finding], run_id: str, quick: bool = False) -> str:
    """The MLflow run's description: the verdict table, and where the rest is (a ``--quick`` run says it is a pilot)."""
    text = "\n\n".join(
        [
            "**The textbook's claims about losses, measured** (python -m lossbench.claims"
            + (" --quick)\n\n" + QUICK_NOTE if quick else ")"),
            verdict_table(findings),
            f"![Claim 1]({artifact_src(run_id, f'{ARTIFACT_PATH}/{figure_name(findings[0])}')})" if findings else "",
            f"Everything (protocols, measured figures, paired tests, rules): Artifacts → {ARTIFACT_PATH}/claims.html.",
        ]
    ).replace("@", "&#64;")
    return (
        text
        if len(text) <= NOTE_LIMIT
        else text[: NOTE_LIMIT - 100] + f"\n\n*Shortened: see {ARTIFACT_PATH}/claims.md.*"
    )


def log_run(
    uri: str, timeout_s: float, files: Sequence[Path], findings: Sequence[Finding], key: str, command: str
) -> tuple[str, str]:
    """Put the files on the claims run ``key`` of experiment ``claims`` (created on first use; the same command
    updates it), with the code, libraries and command that made them: ``(run id, experiment id)``."""
    from lossbench.store import Tracker, tag_filter  # MLflow: only once everything is written

    tracker = Tracker.connect(uri, CLAIMS_EXPERIMENT, timeout_s)
    found = tracker.runs(tag_filter(KIND_CLAIMS, {CLAIMS_ID_TAG: key}))
    tags = {KIND_TAG: KIND_CLAIMS, CLAIMS_ID_TAG: key}
    run_id = (
        found[0].info.run_id
        if found
        else tracker.client.create_run(tracker.experiment_id, run_name=f"claims-{key}", tags=tags).info.run_id
    )
    for path in files:
        tracker.client.log_artifact(run_id, str(path), artifact_path=ARTIFACT_PATH)
    made = {**provenance.code().tags(), **provenance.libraries(), COMMAND_TAG: command}
    tracker.set_tags(run_id, {**made, NOTE_TAG: description(findings, run_id, "--quick" in command.split())})
    tracker.client.set_terminated(run_id, "FINISHED")
    return run_id, tracker.experiment_id
