"""One run's epochs read the same wherever a person reads them: its terminal lines, its closing line, its tags
and summary metrics, MLflow's Step axis, the report, and its figure. Epochs count from 1 everywhere."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ENV, read_runs, tiny_overrides

from lossbench import analysis, plots
from lossbench.report.build import build_report

EPOCHS = 12


@pytest.fixture(scope="module")
def overfitting_run(tmp_path_factory):
    """A real run that overfits: the MLP on tiny data whose training labels are half wrong (it memorises them)."""
    from idx import write_mnist_family

    tmp = tmp_path_factory.mktemp("epochs")
    root = write_mnist_family(tmp / "data", "MNIST", n_train=600, n_test=200)
    store = tmp / "mlflow.db"
    overrides = [
        o
        for o in tiny_overrides(root, store, "model=mlp", f"trainer.max_epochs={EPOCHS}", "optimizer.lr=0.01")
        if not o.startswith("analysis.figures")
    ]
    extra = ["data.batch_size=32", "data.label_noise.rate=0.5"]
    done = subprocess.run(
        [sys.executable, "-m", "lossbench.train", *overrides, *extra],
        cwd=tmp,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client, (run,) = read_runs(store)
    return done.stdout + done.stderr, client, run, store


def test_the_terminal_counts_epochs_from_1_like_mlflows_step(overfitting_run) -> None:
    output, client, run, _ = overfitting_run
    shown = [int(n) for n in re.findall(rf"epoch (\d+)/{EPOCHS} ", output)]
    assert shown == list(range(1, EPOCHS + 1))
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/acc"))
    assert steps == shown, "MLflow's Step axis is the epoch number the terminal printed"


def test_the_selected_epoch_and_the_onset_read_the_same_everywhere(overfitting_run) -> None:
    output, client, run, store = overfitting_run
    selected = int(run.data.metrics["summary/selected_epoch"])
    onset = int(run.data.metrics["summary/onset_epoch"])
    assert run.data.tags["verdict"] == "overfits" and run.data.tags["onset_epoch"] == str(onset)
    # The closing line: the selected epoch (raw val/acc) and the onset (smoothed peak) under their own words.
    closing = re.search(
        r"finished: test/acc \S+ at the selected epoch (\d+) \(highest val/acc\).*overfits after epoch (\d+)", output
    )
    assert closing and (int(closing[1]), int(closing[2])) == (selected, onset)
    assert run.data.tags["verdict_text"].startswith(f"overfits after epoch {onset} (smoothed val")
    # The run's description in MLflow: the same epoch and accuracy, in %, and the same verdict.
    note = run.data.tags["mlflow.note.content"]
    acc = run.data.metrics["test/acc"] * 100
    assert f"Test accuracy {acc:.2f} % at the selected epoch {selected} (highest val/acc)" in note, note
    assert f"Verdict: {run.data.tags['verdict_text']}." in note and "\n" not in note, "one paragraph"
    # The same epochs recomputed from MLflow's own history (its steps are epoch numbers).
    curves = {
        key: analysis.dense_curve((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        for key in ("val/acc", "val/nll", "train_eval/acc", "train_eval/nll")
    }
    assert analysis.best_epoch(curves, "val/acc", "max") == selected
    assert analysis.judge(curves).onset_epoch == onset
    # The report: its run table and verdict.
    result = build_report(
        "lossbench", tracking_uri=f"sqlite:///{store}", out_dir=store.parent / "report", log_to_mlflow=False
    )
    (row,) = result.summary["rows"]
    assert row["selected_epoch"]["mean"] == selected and row["onset_epoch"]["mean"] == onset
    assert (
        row["verdict"]
        == f"overfits in 1/1 runs, after epoch {onset} " + row["verdict"].split(f"after epoch {onset} ", 1)[1]
    )
    runs_table = result.markdown.read_text().split("## Runs used", 1)[1]
    assert f"| {selected} | {EPOCHS} | overfits after epoch {onset} (" in runs_table
    # The figure: its marks stand at those epochs, and its legend says which curve each reads.
    figure = plots.learning_curves_figure(curves, onset_epoch=onset, selected_epoch=selected)
    lines = [line for ax in figure.axes for line in ax.get_lines() if line.get_linestyle() in (":", "--")]
    marks = {line.get_label(): line.get_xdata()[0] for line in lines if not line.get_label().startswith("_")}
    assert marks == {
        f"selected epoch {selected}: highest raw val/acc, tested": selected,
        f"overfits after epoch {onset}: smoothed validation peak": onset,
    }
    assert all(line.get_xdata()[0] in (selected, onset) for line in lines if line.get_label().startswith("_"))
    x = figure.axes[1].get_lines()[0].get_xdata()
    assert list(x) == list(range(1, EPOCHS + 1)), "the figure's epoch axis starts at 1"


def test_the_run_figure_drawn_by_the_run_marks_the_same_epochs(overfitting_run) -> None:
    """The figure the run itself logged was drawn from the same summary: it exists, and the run holds no figure error."""
    _, client, run, store = overfitting_run
    figures = [a.path for a in client.list_artifacts(run.info.run_id, "figures")]
    assert "figures/learning_curves.png" in figures and "lossbench.figures_error" not in run.data.tags
    assert (
        Path(client.download_artifacts(run.info.run_id, "figures/learning_curves.png", str(store.parent)))
        .stat()
        .st_size
        > 10_000
    )
