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
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import _validate_metric_name

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
        "chartsSearchFilter": "^(val|train_eval)/nll$",
    }
    assert re.fullmatch(store_links.CURVE_CHARTS, "val/nll") and not re.match(
        store_links.CURVE_CHARTS, "summary/best_val_nll"
    )
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


def test_ui_command_is_the_exact_command_for_the_store_with_secrets_hidden() -> None:
    assert (
        store_links.ui_command("sqlite:////w/mlflow.db")
        == "mlflow ui --backend-store-uri sqlite:////w/mlflow.db --port 5000"
    )
    command = store_links.ui_command("postgresql://mlflow:hunter2@db:5432/mlflow")
    assert "hunter2" not in command and command.startswith("mlflow ui --backend-store-uri postgresql://mlflow:***@db")
    assert store_links.look_lines("http://h:5000", "http://h:5000/#/x") == ["open:   http://h:5000/#/x"]


REPORT = """# lossbench report: e

Intro in `sqlite:////w/mlflow.db`, gap @best.

## Results

| loss | test acc (%) |
|---|---:|
| ce | 91.00 |

## Learning curves

![learning curves per group](curves.png)

## Runs used

| run | run id |
|---|---|
""" + "".join(f"| ce-s{i} | {'a' * 32} |\n" for i in range(200))


def test_description_points_figures_at_the_run_and_drops_whole_sections_to_fit() -> None:
    whole = parent_run.description(REPORT, "RUN1", "report", limit=100_000)
    assert "![learning curves per group](get-artifact?path=report%2Fcurves.png&run_uuid=RUN1)" in whole
    assert "gap &#64;best" in whole and "`sqlite:////w/mlflow.db`" in whole
    short = parent_run.description(REPORT, "RUN1", "report", limit=1000)
    assert len(short) <= 1000
    assert "## Learning curves" in short and "## Runs used" not in short, (
        "the section that does not fit is dropped whole"
    )
    assert short.rstrip().endswith("`report/report.html`.*")
    kept = short[: short.index("\n*Shortened")].rstrip()
    assert whole.startswith(kept), "what is kept is the report's own beginning, unchanged"


def test_group_metrics_are_legal_keys_holding_the_rows_means() -> None:
    rows = [
        {
            "label": "ce / adam / noise 0.4",
            "n": 3,
            "n_onset": 1,
            "test_acc": {"mean": 0.91, "std": 0.01, "n": 3},
            "onset_epoch": {"mean": None, "std": None, "n": 0},
            "val_nll_rise": {"mean": 0.3, "std": None, "n": 1},
        }
    ]
    metrics = parent_run.group_metrics(rows)
    assert metrics == {
        "report/n/ce_adam_noise_0.4": 3.0,
        "report/n_onset/ce_adam_noise_0.4": 1.0,
        "report/test_acc/ce_adam_noise_0.4": 0.91,
        "report/val_nll_rise/ce_adam_noise_0.4": 0.3,
    }, "an empty mean is left out, not logged as 0"
    for key in metrics:
        _validate_metric_name(key)  # MLflow's own rule; raises on an illegal key
    with pytest.raises(MlflowException):
        _validate_metric_name("report/test_acc/ce / adam?")


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
    with caplog.at_level(logging.WARNING, logger="lossbench"):
        write_report(tracker, "empty", "abc123", Rule())  # must not raise
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
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
