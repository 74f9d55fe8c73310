"""From runs to answers: per-run figures, groups with confidence intervals, verdicts, comparisons, tuning.

Pure functions over :class:`~lossbench.report.runs.RunRecord` (no I/O). A *group* is one
loss × optimizer (× model, data, label-noise rate when those vary) × hyper-parameter *setting*
(the params that vary inside the group, e.g. ``optimizer.lr=0.001``). Cells are means with a
Student-t 95 % interval over the group's runs (seeds), from :mod:`lossbench.stats`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from lossbench import analysis, decisions, stats
from lossbench.config import is_operational
from lossbench.names import EPOCH_TIME, MEMORISED, TEST_ACC, TEST_LAST_ACC, VAL_ACC
from lossbench.report.runs import RunRecord, Selection

TEST_IMAGES = 10_000
"""The test-set size of runs recorded before they said theirs (lossbench.names.TEST_SIZE_TAG): all were of the MNIST
family, whose test sets have 10,000 images (one image: 0.01 % of test accuracy)."""
HEADERS = {"noise": "noise rate", "input_noise": "input noise rate"}
_PREFIXES = {"noise": "noise ", "input_noise": "input noise "}


def dimension_text(dimension: str, value: str) -> str:
    """A dimension's value as a group's label says it: ``noise 0.4``, ``input noise 0.2``, else the value itself."""
    return _PREFIXES.get(dimension, "") + value


@dataclass(frozen=True)
class Quantity:
    """How one of a run's figures is read everywhere a report shows it: its unit, the factor from the stored
    fraction to that unit, its digits, and the range it lives in (intervals never leave it)."""

    unit: str
    """``%`` (a share), ``pp`` (a difference of shares), ``epoch``, ``s``, or ``""`` (a plain number, e.g. NLL)."""
    scale: float
    digits: int
    bounds: tuple[float, float] = stats.UNBOUNDED

    @property
    def difference_bounds(self) -> tuple[float, float]:
        """The range of a difference of two such values."""
        low, high = self.bounds
        return (low - high, high - low)


_SHARE = Quantity("%", 100.0, 2, (0.0, 1.0))
_SHARE_GAP = Quantity("pp", 100.0, 1, (-1.0, 1.0))
_EPOCH = Quantity("epoch", 1.0, 0, (1.0, math.inf))
_NLL_GAP = Quantity("", 1.0, 3)
QUANTITIES: dict[str, Quantity] = {
    "test_acc": _SHARE,
    "test_last_acc": _SHARE,
    "selected_epoch": _EPOCH,
    "gap_acc_selected": _SHARE_GAP,
    "gap_acc_last": _SHARE_GAP,
    "gap_nll_selected": _NLL_GAP,
    "gap_nll_last": _NLL_GAP,
    "val_nll_rise": Quantity("%", 100.0, 0, (0.0, math.inf)),
    "nll_drift": Quantity("%", 100.0, 0, (0.0, math.inf)),
    "onset_epoch": _EPOCH,
    "best_val_nll": Quantity("", 1.0, 3, (0.0, math.inf)),
    "memorisation_drop": Quantity("pp", 100.0, 2, (-1.0, 1.0)),
    "memorised_last": Quantity("%", 100.0, 1, (0.0, 1.0)),
    "time_per_epoch_s": Quantity("s", 1.0, 2, (0.0, math.inf)),
}
"""The :func:`run_values` figures a report row gives with their intervals (summary.json, report.md, the parent run's
table), each with its unit and range: one owner for how a quantity reads."""
ROW_FIGURES = tuple(QUANTITIES)


def run_values(run: RunRecord, rule: analysis.Rule = analysis.Rule()) -> dict[str, float]:
    """The per-run numbers the report aggregates (``NaN`` where undefined)."""
    monitor, mode = run.monitor
    s = analysis.summary_figures(run.curves, rule, monitor, mode)
    rise = analysis.nll_rise(run.curves, rule)  # the overview chart's last values, split as the verdict splits
    drop = analysis.memorisation_drop(run.metrics)
    times = np.asarray(run.curves.get(EPOCH_TIME, ()), dtype=float)
    times = times[np.isfinite(times)]
    selected = s.get("selected_epoch")
    last = analysis.last_epoch(run.curves)
    get = lambda key: s.get(key, math.nan)  # noqa: E731
    return {
        "test_acc": run.metrics.get(TEST_ACC, math.nan),
        "test_last_acc": run.metrics.get(TEST_LAST_ACC, math.nan),
        "memorisation_drop": math.nan if drop is None else drop,
        "epochs": s["epochs"],
        "selected_epoch": get("selected_epoch"),
        "val_acc_selected": analysis.value_at(run.curves, VAL_ACC, None if selected is None else int(selected)),
        "best_val_nll": get("best_val_nll"),
        "gap_acc_selected": get("gap_acc_selected"),
        "gap_nll_selected": get("gap_nll_selected"),
        "gap_acc_last": get("gap_acc_last"),
        "gap_nll_last": get("gap_nll_last"),
        "val_nll_rise": rise.overfit,
        "nll_drift": rise.drift,
        "has_onset": s["has_onset"],
        "onset_epoch": get("onset_epoch"),
        "drift": s["drift"],
        "memorised_last": analysis.value_at(run.curves, MEMORISED, last),
        "time_per_epoch_s": float(times.mean()) if times.size else math.nan,
    }


@dataclass(frozen=True)
class GroupRow:
    """One row of the results: the runs (seeds) of one group."""

    key: dict[str, str]
    """Dimension -> value, e.g. ``{"loss": "ce", "optimizer": "adam"}``."""
    setting: str
    """The hyper-parameters that vary inside the row's loss × optimizer (× …) group; ``""`` when none do."""
    runs: list[RunRecord]
    values: dict[str, dict[str, float]]
    """:func:`run_values` of each run, by run id."""
    verdicts: dict[str, analysis.Verdict]
    """:func:`lossbench.analysis.judge` of each run, by run id."""

    @property
    def label(self) -> str:
        """E.g. ``ce / adam``, ``ce / adam / noise 0.4`` or ``ce / adam / optimizer.lr=0.01``."""
        parts = [dimension_text(k, v) for k, v in self.key.items()]
        return " / ".join(parts + ([self.setting] if self.setting else []))

    @property
    def group(self) -> str:
        """The label without the setting: what tuning chooses a setting for."""
        return " / ".join(dimension_text(k, v) for k, v in self.key.items())

    def interval(self, name: str) -> stats.Interval:
        """Mean and 95 % interval of one :func:`run_values` figure over the row's runs, within its range."""
        bounds = QUANTITIES[name].bounds if name in QUANTITIES else stats.UNBOUNDED
        return stats.mean_ci((self.values[r.run_id][name] for r in self.runs), bounds=bounds)

    def epochs(self, name: str) -> str:
        """An epoch figure as counts read: ``7`` when every run agrees, ``6–8`` when they differ, ``—`` for none."""
        found = sorted(
            {int(self.values[r.run_id][name]) for r in self.runs if math.isfinite(self.values[r.run_id][name])}
        )
        if not found:
            return "—"
        return str(found[0]) if len(found) == 1 else f"{found[0]}–{found[-1]}"

    def by_seed(self, name: str) -> dict[str, float]:
        return {r.seed: self.values[r.run_id][name] for r in self.runs}

    @property
    def n_onset(self) -> int:
        return sum(1 for r in self.runs if self.verdicts[r.run_id].kind == "overfits")

    @property
    def verdict(self) -> str:
        """The group's verdict in plain words: :attr:`verdict_phrase`'s main clause, the figures behind it, then what
        the other runs did (``overfits in 2/12 runs, after epochs 4–7 (smoothed val NLL +19 % …); 10 stable``)."""
        main, others = self._phrase
        figures = self.verdict_figures
        return main + (f" ({figures})" if figures else "") + (f"; {others}" if others else "")

    @property
    def verdict_phrase(self) -> str:
        """What the group's runs concluded, without figures, every run counted (``no overfitting; NLL drifts with
        train in 2/3 runs; 1 stable``): groups that share it can be named together."""
        main, others = self._phrase
        return main + (f"; {others}" if others else "")

    @property
    def _kinds(self) -> list[str]:
        return [self.verdicts[r.run_id].kind for r in self.runs]

    @property
    def _phrase(self) -> tuple[str, str]:
        """(the main clause, the other runs' verdicts counted: ``8 stable, 2 drift``)."""
        n, kinds = len(self.runs), self._kinds
        counted = ("overfits",)
        if self.n_onset:
            s = "s" if "–" in self._onsets else ""
            main = f"overfits in {self.n_onset}/{n} runs, after epoch{s} {self._onsets}"
        elif (top := max(("drift", "improving", "peaked"), key=kinds.count)) and kinds.count(top) * 2 > n:
            counted = (top,)
            main = f"no overfitting; {_KIND_WORDS[top] if top != 'peaked' else self._peaked} in {kinds.count(top)}/{n} runs"
        else:
            return f"no overfitting in {n} run{'s' if n > 1 else ''}", _counts(kinds, ()) if n > 1 else ""
        return main, _counts(kinds, counted)

    @property
    def _peaked(self) -> str:
        found = [v.acc or v.nll for v in (self.verdicts[r.run_id] for r in self.runs) if v.kind == "peaked"]
        best = sorted({t.best_epoch for t in found})
        last = sorted({t.last_epoch for t in found})
        at = str(best[0]) if len(best) == 1 else f"{best[0]}–{best[-1]}"
        of = str(last[0]) if len(last) == 1 else f"{last[0]}–{last[-1]}"
        return f"peaked near the end (smoothed best at epoch {at} of {of})"

    @property
    def verdict_figures(self) -> str:
        """The figures behind the phrase: how far smoothed validation NLL rose from its lowest in the runs that
        overfit (or drift), the gap at the end, and why the selected epoch can lie far after the onset."""
        gap_last = self.interval("gap_acc_last")
        gap = [f"acc gap {gap_last.mean * 100:.1f} pp at the end"] if gap_last.n else []
        kinds = self._kinds
        if self.n_onset:
            rise = [self.values[r.run_id]["val_nll_rise"] for r, k in zip(self.runs, kinds) if k == "overfits"]
            rise = [x for x in rise if math.isfinite(x)]
            said = [f"smoothed val NLL {np.mean(rise) * 100:+.0f} % from its lowest to the end"] if rise else []
            return "; ".join(said + gap + self._selected_after_onset)
        if kinds.count("drift") * 2 > len(self.runs):
            drift = [self.values[r.run_id]["nll_drift"] for r, k in zip(self.runs, kinds) if k == "drift"]
            drift = [x for x in drift if math.isfinite(x)]
            said = [f"smoothed val NLL {np.mean(drift) * 100:+.0f} %, training NLL rising too"] if drift else []
            return "; ".join(said + gap)
        return "; ".join(gap)

    @property
    def _selected_after_onset(self) -> list[str]:
        """Where a run's tested (selected) epoch lies well after its onset, why: the onset reads validation NLL,
        the selection validation accuracy, which can keep rising after NLL has turned."""
        far = [
            (int(v["onset_epoch"]), int(v["selected_epoch"]))
            for v in (self.values[r.run_id] for r in self.runs)
            if math.isfinite(v["onset_epoch"])
            and math.isfinite(v["selected_epoch"])
            and v["selected_epoch"] - v["onset_epoch"] >= FAR_AFTER_ONSET
        ]
        if not far:
            return []
        pairs = ", ".join(f"{o} → {sel}" for o, sel in sorted(far))
        gaps = sorted(sel - o for o, sel in far)
        span = str(gaps[0]) if gaps[0] == gaps[-1] else f"{gaps[0]}–{gaps[-1]}"
        return [
            f"the tested epoch {span} epochs after the onset (onset → selected: {pairs}): val acc kept rising "
            "after val NLL turned"
        ]

    @property
    def _onsets(self) -> str:
        found = sorted(
            int(self.values[r.run_id]["onset_epoch"]) for r in self.runs if self.verdicts[r.run_id].kind == "overfits"
        )
        return str(found[0]) if found[0] == found[-1] else f"{found[0]}–{found[-1]}"


