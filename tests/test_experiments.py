"""The experiments in conf/experiment/: each composes, and its sweep expands to the grid its header
promises, and its first job trains a batch. The grid is expanded by Hydra's own BasicSweeper, as
`python -m lossbench.train` does."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
from conftest import compose, read_runs, tiny_overrides
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from lossbench.paths import conf_dir

CLASSIC = ("ce", "mse", "mae", "bce", "hinge")
EXPERIMENTS = sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml"))


def sweep_jobs(experiment: str, *arguments: str) -> list[list[str]]:
    """The overrides of every job the basic sweeper launches for ``+experiment=<experiment> <arguments>``:
    the experiment's sweeper params, then the command line's arguments (a key given twice: the last wins)."""
    cfg = compose(f"+experiment={experiment}", hydra_config=True)
    params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    overrides = OverridesParser.create().parse_overrides([*params, *arguments])
    (batch,) = BasicSweeper.split_arguments(overrides, max_batch_size=None)
    return batch


def as_dict(job: list[str]) -> dict[str, str]:
    return dict(override.split("=", 1) for override in job)


def test_fair_comparison_grid():
    jobs = [as_dict(job) for job in sweep_jobs("fair_comparison")]
    cells = Counter((job["loss"], float(job["optimizer.lr"])) for job in jobs)
    losses = sorted({loss for loss, _ in cells})
    rates = sorted({lr for _, lr in cells})
    assert losses == sorted(CLASSIC)
    assert len(rates) >= 3
    steps = [math.log10(b / a) for a, b in zip(rates, rates[1:])]
    # log-spaced: the same ratio between neighbours, give or take rounding (1e-3, 3e-3, 1e-2: x3, x3.3)
    assert steps == pytest.approx([steps[0]] * len(steps), rel=0.15), f"learning rates {rates} are not log-spaced"
    # Equal budget: every loss x rate has the same three seeds, so every loss gets rates x 3 runs.
    seeds: dict[tuple[str, float], list[int]] = {}
    for job in jobs:
        seeds.setdefault((job["loss"], float(job["optimizer.lr"])), []).append(int(job["seed"]))
    assert all(sorted(s) == [0, 1, 2] for s in seeds.values()), seeds
    assert len(jobs) == len(CLASSIC) * len(rates) * 3 == len(cells) * 3
    # A job per loss, composed: CPU-sized, and the same for every job apart from the grid.
    for loss in CLASSIC:
        job = next(j for j in jobs if j["loss"] == loss)
        c = compose("+experiment=fair_comparison", *(f"{k}={v}" for k, v in job.items()))
        assert (c.loss.name, c.optimizer.lr, c.seed) == (loss, float(job["optimizer.lr"]), int(job["seed"]))
        assert (c.data.name, c.model.name, c.optimizer.name) == ("fashion_mnist", "linear", "adam")
        assert c.data.train_size == 10_000 and c.trainer.max_epochs == 5 and c.threads == 1
        assert c.data.val_size == 5000, "selection needs the whole validation split"
        assert c.tracking.experiment == "fair_comparison"


def test_fair_comparison_grid_can_be_overridden_from_the_command_line():
    jobs = [as_dict(job) for job in sweep_jobs("fair_comparison", "optimizer.lr=3e-4,3e-3", "data=mnist")]
    assert len(jobs) == len(CLASSIC) * 2 * 3
    assert {job["optimizer.lr"] for job in jobs} == {"0.0003", "0.003"}
    c = compose("+experiment=fair_comparison", *(f"{k}={v}" for k, v in jobs[0].items()))
    assert c.data.name == "mnist" and c.optimizer.lr in (3e-4, 3e-3)


def first_job(cfg) -> list[str]:
    """The first value of each swept key, as overrides (a glob sweeps over conf/<group>: its first file)."""
    overrides = []
    for key, values in cfg.hydra.sweeper.params.items():
        text = str(values)
        if text.startswith("glob("):
            text = sorted(p.stem for p in (conf_dir() / key).glob("*.yaml"))[0]
        elif text.startswith(("tag(", "interval(", "choice(", "range(")):
            continue  # an Optuna search space: the composed default stands in for it
        overrides.append(f"{key}={text.split(',')[0]}")
    return overrides


def test_every_experiment_is_documented_in_the_readme() -> None:
    assert "fair_comparison" in EXPERIMENTS and len(EXPERIMENTS) >= 5
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for name in EXPERIMENTS:
        assert f"+experiment={name}" in readme, f"README does not show how to run {name}"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_as_a_valid_sweep_into_its_own_mlflow_experiment(name: str) -> None:
    from lossbench.config import validate

    cfg = compose(f"+experiment={name}", hydra_config=True)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.tracking.experiment == name
    assert cfg.hydra.sweeper.params, "an experiment sweeps something"
    validate(cfg)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_first_job_of_each_experiment_trains_one_batch(name: str, tiny_mnist: Path, tmp_path: Path) -> None:
    from lossbench.train import run

    store = tmp_path / "mlflow.db"
    probe = compose(f"+experiment={name}", hydra_config=True)
    cfg = compose(
        f"+experiment={name}",
        *first_job(probe),
        *tiny_overrides(tiny_mnist, store, "trainer.max_epochs=1"),
        "data=mnist",
        f"data.root={tiny_mnist}",
        "+trainer.limit_train_batches=1",
    )  # as the sweep's first job
    run(cfg)
    _, runs = read_runs(store, name)
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert cfg.checkpoint.monitor in runs[0].data.metrics  # val/acc; val/rmse_deg on claim_outliers' regression


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ([], None),
        (["scheduler=none"], None),
        (["scheduler=cosine"], ("cosine", 0.0)),
        (["+experiment=noisy_labels"], ("cosine", 1e-3)),
        (["+experiment=noisy_labels", "scheduler=none"], None),  # the README's CPU cut
        (["+experiment=fair_comparison"], None),
    ],
)
def test_no_scheduler_is_a_null_node_whatever_the_experiment(overrides: list[str], expected) -> None:
    from lossbench.config import chosen_scheduler, validate

    cfg = compose(*overrides)
    validate(cfg)
    chosen = chosen_scheduler(cfg)
    if expected is None:
        assert chosen is None
        assert cfg.scheduler is None or "_target_" not in cfg.scheduler
    else:
        assert (chosen.name, chosen.get("eta_min")) == expected
    if not overrides or overrides == ["scheduler=none"]:
        assert cfg.scheduler is None, "scheduler=none is `scheduler: null`"


def test_a_sweep_over_scheduler_none_and_cosine_composes_each_job() -> None:
    from lossbench.config import chosen_scheduler

    jobs = [as_dict(job) for job in sweep_jobs("noisy_labels", "scheduler=none,cosine", "seed=0")]
    assert len(jobs) == 6 * 5 * 2
    for scheduler in ("none", "cosine"):
        job = next(j for j in jobs if j["scheduler"] == scheduler)
        chosen = chosen_scheduler(compose("+experiment=noisy_labels", *(f"{k}={v}" for k, v in job.items())))
        assert (chosen and chosen.name) == (None if scheduler == "none" else "cosine")


def test_the_readme_cpu_cut_of_noisy_labels_trains_at_a_constant_rate(tiny_mnist: Path, tmp_path: Path) -> None:
    """``+experiment=noisy_labels scheduler=none``: the experiment's cosine settings stay behind, unused."""
    from lossbench.train import run

    store = tmp_path / "mlflow.db"
    cfg = compose(
        "+experiment=noisy_labels",
        "model=mlp",
        "scheduler=none",
        *tiny_overrides(tiny_mnist, store, "trainer.max_epochs=2", "+trainer.limit_train_batches=1"),
    )
    run(cfg)
    client, (recorded,) = read_runs(store, "noisy_labels")
    lr = [m.value for m in sorted(client.get_metric_history(recorded.info.run_id, "lr"), key=lambda m: m.step)]
    assert lr == [0.01, 0.01] and recorded.data.tags["scheduler"] == "none"
