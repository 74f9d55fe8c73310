"""Every predefined experiment (conf/experiment/*.yaml) composes, and its first job trains one batch."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import compose, read_runs, tiny_overrides

from lossbench.paths import conf_dir

EXPERIMENTS = sorted(p.stem for p in (conf_dir() / "experiment").glob("*.yaml"))


def compose_experiment(name: str, *overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=[f"+experiment={name}", *overrides], return_hydra_config=True)


def first_job(cfg) -> list[str]:
    """The first value of each swept key, as overrides (a glob sweeps over conf/loss: its first file)."""
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
    assert len(EXPERIMENTS) >= 4
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for name in EXPERIMENTS:
        assert f"+experiment={name}" in readme, f"README does not show how to run {name}"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_as_a_sweep_into_its_own_mlflow_experiment(name: str) -> None:
    cfg = compose_experiment(name)
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.tracking.experiment == name
    assert cfg.hydra.sweeper.params, "an experiment sweeps something"
    from lossbench.config import validate

    validate(cfg)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_first_job_of_each_experiment_trains_one_batch(name: str, tiny_mnist: Path, tmp_path: Path) -> None:
    from lossbench.train import run

    store = tmp_path / "mlflow.db"
    probe = compose_experiment(name)
    cfg = compose(f"+experiment={name}", *first_job(probe), *tiny_overrides(tiny_mnist, store, "trainer.max_epochs=1"),
                  "+trainer.limit_train_batches=1")  # in process, as the sweep's first job would
    run(cfg)
    _, runs = read_runs(store, name)
    assert [r.info.status for r in runs] == ["FINISHED"]
    assert "val/acc" in runs[0].data.metrics
