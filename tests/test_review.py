"""What a person reviewing results is shown: UI links, the report run's description and metrics,
the per-epoch line, the progress bar, the experiment kind, and the missing-data advice."""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import compose, tiny_overrides
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from lossbench import store_links
from lossbench.analysis import Rule
from lossbench.report import parent_run


def hash_route(url: str) -> tuple[str, str, dict[str, list[str]]]:
    """(scheme://host:port, route path, query) of an MLflow UI URL ``…/#/<route>?<query>``."""
    parts = urlsplit(url)
    route, _, query = parts.fragment.partition("?")
    return f"{parts.scheme}://{parts.netloc}", route, parse_qs(query)


def test_sweep_link_filters_the_runs_table_in_the_model_training_view() -> None:
    base, route, query = hash_route(store_links.sweep_url("sqlite:////data/mlflow.db", "7", "3f2a9c"))
    assert (base, route) == ("http://127.0.0.1:5000", "/experiments/7/runs")
    assert query == {"workflowType": ["machine_learning"], "searchFilter": ["tags.sweep_id = '3f2a9c'"]}


def test_curves_link_opens_the_sweeps_shared_view_as_charts() -> None:
    tag, value, key = store_links.curves_view("3f2a9c")
    assert tag == f"mlflow.sharedViewState.{key}"
    assert json.loads(value) == {
        "searchFilter": "tags.sweep_id = '3f2a9c'",
        "groupBy": "tag.average.loss",
        "chartsSearchFilter": "^(overfit/val_nll_rise|overfit/nll_drift|overfit/gap_acc|overfit/gap_nll)$",
    }
    # Overfitting on one scale for every loss: a bounded loss's NLL at 2-4 cannot hide ce's rise from 0.46 to 0.55.
    charted = [
        "val/nll",
        "overfit/val_nll_rise",
        "overfit/nll_drift",
        "overfit/gap_acc",
        "overfit/gap_nll",
        "summary/x",
    ]
    assert [m for m in charted if re.fullmatch(store_links.CURVE_CHARTS, m)] == charted[1:5]
    both = json.loads(store_links.curves_view("3f2a9c", (("tag", "loss"), ("tag", "optimizer")))[1])["groupBy"]
    assert both == {  # MLflow 3.17's object form (its groupBy parser returns an object as is)
        "aggregateFunction": "average",
        "groupByKeys": [{"mode": "tag", "groupByData": "loss"}, {"mode": "tag", "groupByData": "optimizer"}],
    }
    assert store_links.grouping_words((("tag", "loss"), ("tag", "optimizer"))) == "loss × optimizer"
    _, route, query = hash_route(store_links.curves_url("sqlite:////w/mlflow.db", "7", key))
    assert route == "/experiments/7/runs"
    assert query == {"workflowType": ["machine_learning"], "compareRunsMode": ["CHART"], "viewStateShareKey": [key]}


def test_run_link_on_a_tracking_server_names_the_server_without_its_password() -> None:
    base, route, query = hash_route(store_links.run_url("https://alice:s3cret@mlflow.example.org/", "2", "abc"))
    assert (base, route, query) == (
        "https://mlflow.example.org",
        "/experiments/2/runs/abc",
        {"workflowType": ["machine_learning"]},
    )
    assert store_links.ui_command("https://alice:s3cret@mlflow.example.org") is None, "the server is the UI"


