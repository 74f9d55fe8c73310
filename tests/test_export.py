"""The report's "Code" section, and its numbers out of lossbench: a LaTeX table that pdflatex compiles, and tidy
CSV/Parquet files that pandas reads back typed. A real SQLite store of runs logged here with known numbers."""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from lossbench import report

CODE_A = {
    "lossbench.version": "0.1.0",
    "lossbench.git.commit": "a" * 40,
    "lossbench.git.modified": "false",
    "lossbench.code_version": "c0de" * 4,
    "lossbench.lib.torch": "2.15.0",
    "lossbench.lib.python": "3.11.7",
    "lossbench.device.cpu": "Some CPU",
    "lossbench.device.gpu": "none",
    "threads": "2",
}
CODE_B = {  # the same commit with modified code, and another torch
    **CODE_A,
    "lossbench.git.modified": "true",
    "lossbench.git.diff_sha256": "d1ff" * 16,
    "lossbench.code_version": "beef" * 4,
    "lossbench.lib.torch": "2.14.0",
}
EPOCHS = 3


@dataclass
class Run:
    loss: str
    seed: int
    test_acc: float
    test_last_acc: float
    code: dict

    @property
    def curves(self) -> dict[str, list[float]]:
        base = self.test_acc - 0.1
        return {
            "val/acc": [base + 0.03 * e for e in range(EPOCHS)],
            "val/nll": [1.0 - 0.1 * e + 0.01 * self.seed for e in range(EPOCHS)],
            "train_eval/acc": [base + 0.04 * e for e in range(EPOCHS)],
            "train_eval/nll": [0.9 - 0.1 * e for e in range(EPOCHS)],
        }


RUNS = [
    Run("ce", 0, 0.80, 0.79, CODE_A),
    Run("ce", 1, 0.82, 0.80, CODE_A),
    Run("ce", 2, 0.81, 0.81, CODE_A),
    Run("nce_rce", 0, 0.85, 0.84, CODE_A),  # +5 pp on every seed: better
    Run("nce_rce", 1, 0.87, 0.86, CODE_A),
    Run("nce_rce", 2, 0.86, 0.86, CODE_A),
    Run("mae", 0, 0.70, 0.70, CODE_A),  # about -11 pp: worse
    Run("mae", 1, 0.72, 0.71, CODE_A),
    Run("mae", 2, 0.69, 0.69, CODE_B),  # made by modified code, with another torch
]


def log(client: MlflowClient, experiment_id: str, run: Run, start: int) -> str:
    tags = {
        "lossbench.kind": "train",
        "loss": run.loss,
        "optimizer": "adam",
        "model": "linear",
        "data": "mnist",
        "seed": str(run.seed),
        "config_hash": f"{run.loss}-{run.seed}",
        "sweep_id": "sw",
        **run.code,
    }
    created = client.create_run(experiment_id, run_name=f"{run.loss}-s{run.seed}", start_time=start, tags=tags)
    metrics = [Metric(k, v, 1000 + e, e) for k, values in run.curves.items() for e, v in enumerate(values)]
    metrics += [Metric("test/acc", run.test_acc, 5000, 0), Metric("test_last/acc", run.test_last_acc, 5000, 0)]
    params = {
        "loss.name": run.loss,
        "seed": str(run.seed),
        "optimizer.lr": "0.001",
        "data.batch_size": "64",
        "optimizer.betas": "[0.9, 0.999]",
        "optimizer.fused": "True",
        "scheduler": "None",
        "checkpoint.monitor": "val/acc",
        "checkpoint.mode": "max",
    }
    client.log_batch(created.info.run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()])
    client.set_terminated(created.info.run_id, "FINISHED")
    return created.info.run_id


@dataclass
class Exported:
    uri: str
    out: Path
    summary: dict
    markdown: str
    run_ids: dict[tuple[str, int], str]
    stdout: str


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    root = tmp_path_factory.mktemp("export")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("prov", artifact_location=(root / "artifacts").as_uri())
    run_ids = {(r.loss, r.seed): log(client, exp, r, start) for start, r in enumerate(RUNS)}
    lines: list[str] = []
    args = [
        "--experiment",
        "prov",
        "--tracking-uri",
        uri,
        "--out",
        str(root / "report"),
        "--format",
        "latex,csv,parquet",
    ]
    assert report.main(args, echo=lines.append) == 0
    out = root / "report"
    summary = json.loads((out / "summary.json").read_text())
    return Exported(uri, out, summary, (out / "report.md").read_text(), run_ids, "\n".join(lines))