_KIND_WORDS = {
    "overfits": "overfit",
    "drift": "NLL drifts with train",
    "improving": "still improving at the end",
    "peaked": "peaked near the end",
    "stable": "stable",
    "unknown": "not judged",
}
"""Each verdict kind (lossbench.analysis.Verdict.kind) in the words a group's verdict counts it with."""
FAR_AFTER_ONSET = 3
"""A selected epoch this many epochs or more after the onset is explained in the group's verdict."""


def _counts(kinds: Sequence[str], left_out: Sequence[str]) -> str:
    """``8 stable, 2 drift``: the runs whose verdict is not ``left_out``, counted by kind, most first."""
    rest = [k for k in kinds if k not in left_out]
    order = sorted(set(rest), key=lambda k: (-rest.count(k), list(_KIND_WORDS).index(k) if k in _KIND_WORDS else 99))
    short = {**_KIND_WORDS, "drift": "drift"}
    return ", ".join(f"{rest.count(k)} {short.get(k, k)}" for k in order)


def group_dimensions(runs: Sequence[RunRecord]) -> list[str]:
    """loss and optimizer, plus model, data, noise (label-noise rate) and input_noise (corrupted-input rate) when they
    vary among ``runs``."""
    dims = ["loss", "optimizer"]
    for name in ("model", "data", "noise", "input_noise"):
        if len({r.dimension(name) for r in runs}) > 1:
            dims.append(name)
    return dims


