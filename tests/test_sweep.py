"""Sweeps as users launch them: Hydra multirun through real launchers, read back from MLflow."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import read_runs, sweep, train_runs

from lossbench.job import available_cores

pytestmark = pytest.mark.slow


LAUNCHERS = {
    "basic": ["hydra/launcher=basic"],
    "default": [],
    "joblib-2": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
}


def parallel_jobs_here() -> int:
    """What the default launcher should choose here: one job per core, at most MemAvailable / 1.5 GiB."""
    available_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemAvailable:")
    )
    return max(1, min(available_cores(), int(available_kb / 1024**2 // 1.5)))


@pytest.mark.parametrize("launcher", LAUNCHERS.values(), ids=LAUNCHERS.keys())
def test_four_job_sweep_into_a_new_store(tiny_mnist: Path, tmp_path: Path, launcher: list[str]):
    store = tmp_path / "mlflow.db"
    assert not store.exists()
    done = sweep(tmp_path, tiny_mnist, "loss=ce,mae", "optimizer=adam,sgd", *launcher)
    assert done.returncode == 0, done.stderr[-3000:]
    client, runs = train_runs(store)
    assert sorted((r.data.tags["loss"], r.data.tags["optimizer"]) for r in runs) == [
        ("ce", "adam"),
        ("ce", "sgd"),
        ("mae", "adam"),
        ("mae", "sgd"),
    ]
    assert {r.info.status for r in runs} == {"FINISHED"}
    sweep_ids = {r.data.tags["sweep_id"] for r in runs}
    assert len(sweep_ids) == 1
    parent = [r for r in read_runs(store)[1] if r.data.tags.get("lossbench.kind") == "sweep"]
    assert len(parent) == 1 and parent[0].data.tags["sweep_id"] in sweep_ids and parent[0].info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent[0].info.run_id}
    jobs = 1 if launcher == LAUNCHERS["basic"] else 2 if launcher else parallel_jobs_here()
    expected_threads = max(1, available_cores() // jobs)
    if launcher != LAUNCHERS["basic"]:
        assert re.search(rf"\b{jobs} workers are running 4 jobs", done.stdout + done.stderr), (
            "the parallel launcher runs the jobs on its workers"
        )
        # The workers were started (and one of them opened the store) before the jobs were handed out,
        # and the jobs ran in those very processes: the parent run above reached them all the same.
        warmed = re.search(r"workers ([\d, ]+) started and imported while the sweep started", done.stdout + done.stderr)
        assert warmed, "the parallel launcher warms its workers up while the sweep starts"
        assert {r.data.tags["lossbench.pid"] for r in runs} <= set(warmed[1].split(", "))
    assert {r.data.tags["threads"] for r in runs} == {str(expected_threads)}, "jobs x threads must not exceed the cores"
    assert "4 finished, 0 failed, 0 killed, 0 skipped" in done.stdout
    report = re.search(r"^report: (/\S+/report\.html)$", done.stdout, re.M)
    assert report and Path(report[1]).is_file(), "the closing screen names the report it wrote, by its absolute path"


def test_parallel_workers_record_each_runs_figures_after_its_job(tiny_mnist: Path, tmp_path: Path):
    """A worker logs a run's figures while its next job starts (lossbench.run_figures); none is lost at the end."""
    done = sweep(
        tmp_path,
        tiny_mnist,
        "loss=ce,mae,mse",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "analysis.figures=true",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _, runs = train_runs(tmp_path / "mlflow.db")
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    for r in runs:
        figures = Path(r.info.artifact_uri.removeprefix("file://")) / "figures"
        assert sorted(p.name for p in figures.iterdir()) == ["confusion_matrix.png", "learning_curves.png"], (
            r.info.run_name
        )
        assert "lossbench.figures_error" not in r.data.tags


def test_submitit_local_sweep_completes(tiny_mnist: Path, tmp_path: Path):
    done = sweep(tmp_path, tiny_mnist, "loss=ce,mae", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10")
    assert done.returncode == 0, done.stderr[-3000:]
    _, runs = train_runs(tmp_path / "mlflow.db")
    assert sorted(r.data.tags["loss"] for r in runs) == ["ce", "mae"]
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_a_diverging_job_fails_alone_and_the_sweep_goes_on(tiny_mnist: Path, tmp_path: Path):
    done = sweep(tmp_path, tiny_mnist, "loss=mse_logits,ce,mae", "optimizer=sgd", "optimizer.lr=1e6")
    assert done.returncode == 1, "a sweep with a failed job must not exit 0"
    _, runs = train_runs(tmp_path / "mlflow.db")
    status = {r.data.tags["loss"]: r.info.status for r in runs}
    assert status == {"mse_logits": "FAILED", "ce": "FINISHED", "mae": "FINISHED"}
    failed = next(r for r in runs if r.data.tags["loss"] == "mse_logits")
    assert failed.data.tags["lossbench.failure"].startswith("DivergenceError: diverged: non-finite loss")
    assert "at epoch 1 step" in failed.data.tags["lossbench.failure"], "epochs count from 1"
    assert "2 finished, 1 failed" in done.stdout


def test_rerunning_a_sweep_skips_finished_jobs_and_reruns_deleted_ones(tiny_mnist: Path, tmp_path: Path):
    store = tmp_path / "mlflow.db"
    first = sweep(tmp_path, tiny_mnist, "loss=ce,mae", "optimizer=adam,sgd")
    assert first.returncode == 0, first.stderr[-3000:]
    client, runs = train_runs(store)
    ids = {r.info.run_id for r in runs}
    assert len(ids) == 4

    second = sweep(tmp_path, tiny_mnist, "loss=ce,mae", "optimizer=adam,sgd")
    assert second.returncode == 0 and "0 finished, 0 failed, 0 killed, 4 skipped" in second.stdout, second.stdout[
        -2000:
    ]
    second_dir = max((tmp_path / "multirun").glob("*/*"))
    assert sorted(p.name for p in second_dir.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    assert not any((second_dir / n / ".hydra").exists() for n in "0123"), "a finished config is skipped before launch"
    assert {r.info.run_id for r in train_runs(store)[1]} == ids

    deleted = sorted(ids)[0]
    client.delete_run(deleted)
    third = sweep(tmp_path, tiny_mnist, "loss=ce,mae", "optimizer=adam,sgd")
    assert third.returncode == 0 and "1 finished, 0 failed, 0 killed, 3 skipped" in third.stdout, third.stdout[-2000:]
    third_dir = max((tmp_path / "multirun").glob("*/*"))
    assert sum((third_dir / n / ".hydra").exists() for n in "0123") == 1, "only the deleted run's job is launched"
    now = {r.info.run_id for r in train_runs(store)[1]}
    assert len(now) == 4 and ids - now == {deleted} and len(now - ids) == 1
    assert len({r.data.tags["sweep_id"] for r in train_runs(store)[1]}) == 1, "a re-run sweep keeps its sweep id"

    forced = sweep(tmp_path, tiny_mnist, "loss=ce", "optimizer=adam", "tracking.skip_finished=false")
    assert forced.returncode == 0 and "1 finished" in forced.stdout


def test_tuned_view_picks_each_losss_learning_rate_on_validation_and_reports_its_own_test_numbers(
    tiny_mnist: Path, tmp_path: Path
):
    import statistics

    from lossbench.report import build_report
    from lossbench.stats import mean_ci

    done = sweep(
        tmp_path,
        tiny_mnist,
        "loss=ce,mae",
        "optimizer.lr=0.0003,0.03",
        "seed=0,1",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client, runs = train_runs(tmp_path / "mlflow.db")
    assert len(runs) == 8
    # Independently: per loss, the lr whose mean val/acc (1 epoch: the selected epoch is 0) is highest.
    val: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        acc = client.get_metric_history(r.info.run_id, "val/acc")[0].value
        val.setdefault((r.data.tags["loss"], r.data.params["optimizer.lr"]), []).append(acc)
    expected = {
        loss: max(("0.0003", "0.03"), key=lambda lr: (statistics.mean(val[(loss, lr)]), lr == "0.0003"))
        for loss in ("ce", "mae")
    }
    result = build_report("lossbench", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", out_dir=tmp_path / "report")
    tuned = {t["group"]: t for t in result.summary["tuned"]}
    for loss, lr in expected.items():
        t = tuned[f"{loss} / adam"]
        assert t["setting"] == f"optimizer.lr={lr}" and t["budget"] == 4 and t["n_settings"] == 2
        chosen = [r for r in runs if r.info.run_id in t["run_ids"]]
        assert {r.data.params["optimizer.lr"] for r in chosen} == {lr} and len(chosen) == 2
        cell = mean_ci([r.data.metrics["test/acc"] for r in chosen]).format(100, 2)
        assert f"| {loss} | adam | optimizer.lr={lr} |" in result.markdown.read_text()
        assert cell in result.markdown.read_text().split("## Tuned")[1].split("##")[0]
    assert result.summary["comparisons"] and all(c["n"] == 2 for c in result.summary["comparisons"])