def test_the_code_section_names_each_code_version_and_warns_where_a_group_mixes_them(exported: Exported):
    code = exported.summary["code"]
    assert [(v["label"], v["runs"]) for v in code["versions"]] == [
        ("aaaaaaa", 8),
        (f"aaaaaaa+modified (diff {'d1ff' * 2})", 1),
    ]
    modified = code["versions"][1]
    assert modified["modified"] is True and modified["code_version"] == "beef" * 4
    assert modified["run_ids"] == [exported.run_ids[("mae", 2)]]
    warned = {(w["group"], w["mixes"]) for w in code["warnings"]}
    assert warned == {(None, "code"), ("mae / adam", "code"), ("mae / adam", "libraries")}
    section = exported.markdown.split("## Code\n", 1)[1].split("\n## ", 1)[0]
    assert "- `aaaaaaa`: 8 runs" in section and f"- `aaaaaaa+modified (diff {'d1ff' * 2})`: 1 run\n" in section
    assert (
        "**mae / adam** mixes 2 code versions, clean and modified trees: aaaaaaa: 2 runs, aaaaaaa+modified" in section
    )
    assert "**mae / adam** mixes library versions" in section and "torch 2.14.0" in section
    assert "ce / adam** mixes" not in section and "nce_rce / adam** mixes" not in section


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.rstrip().removesuffix(r"\\").split("&")]


def test_the_latex_table_compiles_and_says_what_summary_json_says(exported: Exported, tmp_path: Path):
    tex = (exported.out / "table.tex").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    header = tex.split("\\toprule\n", 1)[1].split("\n", 1)[0]
    assert cells(header) == ["loss", "optimizer", "$n$", r"test acc.\ @selected (\%)", r"test acc.\ @last (\%)"]
    body = tex.split("\\midrule\n", 1)[1].split("\\bottomrule", 1)[0].strip().splitlines()
    rows = {r["label"]: r for r in exported.summary["rows"]}
    outcomes = {c["label"]: c["outcome"] for c in exported.summary["comparisons"]}
    assert len(body) == len(rows) == 3
    best = {f: max(r[f]["mean"] for r in rows.values()) for f in ("test_acc", "test_last_acc")}
    for line in body:
        loss, optimizer, n, selected, last = cells(line)
        label = f"{loss.replace(chr(92) + '_', '_')} / {optimizer}"
        assert n == str(rows[label]["n"])
        for cell, figure in ((selected, "test_acc"), (last, "test_last_acc")):
            iv = rows[label][figure]
            mean, low, high = (f"{iv[k] * 100:.2f}" for k in ("mean", "low", "high"))
            plain = re.sub(r"\\textbf\{([^}]*)\}|\$\^\{\\(up|down)arrow\}\$", r"\1", cell)
            assert plain == rf"{mean} {{\scriptsize[{low}, {high}]}}", (label, figure, cell)
            assert cell.startswith(r"\textbf{") == (iv["mean"] == best[figure]), "the best of its column in bold"
        mark = {"better": r"$^{\uparrow}$", "worse": r"$^{\downarrow}$"}.get(outcomes.get(label, ""), "")  # ref: none
        assert (mark in selected) if mark else "arrow" not in selected, (label, outcomes.get(label))
    assert {outcomes["nce_rce / adam"], outcomes["mae / adam"]} == {"better", "worse"}
    assert r"nce\_rce" in tex and "nce_rce" not in tex.replace("% ", "\n%").split("\\begin{table}")[1]

    if shutil.which("pdflatex") is None:
        pytest.skip("no pdflatex (scripts/setup.sh installs texlive-latex-recommended)")
    for name in ("table.tex", "table_standalone.tex"):
        shutil.copy(exported.out / name, tmp_path / name)
    done = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "table_standalone.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "table_standalone.pdf").stat().st_size > 1000
    log = (tmp_path / "table_standalone.log").read_text()
    problems = [
        line for line in log.splitlines() if re.match(r"(Overfull|Underfull|! |LaTeX Warning: (?!Label))", line)
    ]
    assert problems == [], problems


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_tidy_files_round_trip_through_pandas_typed(exported: Exported, kind: str):
    read = pd.read_csv if kind == "csv" else pd.read_parquet
    runs = read(exported.out / f"runs.{kind}")
    assert len(runs) == len(RUNS) and set(runs["run_id"]) == set(exported.run_ids.values())
    expected = {
        "run_id",
        "group",
        "loss",
        "seed",
        "config_hash",
        "lossbench.git.commit",
        "lossbench.git.modified",
        "lossbench.code_version",
        "lossbench.lib.torch",
        "config.optimizer.lr",
        "config.data.batch_size",
        "config.optimizer.betas",
        "test_acc",
        "test/acc",
        "selected_epoch",
    }
    assert expected <= set(runs.columns)
    integer = "Int64" if kind == "parquet" else "int64"
    assert str(runs["seed"].dtype) == integer and str(runs["config.data.batch_size"].dtype) == integer
    assert runs["config.optimizer.lr"].dtype == "float64" and runs["test_acc"].dtype == "float64"
    assert str(runs["lossbench.git.modified"].dtype) in ("boolean", "bool")
    assert runs["config.optimizer.betas"].iloc[0] == "[0.9, 0.999]" and runs["config.scheduler"].isna().all()
    by_id = runs.set_index("run_id")
    for r in RUNS:
        row = by_id.loc[exported.run_ids[(r.loss, r.seed)]]
        assert row["test_acc"] == pytest.approx(r.test_acc) and row["seed"] == r.seed
        assert bool(row["lossbench.git.modified"]) == (r.code is CODE_B)
    summary_ids = {i for row in exported.summary["rows"] for i in row["run_ids"]}
    assert set(runs["run_id"]) == summary_ids

    curves = read(exported.out / f"curves.{kind}")
    assert list(curves.columns) == ["run_id", "loss", "optimizer", "seed", "epoch", "metric", "value"]
    assert len(curves) == len(RUNS) * 4 * EPOCHS and sorted(curves["epoch"].unique()) == [1, 2, 3]
    assert str(curves["seed"].dtype) == integer and curves["epoch"].dtype == "int64"
    # The three lines of the README: the last epoch's validation accuracy per loss, against the runs' commits.
    last = curves[(curves.metric == "val/acc") & (curves.epoch == EPOCHS)].merge(
        runs[["run_id", "lossbench.git.commit"]]
    )
    means = last.groupby("loss")["value"].mean()
    for loss in ("ce", "mae", "nce_rce"):
        assert means[loss] == pytest.approx(statistics.mean(r.curves["val/acc"][-1] for r in RUNS if r.loss == loss))