def varying_params(runs: Sequence[RunRecord]) -> list[str]:
    """Params (other than seeds, names and operational settings) whose values differ among ``runs``; a run without
    a param has it null ("None", as MLflow writes null: ``scheduler`` of a run without a scheduler is null)."""
    keys = sorted({k for r in runs for k in r.params})
    return [
        key
        for key in keys
        if not (key.rsplit(".", 1)[-1].endswith("seed") or key.endswith(".name") or is_operational(key))
        and len({r.params.get(key, "None") for r in runs}) > 1
    ]


def _nan_last(x: float) -> tuple[int, float]:
    return (1, 0.0) if not math.isfinite(x) else (0, -x)


def group_runs(runs: Sequence[RunRecord], dims: Sequence[str], rule: analysis.Rule = analysis.Rule()) -> list[GroupRow]:
    """Group runs by ``dims`` and by the setting of the params that vary inside each group; sorted by
    mean test accuracy, best first."""
    values = {r.run_id: run_values(r, rule) for r in runs}
    verdicts = {r.run_id: analysis.judge(r.curves, rule) for r in runs}
    by_key: dict[tuple[str, ...], list[RunRecord]] = {}
    for run in runs:
        by_key.setdefault(tuple(run.dimension(d) for d in dims), []).append(run)
    rows = []
    for key, members in by_key.items():
        varying = varying_params(members)
        by_setting: dict[str, list[RunRecord]] = {}
        for run in members:
            by_setting.setdefault(stats.setting_of({k: run.params.get(k) for k in varying}), []).append(run)
        for setting, group in by_setting.items():
            group = sorted(group, key=lambda r: stats.seed_order(r.seed))  # every table lists a row's runs by seed
            rows.append(
                GroupRow(
                    dict(zip(dims, key)),
                    setting,
                    group,
                    {r.run_id: values[r.run_id] for r in group},
                    {r.run_id: verdicts[r.run_id] for r in group},
                )
            )
    rows.sort(key=lambda row: (_nan_last(row.interval("test_acc").mean), row.label))
    return rows


