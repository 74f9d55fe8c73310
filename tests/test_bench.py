"""The benchmark's smoke mode: every section reports, with the right shape. Never asserts a timing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import children
from benchmarks import main as bench
from benchmarks.settings import DEFAULT_SECTIONS, Settings


def positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def test_smoke_reports_every_variant_with_positive_finite_numbers(tmp_path: Path, capsys):
    out = tmp_path / "bench.json"
    returned = bench.main(["--smoke", "--out", str(out), "--models", "linear,mlp"])

    result = json.loads(out.read_text())
    assert result["table"] == returned["table"]
    assert {
        "command",
        "settings",
        "machine",
        "targets",
        "variants",
        "ratios",
        "startup",
        "memory",
        "overhead",
        "gpu",
        "table",
        "total_s",
    } <= set(result)
    assert "--smoke" in result["command"]
    assert result["settings"]["smoke"] is True
    machine = result["machine"]
    assert positive(machine["cores"]) and positive(machine["threads"]) and machine["versions"]["torch"]

    # Every epoch variant, for every model, at its default batch, with a positive finite median.
    labels = {v["label"] for v in result["variants"]}
    assert labels == {"plain", "plain-fused", "lossbench", "conventional-w0"}
    for v in result["variants"]:
        assert [(r["model"], r["batch"]) for r in v["runs"]] == [("linear", 64), ("mlp", 128)], v["label"]
        for r in v["runs"]:
            assert r["epoch_s"] and all(positive(t) for t in r["epoch_s"] + r["warmup_s"]), (v["label"], r)
            assert r["epoch_s_by_round"] == [r["epoch_s"]] and positive(r["min_epoch_s"])
            assert positive(r["median_epoch_s"]) and positive(r["threads"])

    # One ratio row per (variant, model); the targets are named but never judged in smoke mode.
    assert len(result["ratios"]) == 8
    for row in result["ratios"]:
        assert positive(row["median_epoch_s"]) and positive(row["vs_plain"]) and positive(row["vs_plain_min"])
        assert positive(row["vs_plain_fused"])
        assert row["pass"] is None
        if row["variant"].startswith("conventional"):
            assert positive(row["conventional_over_lossbench"]) and row["target"].startswith(">=")
        if row["variant"] == "lossbench":
            assert row["target"].startswith("<=")

    startup = result["startup"]
    assert startup["first_step_s"] and all(positive(t) for t in startup["first_step_s"])
    for key in ("bare_import_median_s", "first_step_median_s", "ratio"):
        assert positive(startup[key]), key
    assert all(positive(t) for t in startup["bare_import_s"])
    assert positive(result["memory"]["max_rss_mb"])

    # Per-job overhead: a warm-up job, then measured ones whose parts add up to their wall time.
    overhead = result["overhead"]
    assert [j["warm_up"] for j in overhead["jobs"]] == [True, False] and overhead["pass"] is None
    for job in overhead["jobs"]:
        assert all(positive(job[k]) for k in ("wall_s", "epochs_s", "overhead_s", "setup_s", "tests_s", "record_s")), (
            job
        )
        assert job["overhead_s"] == pytest.approx(job["wall_s"] - job["epochs_s"])
        assert job["setup_s"] + job["epochs_s"] + job["tests_s"] + job["record_s"] <= job["wall_s"] + 1e-6
    assert overhead["jobs"][-1]["figures_after_last_s"] >= 0  # it waited for the last job's figures
    assert "skipped" in result["gpu"] or result["gpu"]["runs"]

    # The printed table names every variant and section.
    printed = capsys.readouterr().out
    for name in (
        "plain",
        "plain-fused",
        "lossbench",
        "conventional-w0",
        "start-up",
        "peak memory",
        "per-job overhead",
        "gpu",
    ):
        assert name in printed, name


def test_after_the_overhead_section_a_run_records_its_figures_before_it_returns(tiny_mnist: Path, tmp_path: Path):
    """The section runs jobs as a sweep worker does (figures logged after each job); this process gets its own
    mode back, so any later run() in it (here, the test suite's) still returns with its figures recorded."""
    from conftest import compose, read_runs, tiny_overrides

    from lossbench.train import run

    bench.main(["--smoke", "--only", "overhead", "--out", str(tmp_path / "bench.json"), "--models", "linear"])
    store = tmp_path / "store" / "mlflow.db"
    store.parent.mkdir()
    run(compose(*tiny_overrides(tiny_mnist, store, "analysis.figures=true", "trainer.max_epochs=1")))
    _, (r,) = read_runs(store)
    figures = Path(r.info.artifact_uri.removeprefix("file://")) / "figures"
    assert sorted(p.name for p in figures.iterdir()) == ["confusion_matrix.png", "learning_curves.png"]


def test_sections_and_models_are_checked_before_anything_runs(tmp_path: Path):
    with pytest.raises(SystemExit, match="unknown section"):
        bench.main(["--smoke", "--only", "plain,warp", "--out", str(tmp_path / "b.json")])
    with pytest.raises(
        SystemExit, match=r"no fashion_mnist under .*nowhere: pass --root \(the folder holding FashionMNIST/raw/\)"
    ):
        bench.main(["--only", "plain", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b.json")])
    assert not (tmp_path / "b.json").exists()


def test_rounds_alternate_plain_and_lossbench_and_pool_their_epochs():
    settings = Settings(rounds=3, workers=[0, 1])
    order = [(v, w) for v, w, _ in children.schedule(list(DEFAULT_SECTIONS), settings)]
    assert order == [
        ("plain", 0),
        ("plain-fused", 0),
        ("lossbench", 0),
        ("conventional", 0),
        ("conventional", 1),
        ("lossbench", 0),
        ("plain-fused", 0),
        ("plain", 0),
        ("plain", 0),
        ("plain-fused", 0),
        ("lossbench", 0),
    ]

    def child(epochs, rss):
        run = {
            "model": "mlp",
            "batch": 128,
            "epoch_s": epochs,
            "warmup_s": [9.0],
            "median_epoch_s": 0,
            "min_epoch_s": 0,
            "threads": 1,
        }
        return {
            "label": "plain",
            "variant": "plain",
            "runs": [run],
            "max_rss_mb": rss,
            "wall_s": 10.0,
            "load_before": [1.0, 0, 0],
            "load_after": [2.0, 0, 0],
            "accelerator": "cpu",
        }

    (pooled,) = children.pool_rounds([child([1.0, 2.0, 3.0], 100.0), child([4.0, 0.5, 6.0], 300.0)])
    run = pooled["runs"][0]
    assert run["epoch_s_by_round"] == [[1.0, 2.0, 3.0], [4.0, 0.5, 6.0]]
    assert run["median_epoch_s"] == 2.5 and run["min_epoch_s"] == 0.5 and run["warmup_s"] == [9.0, 9.0]
    assert pooled["rounds"] == 2 and pooled["max_rss_mb"] == 300.0 and pooled["wall_s"] == 20.0


def test_the_sweep_section_runs_the_readme_command_as_typed(tmp_path: Path):
    from benchmarks.jobs import sweep_command
    from benchmarks.settings import REPO, SWEEP_AS_TYPED

    typed = next(
        line.split("#")[0].split()
        for line in (REPO / "README.md").read_text().splitlines()
        if line.startswith("python -m lossbench.train -m loss=")
    )
    command = sweep_command(Settings(root="/data"), tmp_path, "after", [])
    assert typed[:3] == ["python", "-m", "lossbench.train"] and typed[3:] == SWEEP_AS_TYPED
    assert command[1:3] == ["-m", "lossbench.train"] and command[3 : 3 + len(SWEEP_AS_TYPED)] == SWEEP_AS_TYPED
    assert "trainer.max_epochs=1" in command and "data=fashion_mnist" in command
    assert not any(o.startswith(("hydra/launcher", "hydra.launcher", "optimizer.fused")) for o in command), (
        "after = as typed"
    )
