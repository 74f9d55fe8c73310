"""Child processes: each variant runs in its own, so one variant's allocator, thread pool, MLflow
connections or Lightning state cannot slow or speed the next, and each child's peak RSS is its own.
The epoch variants run ``--rounds`` times, alternated ABBA-style, their epochs pooled, so a slow
stretch of a busy machine falls on all of them.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import statistics
import sys
import warnings
from pathlib import Path
from typing import Any

from benchmarks.epochs import child
from benchmarks.settings import Settings
from benchmarks.spawn import child_env, spawn, tail


@contextlib.contextmanager
def quiet():
    """In-process runs: keep Lightning's banners, warnings and progress bar out of the benchmark's output."""
    names = (
        "pytorch_lightning",
        "lightning",
        "lightning.pytorch",
        "lightning_fabric",
        "lossbench",
        "mlflow",
        "alembic",
    )
    levels = {n: logging.getLogger(n).level for n in names}
    sink = io.StringIO()
    try:
        for n in names:
            logging.getLogger(n).setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


def schedule(sections: list[str], settings: Settings) -> list[tuple[str, int, int]]:
    """(variant, workers, round) in running order: plain, plain-fused and lossbench alternate ABBA-style over the
    rounds, so a slow stretch of a busy machine falls on all; the conventional pipeline, far from its thresholds, runs once."""
    order = []
    for r in range(settings.rounds):
        trio = ["plain", "plain-fused", "lossbench"] if r % 2 == 0 else ["lossbench", "plain-fused", "plain"]
        order += [(v, 0, r) for v in trio if v in sections]
        if r == 0 and "conventional" in sections:
            order += [("conventional", w, 0) for w in settings.workers]
    return order


def pool_rounds(variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per variant: the measured epochs of all its rounds pooled, the median and minimum over them."""
    pooled: dict[str, dict[str, Any]] = {}
    for v in variants:
        if v["label"] not in pooled:
            pooled[v["label"]] = {
                **v,
                "runs": [dict(r, epoch_s_by_round=[r["epoch_s"]]) for r in v.get("runs", [])],
                "rounds": 1,
                "max_rss_mb_by_round": [v["max_rss_mb"]],
                "load_by_round": [[v["load_before"][0], v["load_after"][0]]],
            }
            continue
        p = pooled[v["label"]]
        p["rounds"] += 1
        p["max_rss_mb_by_round"].append(v["max_rss_mb"])
        p["load_by_round"].append([v["load_before"][0], v["load_after"][0]])
        if v["max_rss_mb"] is not None:
            p["max_rss_mb"] = max(p["max_rss_mb"], v["max_rss_mb"])
        if v["wall_s"] is not None:
            p["wall_s"] = round(p["wall_s"] + v["wall_s"], 3)
        p["load_after"] = v["load_after"]
        for run, new in zip(p["runs"], v["runs"]):
            run["epoch_s_by_round"].append(new["epoch_s"])
            run["epoch_s"] = [t for epochs in run["epoch_s_by_round"] for t in epochs]
            run["warmup_s"] = run["warmup_s"] + new["warmup_s"]
            run["median_epoch_s"], run["min_epoch_s"] = statistics.median(run["epoch_s"]), min(run["epoch_s"])
    return list(pooled.values())


def run_variant(
    variant: str,
    runs: list[tuple[str, int]],
    settings: Settings,
    tmp: Path,
    isolation: str,
    workers: int = 0,
    accelerator: str = "cpu",
) -> dict[str, Any]:
    """One variant over its (model, batch) runs, in a child process or in this one."""
    label = variant if variant != "conventional" else f"conventional-w{workers}"
    if accelerator == "gpu":
        label += "-gpu"
    load_before = list(os.getloadavg())
    spec = {
        "variant": variant,
        "runs": runs,
        "settings": vars(settings),
        "tmp": str(tmp),
        "workers": workers,
        "accelerator": accelerator,
    }
    if isolation == "inprocess":
        import tempfile as tf

        import torch

        threads, tempdir = torch.get_num_threads(), tf.tempdir
        tf.tempdir = str(tmp)
        try:
            with quiet():
                result = child(spec)
        finally:
            torch.set_num_threads(threads)
            tf.tempdir = tempdir
        result.update(max_rss_mb=None, wall_s=None)
    else:
        spec_file, out_file, log = tmp / f"{label}.spec.json", tmp / f"{label}.result.json", tmp / f"{label}.log"
        spec_file.write_text(json.dumps(spec))
        ran = spawn(
            [sys.executable, "-m", "benchmarks", "--child", str(spec_file), "--child-out", str(out_file)],
            log,
            child_env(tmp),
            tmp,
        )
        if ran.rc != 0 or not out_file.is_file():
            raise RuntimeError(f"variant {label} failed (exit {ran.rc}); end of {log}:\n{tail(log)}")
        result = json.loads(out_file.read_text())
        result.update(max_rss_mb=round(ran.max_rss_mb, 1), wall_s=round(ran.wall_s, 3))
    result.update(load_before=load_before, load_after=list(os.getloadavg()))
    result.update(
        variant=variant, label=label, workers=workers if variant == "conventional" else None, accelerator=accelerator
    )
    return result