@dataclass(frozen=True)
class Tuning:
    """Per group, the setting with the best mean validation accuracy (at each run's selected epoch)."""

    chosen: list[GroupRow]
    """One row per group: the runs of its chosen setting, sorted by mean test accuracy."""
    tuned: dict[str, stats.Tuned]
    """By group label: what was chosen among what, and the budget."""
    budgets: dict[str, stats.Budget]
    """By group label: its expected best validation accuracy when 1..N of its settings are tried."""


def tune(rows: Sequence[GroupRow]) -> Tuning | None:
    """Choose each group's setting on validation accuracy only, from the sweep's first runs (stage 1: the runs
    an extension adds do not change the plan they were run for); ``None`` when no group has several settings."""
    if not any(row.setting for row in rows):
        return None
    trials = [
        stats.Trial(row.group, row.setting, run.seed, row.values[run.run_id]["val_acc_selected"], run.run_id)
        for row in rows
        for run in row.runs
        if run.stage == 1
    ]
    tuned = stats.select_tuned(trials)
    chosen = [row for row in rows if row.group in tuned and tuned[row.group].setting == row.setting]
    budgets = {
        group: stats.expected_best(group, [mean for _, mean, k, _ in t.candidates if k]) for group, t in tuned.items()
    }
    return Tuning(chosen, tuned, budgets)


