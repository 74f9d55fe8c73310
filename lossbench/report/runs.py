"""Reading a report's runs from MLflow, and deciding which of them count.

Only FINISHED runs count. When several FINISHED runs share a ``config_hash`` (a forced re-run), the
newest (latest start) is kept and the others are listed as superseded. RUNNING, FAILED, KILLED and
SCHEDULED runs are listed with their ``lossbench.failure`` reason, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossbench import analysis
from lossbench.config import sqlite_problem
from lossbench.names import (
    CONFIG_HASH_TAG,
    EPOCH_TIME,
    FIRST_EPOCH_TAG,
    KIND_TRAIN,
    MEMORISED,
    MONITOR_BEFORE_PARAM,
    SEED_TAG,
    STAGE_TAG,
    SWEEP_TAG,
    TEST_SIZE_TAG,
    TRAIN_EVAL_ACC,
    TRAIN_EVAL_NLL,
    VAL_ACC,
    VAL_NLL,
)
from lossbench.store import resolve_uri, sqlite_path, tag_filter

NOISE_PARAM = "data.label_noise.rate"
INPUT_NOISE_PARAM = "data.input_noise.rate"
CURVE_METRICS: tuple[str, ...] = (VAL_NLL, VAL_ACC, TRAIN_EVAL_NLL, TRAIN_EVAL_ACC, EPOCH_TIME, MEMORISED)
"""The metric histories the report reads (the others stay in MLflow)."""

# Grouping dimensions: name -> (tag, param fallback).
_DIMENSIONS: dict[str, tuple[str, str]] = {
    "loss": ("loss", "loss.name"),
    "optimizer": ("optimizer", "optimizer.name"),
    "model": ("model", "model.name"),
    "data": ("data", "data.name"),
}


def grouping_key(name: str) -> tuple[str, str]:
    """How MLflow's UI groups runs by one grouping dimension: ``("tag", "loss")``, or ``("param",
    "data.label_noise.rate")`` for the noise rates, which are params only."""
    if name == "noise":
        return "param", NOISE_PARAM
    if name == "input_noise":
        return "param", INPUT_NOISE_PARAM
    return "tag", _DIMENSIONS[name][0]


class ReportError(Exception):
    """A problem the user can fix (wrong experiment name, a filter that matches nothing)."""


@dataclass(frozen=True)
class RunRecord:
    """What the report needs of one MLflow run."""

    run_id: str
    name: str
    status: str
    start_time: int
    """Milliseconds since the epoch."""
    tags: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    """Latest value of each metric (``test/*`` are logged once)."""
    curves: Mapping[str, Sequence[float]] = field(default_factory=dict)
    """Per-epoch histories of :data:`CURVE_METRICS`."""

    def dimension(self, name: str) -> str:
        """The run's loss, optimizer, model, data, label-noise rate (``noise``) or corrupted-input rate
        (``input_noise``; 0.0 for runs recorded before inputs could be corrupted) (tag, else param), ``?`` if unknown."""
        if name == "noise":
            rate = self.noise_rate
            return "?" if rate is None else str(rate)
        if name == "input_noise":
            return str(self.input_noise_rate)
        tag, param = _DIMENSIONS[name]
        return self.tags.get(tag) or self.params.get(param) or "?"

    @property
    def noise_rate(self) -> float | None:
        """``data.label_noise.rate`` as a number; ``None`` when the run has no such param."""
        raw = self.params.get(NOISE_PARAM)
        try:
            return float(raw) if raw is not None else None
        except ValueError:
            return None

    @property
    def input_noise_rate(self) -> float:
        """``data.input_noise.rate`` as a number (0.0 when the run has no such param: made before it existed)."""
        try:
            return float(self.params.get(INPUT_NOISE_PARAM, 0.0))
        except ValueError:
            return 0.0

    @property
    def test_size(self) -> int | None:
        """Images in the run's test set (its ``test_size`` tag): one image is ``1 / test_size`` of test accuracy;
        None for runs recorded before the tag existed."""
        raw = self.tags.get(TEST_SIZE_TAG)
        try:
            return int(raw) if raw is not None else None
        except ValueError:
            return None

    @property
    def config_hash(self) -> str | None:
        return self.tags.get(CONFIG_HASH_TAG) or None

    @property
    def stage(self) -> int:
        """1 for a sweep's first runs, 2 for the runs its extension added (:data:`~lossbench.names.STAGE_TAG`)."""
        return int(self.tags.get(STAGE_TAG, 1))

    @property
    def seed(self) -> str:
        return self.tags.get(SEED_TAG) or self.params.get("seed") or "?"

    @property
    def monitor(self) -> tuple[str, str]:
        """``(checkpoint.monitor, checkpoint.mode)`` that chose the run's tested checkpoint.

        Runs recorded before the monitor was a param used :data:`~lossbench.names.MONITOR_BEFORE_PARAM`.
        """
        before_monitor, before_mode = MONITOR_BEFORE_PARAM
        return self.params.get("checkpoint.monitor", before_monitor), self.params.get("checkpoint.mode", before_mode)


@dataclass(frozen=True)
class Selection:
    """The runs of a report, split by how they count."""

    finished: list[RunRecord]
    """FINISHED runs entering the means (newest per ``config_hash``)."""
    superseded: list[tuple[RunRecord, RunRecord]]
    """(older FINISHED run, the newer run with the same ``config_hash`` that replaces it)."""
    not_finished: list[RunRecord]
    """RUNNING, FAILED, KILLED, SCHEDULED runs: listed, never counted."""


def select_runs(runs: Iterable[RunRecord]) -> Selection:
    """Split runs into finished (deduplicated by ``config_hash``, newest kept), superseded and not finished."""
    finished: list[RunRecord] = []
    not_finished: list[RunRecord] = []
    for run in sorted(runs, key=lambda r: (r.start_time, r.run_id)):
        (finished if run.status == "FINISHED" else not_finished).append(run)
    newest: dict[str, RunRecord] = {}
    for run in finished:  # oldest first, so the last one seen per hash is the newest
        if run.config_hash is not None:
            newest[run.config_hash] = run
    kept = [r for r in finished if r.config_hash is None or newest[r.config_hash] is r]
    superseded = [
        (r, newest[r.config_hash]) for r in finished if r.config_hash is not None and newest[r.config_hash] is not r
    ]
    return Selection(kept, superseded, not_finished)


def train_filter(sweep_id: str | None = None) -> str:
    """The MLflow search filter for the training runs of an experiment, or of one sweep."""
    try:
        return tag_filter(KIND_TRAIN, None if sweep_id is None else {SWEEP_TAG: sweep_id})
    except ValueError as e:
        raise ReportError(str(e)) from e


def load_runs(
    client: Any,
    experiment_id: str,
    filter_string: str,
    curve_metrics: Sequence[str] = CURVE_METRICS,
    page_size: int = 1000,
) -> list[RunRecord]:
    """Every active run matching ``filter_string`` (paging through all results), oldest first, with its curves."""
    records: list[RunRecord] = []
    token: str | None = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            max_results=page_size,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        for run in page:
            curves = {}
            for key in curve_metrics:
                if key in run.data.metrics:
                    history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.timestamp)
                    first_step = int(run.data.tags.get(FIRST_EPOCH_TAG, 0))  # 0: recorded before epochs counted from 1
                    curves[key] = analysis.dense_curve(((m.step, m.value) for m in history), first_step)
            records.append(
                RunRecord(
                    run_id=run.info.run_id,
                    name=run.info.run_name or run.info.run_id,
                    status=run.info.status,
                    start_time=int(run.info.start_time or 0),
                    tags=dict(run.data.tags),
                    params=dict(run.data.params),
                    metrics=dict(run.data.metrics),
                    curves=curves,
                )
            )
        token = page.token
        if not token:
            return records


def check_store_exists(uri: str) -> None:
    """Refuse a ``sqlite:///`` URI whose file is missing, rather than let MLflow create an empty store."""
    path = sqlite_path(uri if "://" in uri else resolve_uri(uri))  # a bare path is an SQLite file, as train reads it
    if path is not None and str(path) not in ("", ".", ":memory:") and not path.exists():
        raise ReportError(
            f"no MLflow store at {Path(path).resolve()} (from {uri}): the file does not exist. "
            "Run from the folder where training ran, or pass --tracking-uri / set MLFLOW_TRACKING_URI."
        )
    if path is not None and str(path) not in ("", ".", ":memory:") and (problem := sqlite_problem(path)):
        raise ReportError(f"tracking store {uri}: {problem}")


def find_experiment(client: Any, name: str, uri: str) -> Any:
    """The experiment called ``name``; a :class:`ReportError` listing the store's experiments otherwise."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage == "deleted":
        names = sorted(e.name for e in client.search_experiments())
        listing = ", ".join(repr(n) for n in names) if names else "none"
        state = "is deleted" if experiment is not None else "not found"
        raise ReportError(f"experiment {name!r} {state} in tracking store {uri}. Available experiments: {listing}")
    return experiment


def no_runs_error(client: Any, experiment: Any, uri: str, filter_string: str, sweep_id: str | None) -> ReportError:
    """The error for a filter that matches nothing, naming the sweep ids that do exist."""
    message = f"no runs in experiment {experiment.name!r} ({uri}) match the filter: {filter_string}"
    if sweep_id is not None:
        runs = client.search_runs([experiment.experiment_id], filter_string=train_filter(), max_results=1000)
        sweeps = sorted({r.data.tags[SWEEP_TAG] for r in runs if SWEEP_TAG in r.data.tags})
        message += (
            f". Sweep ids among its training runs: {', '.join(sweeps)}"
            if sweeps
            else ". None of its training runs has a sweep_id tag"
        )
    return ReportError(message)
