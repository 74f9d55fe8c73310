"""The report against a real MLflow SQLite store, with numbers checked against what the test logged."""

from __future__ import annotations

import base64
import json
import math
import random
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from scipy import stats as scipy_stats

from lossbench import report

SWEEP = "sw1"
FAILURE = "diverged: non-finite loss at epoch 3 step 412"


@dataclass
class FakeRun:
    """What one synthetic training run logs."""

    name: str
    loss: str
    seed: int
    status: str = "FINISHED"
    optimizer: str = "adam"
    epochs: int = 6
    onset: bool = False
    """Val NLL bottoms out at epoch 3, then rises while train NLL falls (onset = 3 with patience 3)."""
    shift: float = 0.0
    test_acc: float | None = None
    test_last_acc: float | None = None
    config_hash: str | None = None
    start_time: int = 0
    sweep_id: str | None = SWEEP
    noise_rate: float = 0.0
    failure: str | None = None
    test_size: int | None = None
    """Images in the run's test set, as runs tag it since datasets other than the MNIST family exist."""
    legacy: bool = False
    """Recorded before epochs were numbered from 1: its first epoch at MLflow step 0, no first-epoch tag."""
    curves: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        e = range(self.epochs)
        train_nll = [1.0 / (i + 1) + self.shift for i in e]
        val_nll = (
            ([1.0, 0.6, 0.5, 0.55, 0.62, 0.7][i] + self.shift for i in e)
            if self.onset
            else (1.1 / (i + 1) + 0.1 + self.shift for i in e)
        )
        self.curves = {
            "train_eval/nll": train_nll,
            "val/nll": list(val_nll),
            "train_eval/acc": [0.7 + 0.04 * i + self.shift for i in e],
            "val/acc": [0.68 + 0.03 * i - self.shift for i in e],
            "train/loss": [1.2 / (i + 1) for i in e],
            "time/epoch_s": [0.5 + 0.1 * self.seed + 0.01 * i for i in e],
        }


def log_run(client: MlflowClient, experiment_id: str, run: FakeRun) -> str:
    """One run, its tags, params and metrics in two batched calls."""
    tags = {
        "lossbench.kind": "train",
        "loss": run.loss,
        "optimizer": run.optimizer,
        "model": "linear",
        "data": "mnist",
        "seed": str(run.seed),
        "config_hash": run.config_hash or f"{run.name}-hash",
    }
    if run.sweep_id:
        tags["sweep_id"] = run.sweep_id
    if run.failure:
        tags["lossbench.failure"] = run.failure
    if not run.legacy:
        tags["lossbench.first_epoch"] = "1"
    if run.test_size is not None:
        tags["test_size"] = str(run.test_size)
    created = client.create_run(experiment_id, run_name=run.name, start_time=run.start_time, tags=tags)
    first = 0 if run.legacy else 1  # MLflow's step of the first epoch
    metrics = [
        Metric(key, value, 1000 + i, first + i) for key, values in run.curves.items() for i, value in enumerate(values)
    ]
    if run.test_acc is not None:
        metrics.append(Metric("test/acc", run.test_acc, 5000, 0))
    if run.test_last_acc is not None:
        metrics.append(Metric("test_last/acc", run.test_last_acc, 5000, 0))
    params = [
        Param("loss.name", run.loss),
        Param("optimizer.name", run.optimizer),
        Param("seed", str(run.seed)),
        Param("data.label_noise.rate", str(run.noise_rate)),
        Param("optimizer.lr", "0.001"),
        Param("tracking.run_name", run.name),
        Param("checkpoint.monitor", "val/acc"),
        Param("checkpoint.mode", "max"),
    ]
    client.log_batch(created.info.run_id, metrics=metrics, params=params)
    if run.status != "RUNNING":
        client.set_terminated(created.info.run_id, run.status)
    return created.info.run_id