@dataclass(frozen=True)
class Comparison:
    """One row against the reference loss with the same other dimensions, paired by seed, as its family decided."""

    row: GroupRow
    reference: GroupRow
    decision: decisions.Decision
    rank: int | None
    improvement: tuple[float, float, float]
    """Probability that a run of this row beats a run of the reference: (estimate, low, high)."""

    @property
    def paired(self) -> stats.Paired:
        return self.decision.paired

    @property
    def outcome(self) -> str:
        return self.decision.outcome

    @property
    def is_reference(self) -> bool:
        return self.row is self.reference


def _stages(row: GroupRow, reference: GroupRow) -> dict[str, int]:
    """Seed -> 2 when either run of the pair was added by a sweep's extension, else 1."""
    stage: dict[str, int] = {}
    for run in [*row.runs, *reference.runs]:
        stage[run.seed] = max(stage.get(run.seed, 1), run.stage)
    return stage


def _test_size(row: GroupRow) -> int:
    """How many test images a row's runs were tested on (the smallest, were they to differ)."""
    sizes = [run.test_size for run in row.runs if run.test_size]
    return min(sizes) if sizes else TEST_IMAGES


def compare(
    rows: Sequence[GroupRow], reference_loss: str, metric: str = "test_acc", min_effect: float | None = None
) -> list[Comparison]:
    """Each row vs the row of ``reference_loss`` sharing its other dimensions: paired differences of ``metric``
    on shared seeds, decided as one family (lossbench.decisions: Holm, two looks, seeds needed), with ranks
    (ties where intervals overlap) and the probability of improvement.

    ``rows`` should hold one row per group (after :func:`tune` when settings vary).
    """
    blocks: dict[tuple, list[GroupRow]] = {}
    for row in rows:
        blocks.setdefault(tuple(v for k, v in row.key.items() if k != "loss"), []).append(row)
    bounds = QUANTITIES[metric].difference_bounds
    pending = []  # (row, reference, rank, evidence or None for the reference itself)
    for members in blocks.values():
        reference = next((r for r in members if r.key["loss"] == reference_loss), None)
        if reference is None:
            continue
        for row in members:
            paired = stats.paired_difference(row.by_seed(metric), reference.by_seed(metric), bounds=bounds)
            finest = stats.resolution_of(_test_size(reference))
            evidence = decisions.evidence(paired, _stages(row, reference), finest) if row is not reference else None
            pending.append((row, reference, paired, evidence))
    family = [e for *_, e in pending if e is not None]
    decided = iter(decisions.decide(family, min_effect=min_effect))
    out = []
    for row, reference, paired, evidence in pending:
        decision = (
            next(decided)
            if evidence is not None
            else decisions.Decision(paired, 0, (), math.nan, math.nan, "", "reference")
        )
        values = [row.values[r.run_id][metric] for r in row.runs]
        against = [reference.values[r.run_id][metric] for r in reference.runs]
        out.append(Comparison(row, reference, decision, None, stats.probability_of_improvement(values, against)))
    out = _ranked(out, metric)
    order = {label: i for i, label in enumerate(dict.fromkeys(c.reference.label for c in out))}  # best block first
    out.sort(
        key=lambda c: (
            order[c.reference.label],
            c.rank if c.rank is not None else math.inf,
            _nan_last(c.row.interval(metric).mean),
            c.row.label,
        )
    )
    return out