def test_the_cli_says_what_it_exported_and_refuses_an_unknown_format(exported: Exported, capsys):
    assert "exported: " in exported.stdout and "table.tex" in exported.stdout and "curves.parquet" in exported.stdout
    assert report.main(["--experiment", "prov", "--tracking-uri", exported.uri, "--format", "latex,xlsx"]) == 2
    assert "--format xlsx: unknown; choose from latex, csv, parquet" in capsys.readouterr().err


def test_exports_are_logged_with_the_report(exported: Exported):
    client = MlflowClient(tracking_uri=exported.uri)
    (logged,) = client.search_runs(
        [client.get_experiment_by_name("prov").experiment_id], "tags.`lossbench.kind` = 'report'"
    )
    names = {Path(a.path).name for a in client.list_artifacts(logged.info.run_id, "report")}
    assert {"table.tex", "table_standalone.tex", "runs.csv", "curves.csv", "runs.parquet", "curves.parquet"} <= names


def test_a_tuned_sweep_exports_each_group_at_its_chosen_setting():
    """Two learning rates per loss: the table has one row per loss, at the rate chosen on validation accuracy,
    with the setting as a column; runs.* still hold every run, ``compared`` marking those of the table."""
    from lossbench.report.aggregate import analyse
    from lossbench.report.export import latex_table, runs_frame

    def record(loss: str, lr: str, seed: int, val: float, test: float) -> report.RunRecord:
        return report.RunRecord(
            f"{loss}-{lr}-{seed}",
            f"{loss}-{lr}-{seed}",
            "FINISHED",
            seed,
            tags={"loss": loss, "optimizer": "sgd", "seed": str(seed), "config_hash": f"{loss}{lr}{seed}"},
            params={"optimizer.lr": lr, "seed": str(seed)},
            metrics={"test/acc": test, "test_last/acc": test},
            curves={"val/acc": [val], "val/nll": [0.5], "train_eval/acc": [val], "train_eval/nll": [0.4]},
        )

    runs = [
        record(loss, lr, seed, val + 0.001 * seed, test + 0.001 * seed)
        for loss, lr, val, test in [
            ("ce", "0.1", 0.90, 0.89),
            ("ce", "0.01", 0.80, 0.95),  # best on test, not on validation: not chosen
            ("gce", "0.1", 0.70, 0.70),
            ("gce", "0.01", 0.85, 0.84),
        ]
        for seed in (0, 1)
    ]
    findings = analyse(report.select_runs(runs))
    body = latex_table(findings, "t").split("\\midrule\n")[1].split("\\bottomrule")[0].strip().splitlines()
    assert [cells(line)[:4] for line in body] == [
        ["ce", "sgd", "optimizer.lr=0.1", "2"],
        ["gce", "sgd", "optimizer.lr=0.01", "2"],
    ]
    frame = runs_frame(findings)
    assert len(frame) == 8 and frame["compared"].sum() == 4
    assert set(frame[frame["compared"]]["config.optimizer.lr"]) == {0.1, 0.01}