# The sweep: 3 losses × 3 seeds, an older duplicate of one of them, one FAILED, one RUNNING, and a run of
# another sweep that must not show up. mse beats ce clearly, mae is within noise of it: one decided comparison,
# one undecided. Sorting is by test accuracy, not alphabetical. ce-s1 was recorded before epochs were numbered
# from 1 (its first epoch at MLflow step 0).
SWEEP_RUNS = [
    FakeRun("ce-old", "ce", 0, onset=True, test_acc=0.50, config_hash="h-ce-0", start_time=1),
    FakeRun("ce-s0", "ce", 0, onset=True, test_acc=0.910, config_hash="h-ce-0", start_time=10),
    FakeRun("ce-s1", "ce", 1, onset=True, shift=0.02, test_acc=0.930, start_time=11, legacy=True),
    FakeRun("ce-s2", "ce", 2, onset=True, shift=0.01, test_acc=0.920, start_time=12),
    FakeRun("mse-s0", "mse", 0, test_acc=0.950, start_time=13),
    FakeRun("mse-s1", "mse", 1, shift=0.01, test_acc=0.960, start_time=14),
    FakeRun("mse-s2", "mse", 2, shift=0.005, test_acc=0.958, start_time=15),
    FakeRun("mae-s0", "mae", 0, test_acc=0.915, start_time=16),
    FakeRun("mae-s1", "mae", 1, shift=0.01, test_acc=0.931, start_time=17),
    FakeRun("mae-s2", "mae", 2, shift=0.005, test_acc=0.926, start_time=18),
    FakeRun("mse-s3-failed", "mse", 3, status="FAILED", epochs=3, failure=FAILURE, start_time=19),
    FakeRun("ce-s3-running", "ce", 3, status="RUNNING", epochs=2, start_time=20),
    FakeRun("other-sweep", "ce", 0, test_acc=0.10, sweep_id="sw2", start_time=21),
]
KEPT = {"ce": ["ce-s0", "ce-s1", "ce-s2"], "mse": ["mse-s0", "mse-s1", "mse-s2"], "mae": ["mae-s0", "mae-s1", "mae-s2"]}
SWEEP_COMMAND = ["+experiment=classic_losses", "loss=ce,mse,mae", "seed=0,1,2", "tracking.uri=sqlite:////x/a b.db"]

NOISE_ACC = {  # (loss, rate) -> [(test/acc, test_last/acc) per seed]
    ("ce", 0.0): [(0.92, 0.92), (0.93, 0.925)],
    ("ce", 0.4): [(0.85, 0.70), (0.86, 0.72)],
    ("mae", 0.0): [(0.90, 0.90), (0.91, 0.905)],
    ("mae", 0.4): [(0.88, 0.87), (0.87, 0.86)],
}


@dataclass
class Store:
    uri: str
    client: MlflowClient
    sweep_parent_id: str
    run_ids: dict[str, str]
    result: report.ReportResult
    noisy: report.ReportResult
    noisy_stdout: str


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("exp", artifact_location=(root / "artifacts").as_uri())
    tags = {"lossbench.kind": "sweep", "sweep_id": SWEEP, "sweep_overrides": json.dumps(SWEEP_COMMAND)}
    parent = client.create_run(exp, run_name="sweep-sw1", tags=tags)
    client.set_terminated(parent.info.run_id, "FINISHED")
    run_ids = {run.name: log_run(client, exp, run) for run in SWEEP_RUNS}
    result = report.build_report("exp", sweep_id=SWEEP, tracking_uri=uri, out_dir=root / "report")

    noisy_exp = client.create_experiment("noisy", artifact_location=(root / "noisy-artifacts").as_uri())
    for (loss, rate), pairs in NOISE_ACC.items():
        for seed, (best, last) in enumerate(pairs):
            log_run(
                client,
                noisy_exp,
                FakeRun(
                    f"{loss}-{rate}-s{seed}",
                    loss,
                    seed,
                    test_acc=best,
                    test_last_acc=last,
                    noise_rate=rate,
                    sweep_id=None,
                    start_time=seed,
                ),
            )
    lines: list[str] = []
    assert (
        report.main(["--experiment", "noisy", "--tracking-uri", uri, "--out", str(root / "noisy")], echo=lines.append)
        == 0
    )
    noisy = report.build_report("noisy", tracking_uri=uri, out_dir=root / "noisy")  # again: reuses its run
    return Store(uri, client, parent.info.run_id, run_ids, result, noisy, "\n".join(lines))