def _ranked(comparisons: list[Comparison], metric: str) -> list[Comparison]:
    """Each comparison with its rank among those of its reference: by mean, ties where intervals overlap, and
    never a tie between a group and the reference it was decided better or worse than. A group with fewer than
    :data:`~lossbench.stats.MIN_SEEDS` runs has no interval and so no rank (``None``): it would tie with all."""
    ranked = []
    for reference in {id(c.reference): c.reference for c in comparisons}.values():
        members = [c for c in comparisons if c.reference is reference]
        apart = [frozenset((c.row.label, reference.label)) for c in members if c.outcome in (stats.BETTER, stats.WORSE)]
        intervals = {c.row.label: c.row.interval(metric) for c in members}
        ranks = stats.rank_with_ties({k: v for k, v in intervals.items() if v.n >= stats.MIN_SEEDS}, apart=apart)
        ranked += [replace(c, rank=ranks.get(c.row.label)) for c in members]
    return ranked


def reference_loss(rows: Sequence[GroupRow], wanted: str) -> str | None:
    """``wanted`` when some row has that loss, else ``None`` (no comparison is possible)."""
    return wanted if any(row.key["loss"] == wanted for row in rows) else None


@dataclass(frozen=True)
class Findings:
    """Everything a report says, before it is written: the runs and how they count, the groups, the tuned
    choice, and the paired comparisons with the reference loss, decided as one family."""

    selection: Selection
    dims: list[str]
    rows: list[GroupRow]
    tuning: Tuning | None
    reference: str | None
    comparisons: list[Comparison]
    rule: analysis.Rule
    min_effect: float | None = None
    """The smallest difference (a fraction) the seeds-needed plans aim for; None: the difference observed."""

    @property
    def noisy(self) -> bool:
        """Whether the runs differ in label-noise rate (the report adds its noise table and figures)."""
        return "noise" in self.dims

    @property
    def shown(self) -> list[GroupRow]:
        """The rows the verdicts speak of: each group at its tuned setting when settings vary, else every row."""
        return self.tuning.chosen if self.tuning else self.rows

    @property
    def decided(self) -> list[Comparison]:
        """The comparisons proper (not the reference against itself)."""
        return [c for c in self.comparisons if not c.is_reference]


def analyse(
    selection: Selection,
    rule: analysis.Rule = analysis.Rule(),
    reference: str = "ce",
    min_effect: float | None = None,
) -> Findings:
    """Group the counted runs, judge them, choose each group's setting on validation, compare with ``reference``."""
    dims = group_dimensions(selection.finished)
    rows = group_runs(selection.finished, dims, rule)
    tuning = tune(rows)
    ref = reference_loss(rows, reference)
    comparisons = compare(tuning.chosen if tuning else rows, ref, min_effect=min_effect) if ref else []
    return Findings(selection, dims, rows, tuning, ref, comparisons, rule, min_effect)


def monitors(runs: Sequence[RunRecord]) -> Mapping[tuple[str, str], int]:
    """How many runs chose their tested checkpoint by each ``(monitor, mode)``."""
    counts: dict[tuple[str, str], int] = {}
    for run in runs:
        counts[run.monitor] = counts.get(run.monitor, 0) + 1
    return counts
