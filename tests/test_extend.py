"""The sweep that finishes the job, on a real small sweep: the report's extension command launches only the new
seeds of the undecided groups (and the reference beside them), in the same sweep, and the report it ends with
looks a second time: it decides, or says why not."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ENV, train_runs

pytestmark = pytest.mark.slow

LOSSES = ("ce", "label_smoothing", "mse")


def first_sweep(tmp_path: Path, root: Path) -> subprocess.CompletedProcess:
    store = tmp_path / "mlflow.db"
    overrides = [
        f"data.root={root}",
        "data.val_size=100",
        "data.train_eval_size=100",
        "data.eval_batch_size=200",
        "data.label_noise.rate=0.4",
        "model=mlp",
        "trainer.max_epochs=2",
        "trainer.accelerator=cpu",
        "analysis.figures=false",
        f"tracking.uri=sqlite:///{store}",
        f"tracking.checkpoint_dir={tmp_path / 'ckpt'}",
        "report.min_effect_pp=1",  # plan for 1 pp (a handful of seeds here); 3 seeds' intervals reach past ±1 pp
        f"loss={','.join(LOSSES)}",
        "seed=0,1,2",
    ]
    command = [sys.executable, "-m", "lossbench.train", "-m", *overrides]
    return subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900)


def test_the_printed_command_runs_only_the_missing_seeds_and_the_report_looks_again(tmp_path: Path) -> None:
    from idx import write_mnist_family

    root = write_mnist_family(tmp_path / "data", "MNIST", n_train=400, n_test=600, signal=12)
    done = first_sweep(tmp_path, root)
    assert done.returncode == 0, done.stderr[-3000:]
    report = Path(re.search(r"^report: (\S+)$", done.stdout, re.M)[1]).with_name("summary.json")
    first = json.loads(report.read_text())
    extension = first["extension"]
    assert extension is not None, first["answer"]
    planned = {g["group"]: g["new_seeds"] for g in extension["groups"]}
    undecided = {c["label"] for c in first["comparisons"] if c["plan"] and c["plan"]["extra_seeds"]}
    assert undecided and set(planned) == undecided | {"ce / adam"}, "the undecided groups and their reference only"
    decide = re.search(r"^decide: (.+?)   \(\d+ more runs\)$", done.stdout, re.M)[1]
    assert decide == extension["command"]
    _, before = train_runs(tmp_path / "mlflow.db")

    args = shlex.split(decide)
    assert args[:4] == ["python", "-m", "lossbench.train", "-m"]
    again = subprocess.run(
        [sys.executable, *args[1:]], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900
    )
    assert again.returncode == 0, again.stderr[-3000:]

    _, after = train_runs(tmp_path / "mlflow.db")
    new = [r for r in after if r.info.run_id not in {b.info.run_id for b in before}]
    assert len(new) == sum(planned.values()) == extension["runs"], "every planned run, and nothing else"
    assert {r.data.tags["lossbench.stage"] for r in new} == {"2"}
    assert {r.data.tags["sweep_id"] for r in after} == {first["sweep_id"]}, "the same sweep"
    for group, count in planned.items():
        loss = group.split(" / ")[0]
        seeds = sorted(int(r.data.tags["seed"]) for r in new if r.data.tags["loss"] == loss)
        assert seeds == list(range(3, 3 + count)), (group, seeds)
    second = json.loads(report.read_text())  # the extension's sweep wrote the report again
    for comparison in second["comparisons"]:
        if comparison["label"] in undecided:
            assert comparison["look"] == 2 and comparison["n"] == 3 + planned[comparison["label"]]
            assert (
                comparison["outcome"] in ("better", "worse", "equivalent")
                or "after the sweep's one extension" in comparison["verdict"]
                or (comparison["outcome"] == "below_resolution")
            ), comparison["verdict"]
    assert second["extension"] is None, "one extension: the second look does not ask for another"