def section(markdown: str, heading: str) -> str:
    """The text under ``## heading`` up to the next heading of the same level."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"no section {heading!r}"
    return match.group(1)


def plain(text: str) -> str:
    """Markdown text with its escapes removed: what a reader sees."""
    return re.sub(r"\\(.)", r"\1", text)


def table(markdown: str, heading: str) -> list[dict[str, str]]:
    """The first Markdown table of a section, as one dict per row (cells as a reader sees them)."""
    lines = [ln for ln in section(markdown, heading).splitlines() if ln.startswith("|")]
    split = lambda line: [plain(c.strip()) for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]  # noqa: E731
    header = split(lines[0])
    return [dict(zip(header, split(ln))) for ln in lines[2:]]


def t_interval(values: Sequence[float]) -> tuple[float, float]:
    m = statistics.mean(values)
    half = scipy_stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return m - half, m + half


def mean_ci(values: Sequence[float], scale: float, digits: int) -> str:
    """Mean with its two-sided 95 % Student-t interval (within 0-1), from scipy, formatted as the report does; with
    fewer than 3 values, the values."""
    m = statistics.mean(values)
    if len(values) < 3:
        return f"{m * scale:.{digits}f} (n={len(values)}: " + ", ".join(f"{v * scale:.{digits}f}" for v in values) + ")"
    low, high = t_interval(values)
    low, high = max(low, 0.0), min(high, 1.0)
    return f"{m * scale:.{digits}f} [{low * scale:.{digits}f}, {high * scale:.{digits}f}] (n={len(values)})"


def by_name(name: str) -> FakeRun:
    return next(r for r in SWEEP_RUNS if r.name == name)


def selected_epoch(run: FakeRun) -> int:
    """The highest val/acc, ties to the earlier epoch (the runs say checkpoint.monitor = val/acc)."""
    return 1 + max(range(run.epochs), key=lambda i: (run.curves["val/acc"][i], -i))  # epochs count from 1


def test_results_table_has_intervals_selected_and_last_figures(store: Store) -> None:
    markdown = store.result.markdown.read_text()
    rows = table(markdown, "Results")
    assert [r["loss"] for r in rows] == ["mse", "mae", "ce"], "sorted by test acc"
    assert "3 seeds per group: mean [95 % Student-t interval, within 0–100 %]" in plain(section(markdown, "Results"))
    for row in rows:
        runs = [by_name(n) for n in KEPT[row["loss"]]]
        assert row["test acc @selected (%)"] == mean_ci([r.test_acc for r in runs], 100, 2).removesuffix(" (n=3)")
        sel = [selected_epoch(r) for r in runs]
        assert row["selected epoch"] == (str(sel[0]) if len(set(sel)) == 1 else f"{min(sel)}–{max(sel)}")
        gaps_sel = [r.curves["train_eval/acc"][e - 1] - r.curves["val/acc"][e - 1] for r, e in zip(runs, sel)]
        gaps_last = [r.curves["train_eval/acc"][-1] - r.curves["val/acc"][-1] for r in runs]
        assert (
            row["gap acc (pp) sel → last"]
            == f"{statistics.mean(gaps_sel) * 100:.1f} → {statistics.mean(gaps_last) * 100:.1f}"
        )
    onset = {r["loss"]: r["overfits after epoch (runs)"] for r in rows}
    assert onset == {"ce": "3 (3/3)", "mse": "— (0/3)", "mae": "— (0/3)"}, "ce-s1 (step 0 = epoch 1) reads as ce-s0"
    assert "best val/acc (highest)" in section(markdown, "Results"), "says which monitor chose"


def test_the_answer_comes_first_and_the_verdicts_in_plain_words(store: Store) -> None:
    markdown = store.result.markdown.read_text()
    assert markdown.index("## Answer") < markdown.index("## Verdicts") < markdown.index("## Results")
    answer = plain(section(markdown, "Answer")).strip()
    assert answer == store.result.summary["answer"]
    mse = mean_ci([by_name(n).test_acc for n in KEPT["mse"]], 100, 2).removesuffix(" (n=3)").replace(" [", " % [")
    assert answer.startswith(f"Best test accuracy: mse / adam {mse} (rank 1 with mae / adam: intervals overlap). ")
    ref = [by_name(n).test_acc for n in KEPT["ce"]]
    differences = {}
    for loss in ("mse", "mae"):
        diffs = [by_name(n).test_acc - r for n, r in zip(KEPT[loss], ref)]
        low, high = t_interval(diffs)
        differences[loss] = f"{statistics.mean(diffs) * 100:+.2f} pp [{low * 100:+.2f}, {high * 100:+.2f}]"
    runs = store.result.summary["extension"]["runs"]
    assert (
        "Against ce on test accuracy (Holm over 2 comparisons, error rate 0.05): "
        f"better: mse / adam {differences['mse']}; "
        f"not distinguishable yet: mae / adam {differences['mae']} ({runs} more runs would decide 1 of them). "
    ) in answer, "every difference with its interval; the runs the decide command runs"
    assert answer.endswith("Overfitting: ce / adam (in 3/3 runs, after epoch 3); the other 2 groups do not.")
    verdicts = plain(section(markdown, "Verdicts"))
    assert "**ce / adam**: overfits in 3/3 runs, after epoch 3 (smoothed val NLL +" in verdicts
    assert "**mse / adam, mae / adam**: no overfitting" in verdicts, "a shared verdict is said once"
    runs = {r["run"].split("]")[0].lstrip("["): r for r in table(markdown, "Runs used")}
    assert runs["ce-s0"]["verdict"].startswith("overfits after epoch 3")
    assert store.result.answer[0] == answer and store.result.answer[-1].startswith(
        "decide: python -m lossbench.train -m"
    )


def independent_decisions(store: Store) -> dict[str, tuple[float, float]]:
    """(pooled difference, Holm-adjusted p) per group, from scipy and statsmodels: each stage-1 paired t statistic
    as a normal score, the two-look design's p (scipy's bivariate normal), Holm over the two comparisons."""
    from statsmodels.stats.multitest import multipletests

    rho = math.sqrt(0.5)
    mvn = scipy_stats.multivariate_normal(mean=[0, 0], cov=[[1, rho], [rho, 1]])
    ref = [by_name(n).test_acc for n in KEPT["ce"]]
    found, p_seq = {}, []
    for loss in ("mse", "mae"):
        diffs = [by_name(n).test_acc - r for n, r in zip(KEPT[loss], ref)]
        t = scipy_stats.ttest_rel([by_name(n).test_acc for n in KEPT[loss]], ref).statistic
        z = abs(scipy_stats.norm.ppf(scipy_stats.t.cdf(t, 2)))
        p_seq.append(1 - mvn.cdf([z, z], lower_limit=[-z, -z]))
        found[loss] = statistics.mean(diffs)
    holm = multipletests(p_seq, method="holm")[1]
    return {loss: (found[loss], p) for loss, p in zip(("mse", "mae"), holm)}


def test_paired_comparisons_are_decided_as_one_family(store: Store) -> None:
    rows = {r["group"]: r for r in table(store.result.markdown.read_text(), "Compared with ce")}
    assert rows["ce / adam"]["difference (pp) [95 % CI]"] == "reference"
    expected = independent_decisions(store)
    ref = [by_name(n).test_acc for n in KEPT["ce"]]
    for loss, (mean, p_holm) in expected.items():
        row = rows[f"{loss} / adam"]
        diffs = [by_name(n).test_acc - r for n, r in zip(KEPT[loss], ref)]
        low, high = t_interval(diffs)
        assert row["difference (pp) [95 % CI]"] == f"{mean * 100:+.2f} [{low * 100:+.2f}, {high * 100:+.2f}] (n=3)"
        assert row["p, Holm-adjusted"] == f"{p_holm:.2g} (look 1)"
    assert expected["mse"][1] < 0.05 < expected["mae"][1]
    assert rows["mse / adam"]["verdict"].startswith("better (Holm-adjusted p=")
    assert re.fullmatch(
        r"not distinguishable at n=3; \d+ more seeds decide a 0\.40 pp difference with \d+ % power",
        rows["mae / adam"]["verdict"],
    )
    text = plain(section(store.result.markdown.read_text(), "Compared with ce"))
    assert "The 2 comparisons are decided together" in text and "Pocock boundary" in text


def test_the_report_asks_for_the_seeds_that_would_decide_and_gives_the_command(store: Store) -> None:
    summary = store.result.summary
    (mae,) = [c for c in summary["comparisons"] if c["label"] == "mae / adam"]
    extra = mae["plan"]["extra_seeds"]
    assert mae["plan"]["power"] >= 0.8 and extra >= 3
    extension = summary["extension"]
    assert {g["group"]: g["new_seeds"] for g in extension["groups"]} == {"mae / adam": extra, "ce / adam": extra}
    assert {g["group"]: g["overrides"] for g in extension["groups"]} == {
        "mae / adam": f"loss=mae seed=range(3,{3 + extra})",
        "ce / adam": f"loss=ce seed=range(3,{3 + extra})",
    }, "new seeds after the highest one used; mse, decided, gets none"
    command = extension["command"]
    assert command.startswith(
        "python -m lossbench.train -m +experiment=classic_losses 'tracking.uri=sqlite:////x/a b.db'"
    )
    assert "loss=ce,mse,mae" not in command and "seed=0,1,2" not in command, "the groups replace the swept keys"
    assert f"tracking.sweep_id={SWEEP} tracking.stage=2 " in command
    assert command.endswith(
        f"""'+hydra.sweeper.groups=["loss=mae seed=range(3,{3 + extra})","loss=ce seed=range(3,{3 + extra})"]'"""
    )
    assert command in plain(section(store.result.markdown.read_text(), "Deciding the undecided"))


def test_summary_json_holds_the_same_numbers(store: Store) -> None:
    summary = json.loads(store.result.summary_json.read_text())
    assert summary["group_by"] == ["loss", "optimizer"]
    assert summary["counts"] == {"matched": 12, "finished": 9, "superseded": 1, "not_finished": 2}
    rows = {r["loss"]: r for r in summary["rows"]}
    for loss, names in KEPT.items():
        accs = [by_name(n).test_acc for n in names]
        assert rows[loss]["test_acc"]["mean"] == pytest.approx(statistics.mean(accs))
        assert rows[loss]["test_acc"]["std"] == pytest.approx(statistics.stdev(accs))
        low, high = t_interval(accs)
        assert (rows[loss]["test_acc"]["low"], rows[loss]["test_acc"]["high"]) == pytest.approx((low, min(high, 1.0)))
        assert rows[loss]["n"] == 3
        assert sorted(rows[loss]["run_ids"]) == sorted(store.run_ids[n] for n in names)
    assert rows["ce"]["onset_epoch"]["mean"] == 3.0 and rows["ce"]["onset_epoch"]["n"] == 3
    assert rows["mse"]["onset_epoch"]["n"] == 0 and rows["mse"]["onset_epoch"]["mean"] is None
    assert rows["ce"]["verdict"].startswith("overfits in 3/3 runs")
    comparisons = {c["label"]: c for c in summary["comparisons"]}
    for loss, (mean, p_holm) in independent_decisions(store).items():
        assert comparisons[f"{loss} / adam"]["mean"] == pytest.approx(mean)
        assert comparisons[f"{loss} / adam"]["p_holm"] == pytest.approx(p_holm, rel=1e-5)
    assert (
        comparisons["mse / adam"]["outcome"] == "better" and comparisons["mae / adam"]["outcome"] == "indistinguishable"
    )
    assert summary["decisions"]["comparisons"] == 2 and summary["decisions"]["alpha"] == 0.05
    assert "noise" not in summary["group_by"], "all runs have the same noise rate"


def test_unfinished_runs_are_listed_and_never_counted(store: Store) -> None:
    markdown = store.result.markdown.read_text()
    unfinished = {r["run"]: r for r in table(markdown, "Not finished")}
    assert set(unfinished) == {"mse-s3-failed", "ce-s3-running"}
    assert unfinished["mse-s3-failed"]["status"] == "FAILED"
    assert unfinished["mse-s3-failed"]["reason"] == FAILURE
    assert unfinished["mse-s3-failed"]["epochs"] == "3"
    assert unfinished["ce-s3-running"]["status"] == "RUNNING"
    assert unfinished["ce-s3-running"]["reason"] == "in progress"
    used = {r["run id"]: r["run"] for r in table(markdown, "Runs used")}
    assert {store.run_ids[n] for names in KEPT.values() for n in names} == set(used)
    for run_id, link in used.items():  # each name links to its run in the MLflow UI
        assert re.fullmatch(
            rf"\[[\w-]+\]\(http://127\.0\.0\.1:5000/#/experiments/\d+/runs/{run_id}\?workflowType=machine_learning\)",
            link,
        )
    assert "other-sweep" not in markdown, "a run of another sweep leaked in"
    html = store.result.html.read_text()
    assert "<td>FAILED</td>" in html and FAILURE in html


def test_duplicate_config_hash_keeps_the_newest(store: Store) -> None:
    markdown = store.result.markdown.read_text()
    superseded = table(markdown, "Superseded runs")
    assert superseded == [
        {
            "superseded run": "ce-old",
            "config_hash": "h-ce-0",
            "kept (newest)": "ce-s0",
            "superseded run id": store.run_ids["ce-old"],
            "kept run id": store.run_ids["ce-s0"],
        }
    ]
    assert "superseded by a newer run with the same `config_hash` (h-ce-0)" in section(markdown, "Notes")


def test_report_is_logged_to_the_sweep_parent_run(store: Store) -> None:
    assert store.result.report_run_id == store.sweep_parent_id
    logged = {Path(a.path).name for a in store.client.list_artifacts(store.sweep_parent_id, "report")}
    assert {"report.md", "report.html", "summary.json", "curves.png", "overview.png", "results.json"} <= logged
    parent = store.client.get_run(store.sweep_parent_id)
    assert parent.info.status == "FINISHED"
    note = parent.data.tags["mlflow.note.content"]  # the run's description in MLflow's UI
    assert note.startswith("**Answer.** Best test accuracy: mse / adam "), (
        "the answer first: it shows with the pane folded"
    )
    assert plain(note.split("\n\n")[0]).removeprefix("**Answer.** ") == store.result.summary["answer"], "the same words"
    assert f"get-artifact?path=report%2Foverview.png&run_uuid={parent.info.run_id}" in note
    assert "curves.png" not in note, "the wide grid stays in report.html; the pane gets the 540-px overview"
    assert "report/report.html" in note
    assert not parent.data.metrics, "no per-group metrics to drown the runs' own charts"
    results = json.loads(
        (Path(store.client.download_artifacts(store.sweep_parent_id, "report/results.json"))).read_text()
    )
    table_ = dict(zip(results["columns"], zip(*results["data"])))
    summary_rows = {r["label"]: r for r in store.result.summary["rows"]}
    for group, acc in zip(table_["group"], table_["test acc @selected (%)"]):
        assert acc == pytest.approx(summary_rows[group]["test_acc"]["mean"] * 100), "in %, as the report says"


def test_html_is_self_contained_with_its_figures_embedded(store: Store) -> None:
    html = store.result.html.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<style>" in html and "<table>" in html
    sources = re.findall(r'<img src="([^"]+)"', html)
    embedded = [base64.b64decode(src.split(",", 1)[1]) for src in sources if src.startswith("data:image/png;base64,")]
    assert len(embedded) == len(sources), "figures embedded: MLflow's viewer cannot follow relative links"
    figures = {
        (store.result.out_dir / n).read_bytes() for n in ("overview.png", "curves.png", "gap_acc.png", "gap_nll.png")
    }
    assert figures <= set(embedded)
    assert not re.search(r'src="https?://', html), "no external resources"
    assert set(re.findall(r'href="(https?://[^/"]+)', html)) == {"http://127.0.0.1:5000"}, "links only to the MLflow UI"
    assert not (store.result.out_dir / "report_inline.html").exists(), "one HTML page, not two"


def test_noisy_labels_table(store: Store) -> None:
    markdown = store.noisy.markdown.read_text()
    rows = table(markdown, "Noisy labels")
    assert [(r["loss"], r["noise rate"]) for r in rows] == [
        ("ce", "0.0"),
        ("ce", "0.4"),
        ("mae", "0.0"),
        ("mae", "0.4"),
    ]
    for row in rows:
        pairs = NOISE_ACC[(row["loss"], float(row["noise rate"]))]
        assert row["test acc @selected (%)"] == mean_ci([b for b, _ in pairs], 100, 2)
        assert row["test acc @last (%)"] == mean_ci([last for _, last in pairs], 100, 2)
        assert row["memorisation drop (pp)"] == mean_ci([b - last for b, last in pairs], 100, 2)
    assert (store.noisy.out_dir / "noise.png").is_file()
    noise_png = base64.b64encode((store.noisy.out_dir / "noise.png").read_bytes()).decode()
    assert f'src="data:image/png;base64,{noise_png}"' in store.noisy.html.read_text()
    results = table(markdown, "Results")
    assert len(results) == 4 and {r["noise rate"] for r in results} == {"0.0", "0.4"}, "noise rates are not mixed"
    summary = json.loads(store.noisy.summary_json.read_text())
    assert len(summary["rows"]) == 4 and {r["noise"] for r in summary["rows"]} == {"0.0", "0.4"}


def test_without_a_sweep_the_report_goes_to_one_report_run(store: Store) -> None:
    run = store.client.get_run(store.noisy.report_run_id)
    assert run.info.run_name == "report-noisy" and run.info.status == "FINISHED"
    assert run.data.tags["lossbench.kind"] == "report"
    reports = store.client.search_runs([store.noisy.experiment_id], "tags.`lossbench.kind` = 'report'")
    assert len(reports) == 1, "a second report reuses the run"
    assert f"/mlflow ui --backend-store-uri {store.uri}" in store.noisy_stdout
    assert store.noisy.report_run_id in store.noisy_stdout


def test_unknown_experiment_names_the_store_and_lists_experiments(store: Store, capsys: Any) -> None:
    with pytest.raises(report.ReportError) as error:
        report.build_report("nope", tracking_uri=store.uri, log_to_mlflow=False)
    message = str(error.value)
    assert "'nope' not found" in message and store.uri in message and "'exp'" in message and "'noisy'" in message
    assert report.main(["--experiment", "nope", "--tracking-uri", store.uri]) == 2
    assert "'nope' not found" in capsys.readouterr().err


def test_a_missing_sqlite_file_is_an_error_not_a_new_store(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'absent.db'}"
    with pytest.raises(report.ReportError, match="does not exist"):
        report.build_report("exp", tracking_uri=uri)
    assert not (tmp_path / "absent.db").exists()


def test_no_matching_runs_says_the_filter(store: Store) -> None:
    with pytest.raises(report.ReportError) as error:
        report.build_report("exp", sweep_id="missing", tracking_uri=store.uri, log_to_mlflow=False)
    message = str(error.value)
    assert "tags.sweep_id = 'missing'" in message and "sw1, sw2" in message


def test_default_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    from lossbench.store_links import default_tracking_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracker:5000")
    assert default_tracking_uri() == "http://tracker:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert default_tracking_uri() == "sqlite:///mlflow.db"
    assert report.default_out_dir("lossbench", "a/b") == Path("reports/lossbench-a_b")


def test_select_runs_without_config_hash_keeps_everything() -> None:
    runs = [report.RunRecord(str(i), f"r{i}", "FINISHED", i) for i in range(3)]
    selection = report.select_runs([*runs, report.RunRecord("k", "killed", "KILLED", 9)])
    assert selection.finished == runs and not selection.superseded
    assert [r.name for r in selection.not_finished] == ["killed"]


def test_rows_mixing_other_params_are_flagged_but_seeds_are_not() -> None:
    def run(i: int, lr: str) -> report.RunRecord:
        return report.RunRecord(
            str(i),
            f"r{i}",
            "FINISHED",
            i,
            params={"seed": str(i), "data.label_noise.seed": str(i), "tracking.run_name": f"r{i}", "optimizer.lr": lr},
        )

    assert report.varying_params([run(0, "0.001"), run(1, "0.001")]) == []
    assert report.varying_params([run(0, "0.001"), run(1, "0.1")]) == ["optimizer.lr"]


def test_a_param_a_run_lacks_is_null_as_mlflow_writes_it() -> None:
    """scheduler=none,cosine: the first run has param scheduler=None, the second scheduler.* and no scheduler."""
    none = report.RunRecord("0", "r0", "FINISHED", 0, params={"scheduler": "None"})
    cosine = report.RunRecord("1", "r1", "FINISHED", 1, params={"scheduler._target_": "CosineAnnealingLR"})
    assert report.varying_params([none, cosine]) == ["scheduler._target_"]
    rows = report.group_runs([none, cosine], ["loss", "optimizer"])
    assert sorted(row.setting for row in rows) == ["scheduler._target_=CosineAnnealingLR", "scheduler._target_=None"]


def test_load_runs_pages_through_every_result(store: Store) -> None:
    experiment_id = store.client.get_experiment_by_name("exp").experiment_id
    runs = report.load_runs(store.client, experiment_id, report.train_filter(SWEEP), page_size=2)
    assert [r.name for r in runs] == [r.name for r in SWEEP_RUNS if r.sweep_id == SWEEP]
    ce_s0 = next(r for r in runs if r.name == "ce-s0")
    assert list(ce_s0.curves["val/nll"]) == pytest.approx(by_name("ce-s0").curves["val/nll"])


@pytest.mark.parametrize("seeds", [2, 3, 10])
def test_every_interval_of_a_report_lies_within_its_range(tmp_path: Path, seeds: int) -> None:
    """A loss that sometimes fails to train (test accuracy 99.9 % or 60 %) next to a steady one near 100 %: every
    accuracy interval in summary.json stays within [0, 1] and every difference within [-1, 1]; two seeds give their
    values, not an interval."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("bounds", artifact_location=(tmp_path / "artifacts").as_uri())
    rng = random.Random(seeds)
    for seed in range(seeds):
        steady = min(1.0, 0.998 + 0.001 * rng.random())
        log_run(client, exp, FakeRun(f"ce-s{seed}", "ce", seed, test_acc=steady, test_last_acc=steady, sweep_id=None))
        flaky = 0.999 if seed % 2 else 0.6
        log_run(client, exp, FakeRun(f"mae-s{seed}", "mae", seed, test_acc=flaky, test_last_acc=flaky, sweep_id=None))
    result = report.build_report("bounds", tracking_uri=uri, out_dir=tmp_path / "report", log_to_mlflow=False)
    for row in result.summary["rows"]:
        for name in ("test_acc", "test_last_acc"):
            iv = row[name]
            if seeds < 3:
                assert iv["low"] is None and iv["high"] is None and len(iv["values"]) == seeds
                assert all(0.0 <= v <= 1.0 for v in iv["values"])
            else:
                assert 0.0 <= iv["low"] <= iv["mean"] <= iv["high"] <= 1.0, (row["label"], name, iv)
    for c in result.summary["comparisons"]:
        assert (c["low"] is None) == (seeds < 3)
        if c["low"] is not None:
            assert -1.0 <= c["low"] <= c["mean"] <= c["high"] <= 1.0
    cells = [r["test acc @selected (%)"] for r in table(result.markdown.read_text(), "Results")]
    numbers = [float(x) for cell in cells for x in re.findall(r"\d+\.\d+", cell)]
    assert numbers and all(0.0 <= x <= 100.0 for x in numbers), cells