def test_ui_command_runs_as_typed_in_a_shell_without_the_environment_on_its_path(tmp_path: Path) -> None:
    """`mlflow ui ...` failed as typed ("mlflow: command not found") unless the virtual environment was active: the
    printed command names this environment's own mlflow, so any shell runs it."""
    import subprocess
    import sys

    command = store_links.ui_command("sqlite:////w/mlflow.db")
    mlflow = str(Path(sys.executable).parent / "mlflow")
    assert command == f"{mlflow} ui --backend-store-uri sqlite:////w/mlflow.db --port 5000"
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # a login shell's PATH, no venv, no uv run
    shown = command.replace(" --port 5000", " --help")
    done = subprocess.run(["/bin/sh", "-c", shown], env=bare, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--backend-store-uri" in done.stdout, done.stderr[-2000:]
    secret = store_links.ui_command("postgresql://mlflow:hunter2@db:5432/mlflow")
    assert "hunter2" not in secret and "--backend-store-uri 'postgresql://mlflow:***@db" in secret
    assert store_links.look_lines("http://h:5000", "http://h:5000/#/x") == ["open:   http://h:5000/#/x"]


def test_the_description_fits_mlflows_limit_and_keeps_literal_text() -> None:
    """The description is the report's front page (answer, verdicts, a four-column table, one small figure): its
    figure points at the run's artifacts, ``@`` cannot become a mention, brackets cannot become links."""
    from lossbench.report import aggregate
    from lossbench.report.figures import FIGURES
    from lossbench.report.runs import RunRecord, select_runs

    curves = {"val/acc": [0.5, 0.6], "val/nll": [1.0, 0.8], "train_eval/acc": [0.5, 0.7], "train_eval/nll": [1.0, 0.7]}
    runs = [
        RunRecord(
            f"r{loss}{seed}",
            f"{loss}_x-s{seed}",
            "FINISHED",
            seed,
            tags={"loss": f"{loss}_x", "optimizer": "adam@2", "seed": str(seed), "lossbench.first_epoch": "1"},
            params={"checkpoint.monitor": "val/acc", "checkpoint.mode": "max"},
            metrics={"test/acc": 0.9 + 0.001 * seed + (0.01 if loss == "b" else 0), "test_last/acc": 0.9},
            curves=curves,
        )
        for loss in ("a", "b")
        for seed in range(3)
    ]
    findings = aggregate.analyse(select_runs(runs), reference="a_x")
    figures = {f.name: f for f in FIGURES if f.name == "overview"}
    note = parent_run.description(findings, figures, "RUN1", "report")
    assert note.startswith("**Answer.** ") and len(note) <= parent_run.NOTE_LIMIT
    alt = (
        "overfitting at a glance: val NLL above its lowest while training NLL fell (left) and while it rose too (right)"
    )
    assert f"![{alt}](get-artifact?path=report%2Foverview.png&run_uuid=RUN1)" in note
    assert "&#64;" in note and "@" not in note.replace("&#64;", "")
    table = [line for line in note.splitlines() if line.startswith("| ")]
    assert len(table[0].strip("| ").split(" | ")) == 4, "four columns wrap to a 554-px pane"
    assert "\\[" in "".join(table), "an interval's brackets are escaped"
    assert not re.search(r"(?<!\\)\[[^\]]*\]\s*\(", note.replace("![", "")), "no bracket pair reads as a link"


def test_epoch_line_shows_the_record() -> None:
    from lossbench.console import epoch_line

    record = {
        "epoch": 2,
        "train/loss": 0.28411,
        "val/loss": 0.30119,
        "val/acc": 0.912,
        "val/nll": 0.30119,
        "time/epoch_s": 1.94,
    }
    assert epoch_line(record, 10) == (
        "epoch 3/10  train/loss 0.2841  val/loss 0.3012  val/acc 0.9120  val/nll 0.3012  1.9 s"
    )
    assert "val/acc nan" in epoch_line({"epoch": 0, "time/epoch_s": 1.0})


def test_a_run_logs_one_line_per_epoch_and_counts_mini_batches(
    tiny_mnist: Path, tmp_path: Path, caplog, capsys
) -> None:
    from lossbench.train import run

    store = tmp_path / "mlflow.db"
    cfg = compose(
        *tiny_overrides(
            tiny_mnist,
            store,
            "trainer.max_epochs=3",
            "trainer.enable_progress_bar=true",
            "data.batch_size=32",
            "data.batches_per_step=4",
        )
    )
    with caplog.at_level(logging.INFO, logger="lossbench"):
        run(cfg)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"], "one line per epoch"
    client = MlflowClient(f"sqlite:///{store}")
    (found,) = client.search_runs([client.get_experiment_by_name("lossbench").experiment_id])
    for key in ("train/loss", "val/loss", "val/acc", "val/nll"):
        logged = [m.value for m in sorted(client.get_metric_history(found.info.run_id, key), key=lambda m: m.step)]
        shown = [float(re.search(rf"{re.escape(key)} (\S+)", line)[1]) for line in lines]
        assert shown == pytest.approx(logged, abs=5e-5), f"{key}: the line shows what the store holds"
    batches = math.ceil((600 - 100) / 32)  # tiny_mnist: 600 training images, 100 held out for validation
    out = capsys.readouterr()
    bar = out.out + out.err
    assert f"{batches}/{batches}" in bar, "the bar counts mini-batches, not Lightning steps of 4"
    assert f"{math.ceil(batches / 4)}/{math.ceil(batches / 4)} [" not in bar
    assert "Total params" not in bar and "FLOPs" not in bar, "no model table unless trainer.enable_model_summary=true"
    assert any(
        m.startswith("open:   http://127.0.0.1:5000/#/experiments/") and found.info.run_id in m
        for m in (r.getMessage() for r in caplog.records)
    ), "the closing lines link to the run"
    assert "epoch 3/3" in bar and "Epoch 2" not in bar, "the bar counts epochs from 1, like the lines"


def test_experiments_are_marked_for_model_training_even_when_made_before(tmp_path: Path) -> None:
    from lossbench.store import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker.connect(uri, "fresh")
    assert (
        tracker.client.get_experiment(tracker.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    )
    old = MlflowClient(uri).create_experiment("old")  # as lossbench made them before, without the tag
    assert "mlflow.experimentKind" not in MlflowClient(uri).get_experiment(old).tags
    Tracker.connect(uri, "old")
    assert MlflowClient(uri).get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"


def test_missing_mnist_says_how_to_get_mnist_and_never_to_import_fashion_mnist_as_mnist(tmp_path: Path) -> None:
    from hydra.utils import instantiate

    from lossbench.shipped import data_yaml

    mnist, fashion = (instantiate(data_yaml(name).source) for name in ("mnist", "fashion_mnist"))
    message = mnist.missing_message("mnist", tmp_path, ["train-images-idx3-ubyte"])
    assert "data.download=true" in message
    assert f"scripts/prepare_data.py --data mnist --from DIR --root {tmp_path}" in message
    assert "data=fashion_mnist" in message and "dataset-fashion-mnist" in message
    assert not re.search(r"--data mnist --from /usr/share/datasets/fashion-mnist", message)
    assert "--data fashion_mnist --from /usr/share/datasets/fashion-mnist" in message, (
        "Debian's files are imported as what they are"
    )
    text = fashion.missing_message("fashion_mnist", tmp_path, ["t10k-labels-idx1-ubyte"])
    assert "/usr/share/datasets/fashion-mnist" in text and "data=fashion_mnist works" not in text


def test_a_report_that_cannot_be_written_is_a_warning_not_the_sweeps_outcome(tmp_path: Path, caplog) -> None:
    from lossbench.store import Tracker
    from lossbench.sweep import write_report

    tracker = Tracker.connect(f"sqlite:///{tmp_path / 'mlflow.db'}", "empty")  # no training runs: nothing to report
    report_cfg = OmegaConf.create({"reference": "ce", "min_effect_pp": None})
    with caplog.at_level(logging.WARNING, logger="lossbench"):
        result, reason = write_report(tracker, "empty", "abc123", Rule(), report_cfg)  # must not raise
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert result is None and reason.startswith("ReportError: no runs in experiment 'empty'")
    assert (
        "sweep abc123: the report was not written (ReportError: no runs in experiment 'empty'" in warning.getMessage()
    )


def test_class_names_come_from_the_data_set(tmp_path: Path) -> None:
    from hydra.utils import instantiate
    from idx import write_mnist_family

    from lossbench.paths import compose

    def built(name: str, *overrides: str):
        root = write_mnist_family(tmp_path / name, {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[name], 200, 50)
        overrides = (f"data.root={root}", "data.download=false", "data.val_size=50", *overrides)
        return instantiate(compose(f"data={name}", *overrides).data, shuffle_seed=0)

    fashion = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert built("fashion_mnist").class_names == fashion
    assert built("mnist").class_names[7] == "7 - seven"
    assert built("mnist", "data.num_classes=12").class_names is None, "names that do not fit are not used"
    assert built("mnist", "data.class_names=[a,b,c,d,e,f,g,h,i,j]").class_names[7] == "h", "the YAML's own come first"


def test_a_groups_verdict_counts_every_run_and_says_still_improving_only_at_the_peak() -> None:
    """One run overfits (val NLL bottoms at epoch 4, then +80 % while train NLL falls; val acc keeps rising to epoch
    10, so the tested epoch is 6 after the onset), one is flat (stable), one peaks at epoch 9 of 10: the verdict
    names all three, and none is called still improving."""
    from lossbench.report import aggregate
    from lossbench.report.runs import RunRecord

    overfits = {
        "val/nll": [1.0, 0.6, 0.45, 0.40, 0.42, 0.47, 0.55, 0.60, 0.66, 0.72],
        "train_eval/nll": [1.1, 0.6, 0.40, 0.30, 0.25, 0.20, 0.15, 0.10, 0.08, 0.06],
        "val/acc": [0.70, 0.80, 0.85, 0.86, 0.865, 0.867, 0.868, 0.869, 0.87, 0.871],
        "train_eval/acc": [0.68, 0.81, 0.88, 0.91, 0.93, 0.95, 0.97, 0.98, 0.99, 0.99],
    }
    flat = {"val/nll": [0.5] * 10, "train_eval/nll": [0.5] * 10, "val/acc": [0.8] * 10, "train_eval/acc": [0.8] * 10}
    peaked = {**flat, "val/acc": [0.70, 0.72, 0.74, 0.76, 0.78, 0.80, 0.82, 0.84, 0.86, 0.80]}
    runs = [
        RunRecord(
            f"r{seed}",
            f"ce-s{seed}",
            "FINISHED",
            seed,
            tags={"loss": "ce", "optimizer": "adam", "seed": str(seed), "lossbench.first_epoch": "1"},
            params={"checkpoint.monitor": "val/acc", "checkpoint.mode": "max"},
            metrics={"test/acc": 0.85, "test_last/acc": 0.85},
            curves=curves,
        )
        for seed, curves in enumerate((overfits, flat, peaked))
    ]
    (row,) = aggregate.group_runs(runs, ["loss", "optimizer"])
    assert [row.verdicts[r.run_id].kind for r in row.runs] == ["overfits", "stable", "peaked"]
    assert row.verdict_phrase == "overfits in 1/3 runs, after epoch 4; 1 peaked near the end, 1 stable"
    assert row.verdict.startswith("overfits in 1/3 runs, after epoch 4 (smoothed val NLL +")
    assert "the tested epoch 6 epochs after the onset (onset → selected: 4 → 10)" in row.verdict
    assert row.verdict.endswith("; 1 peaked near the end, 1 stable") and "still improving" not in row.verdict