def test_the_markdown_makes_no_link_but_the_run_names(store: Store) -> None:
    """``[78.91, 87.16] (n=2)`` became a link to ``n=2`` in MLflow's Markdown (showdown allows a space between ] and
    (). Every bracket the report writes is escaped, except a run name's link and an image."""
    from markdown_it import MarkdownIt

    markdown = store.result.markdown.read_text()
    unescaped = re.findall(r"(?<![\\!])\[[^\]]*?(?<!\\)\]\s*\(", markdown)
    assert all(re.match(r"\[[\w.\\-]+\]\(http://127\.0\.0\.1:5000/", u + "http://127.0.0.1:5000/") for u in unescaped)
    links = re.findall(r"(?<![\\!])\[([^\]]*)\]\(([^)]*)\)", markdown)
    assert links and all(url.startswith("http://127.0.0.1:5000/#/experiments/") for _, url in links)
    html = MarkdownIt("commonmark").enable("table").render(markdown)
    hrefs = re.findall(r'<a href="([^"]+)"', html)
    assert len(hrefs) == len(links) == 9, "one link per run used, nothing else"
    assert "[95 % Student-t interval" in html and "(n=3)" in html, "brackets render as brackets"


def test_the_test_sets_own_size_sets_what_can_be_decided(tmp_path: Path) -> None:
    """A 200-image test set tells differences of 0.5 pp (one image) at best: steady 0.2-pp differences on it are
    below its resolution, where on 10,000 images (the older runs' size) they are a decision to plan for."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("small", artifact_location=(tmp_path / "artifacts").as_uri())
    for seed, (ref, diff) in enumerate([(0.80, 0.002), (0.81, 0.001), (0.79, 0.003)]):
        for loss, acc in (("ce", ref), ("mae", ref + diff)):
            log_run(client, exp, FakeRun(f"{loss}-s{seed}", loss, seed, test_acc=acc, sweep_id=None, test_size=200))
    result = report.build_report("small", tracking_uri=uri, out_dir=tmp_path / "report", log_to_mlflow=False)
    (comparison,) = result.summary["comparisons"]
    assert comparison["outcome"] == "below_resolution", comparison["verdict"]
    assert "below the test set's resolution" in comparison["verdict"]


def test_two_seeds_and_two_optimizers_name_each_reference_and_ask_for_the_first_test(tmp_path: Path) -> None:
    """A 2-seed sweep of ce and mae under adam and sgd: no test ran, and the answer says so with each difference
    seen per seed (mae 6.6 pp below ce in both seeds under sgd); each group is compared with ce under its own
    optimizer, and every row names which; no rank without an interval; the decide command adds the one seed a
    first test needs, as more of the first stage (no second look)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("two", artifact_location=(tmp_path / "artifacts").as_uri())
    tags = {"lossbench.kind": "sweep", "sweep_id": "sw2", "sweep_overrides": json.dumps(["loss=ce,mae", "seed=0,1"])}
    client.set_terminated(client.create_run(exp, run_name="sweep-sw2", tags=tags).info.run_id, "FINISHED")
    acc = {("ce", "adam"): (0.80, 0.81), ("mae", "adam"): (0.79, 0.815), ("ce", "sgd"): (0.78, 0.79)}
    acc[("mae", "sgd")] = (0.714, 0.724)
    for (loss, optimizer), values in acc.items():
        for seed, value in enumerate(values):
            run = FakeRun(
                f"{loss}-{optimizer}-s{seed}", loss, seed, optimizer=optimizer, test_acc=value, sweep_id="sw2"
            )
            run.test_last_acc = value
            log_run(client, exp, run)
    result = report.build_report("two", sweep_id="sw2", tracking_uri=uri, out_dir=tmp_path / "r", log_to_mlflow=False)
    answer = result.summary["answer"]
    assert answer.startswith(
        "Best test accuracy per optimizer: ce / adam 80.50 % (n=2: 80.00, 81.00); ce / sgd 78.50 % (n=2: 78.00, 79.00). "
        "No test ran: 2 paired seeds per comparison, a test needs 3. Against ce with the same optimizer (ce / adam, "
        "ce / sgd) on test accuracy, per seed: mae / adam -0.25 pp (n=2: -1.00, +0.50), "
        "mae / sgd -6.60 pp (n=2: -6.60, -6.60)."
    ), answer
    assert "Holm" not in answer and "not distinguishable" not in answer, "no test ran"
    rows = table(result.markdown.read_text(), "Compared with ce")
    assert [(r["group"], r["vs"], r["rank"]) for r in rows] == [
        ("ce / adam", "ce / adam", "—"),
        ("mae / adam", "ce / adam", "—"),
        ("ce / sgd", "ce / sgd", "—"),
        ("mae / sgd", "ce / sgd", "—"),
    ], "one block per reference, each row naming it; no rank from two seeds"
    extension = result.summary["extension"]
    assert extension["first_test"] and extension["runs"] == 4
    assert {g["overrides"] for g in extension["groups"]} == {
        f"loss={loss} optimizer={optimizer} seed=range(2,3)" for loss in ("ce", "mae") for optimizer in ("adam", "sgd")
    }
    assert "tracking.sweep_id=sw2 " in extension["command"] and "tracking.stage" not in extension["command"]
    assert result.answer[-1] == f"decide: {extension['command']}   (4 more runs, for a first test)"
    assert "4 more runs give every comparison the 3 paired seeds a first test needs" in result.markdown.read_text()


def test_the_results_say_what_each_seed_drew() -> None:
    from types import SimpleNamespace

    from lossbench.names import SEED_DRIVES_TAG
    from lossbench.report.content import _seed_drives

    def rows(*drives):
        return [SimpleNamespace(runs=[SimpleNamespace(tags={} if d is None else {SEED_DRIVES_TAG: d}) for d in drives])]

    assert _seed_drives(rows(None)) == ""
    assert _seed_drives(rows("init,order", None)) == (
        " Each seed drew: init, order (the data split and noise draws fixed: data.redraw=false)."
    )
    assert _seed_drives(rows("init,order,split,label_noise", "init,order,split")) == (
        " Each seed drew: init, order, split; init, order, split, label_noise."
    )
