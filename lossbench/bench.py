"""python -m lossbench.bench — how fast lossbench's real training path is, against two yardsticks.

Variants, each timed per epoch (median of ``--epochs`` epochs after ``--warmup`` warm-up epochs):

- ``plain``: a hand-written PyTorch loop over the very tensors lossbench trains on (same splits,
  model, loss, Adam), followed by the same evaluation passes (validation and the fixed train_eval
  subset, with the same yardsticks). The floor: what the arithmetic costs.
- ``lossbench``: ``lossbench.train.run(cfg)`` on the real composed config (MLflow on, every metric,
  checkpoints, progress bar off); an epoch is the time between consecutive ``on_train_epoch_start``
  marks (the last one ends at ``on_train_end``), so validation, checkpointing and the MLflow flush
  are all inside it.
- ``conventional``: the usual Lightning pipeline: torchvision dataset with a per-sample
  ``ToTensor``/``Normalize`` through a shuffling ``DataLoader``, ``self.log(on_step=True,
  on_epoch=True, prog_bar=True)`` every step, a torchmetrics ``MulticlassAccuracy`` updated every
  step, ``MLFlowLogger`` on SQLite and the progress bar on (written to the child's log file).

Plus ``startup`` (process start to first training step of ``python -m lossbench.train``, against the
bare import of its heavy libraries), ``memory`` (the peak RSS of one real job), ``sweep`` (a 30-job
one-epoch sweep, opt-in: ``--only sweep``) and ``gpu`` (only where CUDA is available).

Each variant runs in its own subprocess (``--isolation subprocess``, the default): one variant's
allocator, thread pool, MLflow connections or Lightning state cannot slow or speed the next, and each
child's peak RSS is measured on its own. ``plain`` and ``lossbench`` run ``--rounds`` times (default
2), alternated ABBA-style, their epochs pooled, so a slow stretch of a busy machine falls on both.
Every variant runs at the same torch thread count (``--threads``, default 1). ``--smoke`` runs on
tiny generated data, in process, once, and checks nothing about speed. See docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import platform
import shlex
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BARE_IMPORT = "import torch, torchvision, pytorch_lightning, hydra, mlflow"
FIRST_STEP_ENV = "LOSSBENCH_FIRST_STEP_FILE"
NVML_ENV = "PYTORCH_NVML_BASED_CUDA_CHECK"
EPOCH_VARIANTS = ("plain", "lossbench", "conventional")
SECTIONS = (*EPOCH_VARIANTS, "startup", "memory", "sweep", "gpu")
DEFAULT_SECTIONS = (*EPOCH_VARIANTS, "startup", "memory", "gpu")
DEFAULT_BATCH = {"linear": 64, "mlp": 128, "cnn": 128}
GPU_MODELS, GPU_BATCH = ("mlp", "cnn"), 512
# The targets. Each holds only at its model's batch size, on full data (never in --smoke).
OVERHEAD_TARGET = {("mlp", 128): 1.3, ("linear", 64): 2.0}  # lossbench / plain  <=
SPEEDUP_TARGET = {("mlp", 128): 4.0, ("linear", 64): 5.0}  # conventional / lossbench  >=
STARTUP_TARGET = 1.5  # first training step / bare import  <=
MEMORY_TARGET_MB = 2048.0  # peak RSS of one job  <=
SMOKE_DATA = {"n_train": 1200, "n_test": 300}
SMOKE_OVERRIDES = ["data.val_size=200", "data.train_eval_size=200", "data.eval_batch_size=100"]
SWEEP_EXPERIMENT = "classic_losses"


# --------------------------------------------------------------------------- settings


@dataclass
class Settings:
    """Everything a run of the benchmark (and each of its children) needs to know."""

    data: str = "fashion_mnist"
    root: str = "data"
    models: list[str] = field(default_factory=lambda: ["linear", "mlp"])
    batch: dict[str, int] = field(default_factory=dict)
    warmup: int = 1
    epochs: int = 3
    reps: int = 3
    rounds: int = 2
    sweep_threads: int | None = None  # None: the command as is (each job of a sequential sweep takes every core)
    threads: int = 1
    workers: list[int] = field(default_factory=lambda: [0])
    data_overrides: list[str] = field(default_factory=list)
    smoke: bool = False
    profile: str | None = None  # folder for cProfile dumps of the lossbench variant

    def batch_of(self, model: str) -> int:
        return self.batch.get(model, DEFAULT_BATCH.get(model, 64))

    def overrides(self, model: str, batch: int, epochs: int, tmp: Path, accelerator: str = "cpu") -> list[str]:
        """The real config's overrides for one timed run (progress bar off, MLflow into ``tmp``)."""
        return [
            f"data={self.data}", f"data.root={self.root}", "data.download=false", f"model={model}",
            f"data.batch_size={batch}", f"trainer.max_epochs={epochs}", f"trainer.accelerator={accelerator}",
            "trainer.enable_progress_bar=false", f"threads={self.threads}", f"tracking.uri=sqlite:///{tmp}/mlflow.db",
            f"tracking.checkpoint_dir={tmp}/ckpt", "analysis.figures=false", *self.data_overrides,
        ]


def compose(overrides: list[str]):
    """The real config, composed as ``python -m lossbench.train`` would (without Hydra's runtime)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from lossbench.paths import conf_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# --------------------------------------------------------------------------- the variants (run in a child)


def epoch_timer():
    """A Lightning callback marking each ``on_train_epoch_start`` and ``on_train_end``."""
    import pytorch_lightning as pl

    class EpochTimer(pl.Callback):
        def __init__(self):
            self.marks: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.marks.append(time.perf_counter())

        def on_train_end(self, trainer, pl_module) -> None:
            self.marks.append(time.perf_counter())

        @property
        def epochs(self) -> list[float]:
            return [b - a for a, b in zip(self.marks, self.marks[1:])]

    return EpochTimer()


def time_plain(cfg, device: str = "cpu") -> list[float]:
    """A plain PyTorch loop doing lossbench's work: one training epoch, then the two evaluation passes."""
    import torch
    from hydra.utils import instantiate

    from lossbench.config import without_name
    from lossbench.data import MNISTFamily
    from lossbench.losses import build_loss

    s = MNISTFamily.from_config(cfg.data, seed=cfg.seed).load()  # the same splits, normalised the same way
    train_x, train_y = s.train_x.to(device), s.train_y.to(device)
    evals = [(s.val_x.to(device), s.val_y.to(device)), (s.train_x[s.train_eval_idx].to(device), s.train_y[s.train_eval_idx].to(device))]
    torch.manual_seed(cfg.seed)
    net = instantiate(cfg.model.net).to(device)
    loss_fn = build_loss(cfg.loss, cfg.data.num_classes).to(device)
    optimizer = instantiate(without_name(cfg.optimizer))(net.parameters())
    batch, eval_batch = cfg.data.batch_size, cfg.data.eval_batch_size
    generator = torch.Generator().manual_seed(cfg.seed)
    times = []
    # Importing Lightning (lossbench.data does) sets PYTORCH_NVML_BASED_CUDA_CHECK=1, after which every
    # Adam.step asks NVML whether CUDA exists (~50 us on a machine without it). A plain script does not
    # import Lightning, so the plain loop runs without it.
    nvml_check = os.environ.pop(NVML_ENV, None)
    try:
        for _ in range(cfg.trainer.max_epochs):
            times.append(_plain_epoch(net, loss_fn, optimizer, train_x, train_y, evals, batch, eval_batch, generator, device))
    finally:
        if nvml_check is not None:
            os.environ[NVML_ENV] = nvml_check
    return times


def _plain_epoch(net, loss_fn, optimizer, train_x, train_y, evals, batch: int, eval_batch: int, generator, device: str) -> float:
    """One shuffled training epoch, then evaluation passes computing the run's loss and the yardsticks; seconds."""
    import torch

    from lossbench.metrics import yardsticks

    n = len(train_y)
    start = time.perf_counter()
    net.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    order = torch.randperm(n, generator=generator).to(device)
    for i in range(0, n, batch):
        idx = order[i : i + batch]
        x, y = train_x[idx], train_y[idx]
        logits = net(x)
        loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # the running train loss and accuracy a training loop reports
            loss_sum += loss.detach() * len(y)
            correct += (logits.argmax(dim=1) == y).sum()
    record = torch.stack([loss_sum / n, correct.float() / n]).tolist()
    net.eval()
    with torch.no_grad():
        for x, y in evals:
            logits = torch.cat([net(x[i : i + eval_batch]).float() for i in range(0, len(y), eval_batch)])
            values = {"loss": loss_fn(logits, y), **yardsticks(logits, y)}
            record += torch.stack(list(values.values())).tolist()
    if not all(math.isfinite(v) for v in record):
        raise RuntimeError(f"plain loop diverged: {record}")
    return time.perf_counter() - start


def time_lossbench(cfg, profile_to: Path | None = None) -> list[float]:
    """lossbench's real path, ``lossbench.train.run``, with an epoch timer added to its callbacks."""
    import inspect

    from lossbench.train import run

    if "extra_callbacks" not in inspect.signature(run).parameters:
        raise RuntimeError("lossbench.train.run(cfg, extra_callbacks=...) is missing: the benchmark cannot time epochs")
    timer = epoch_timer()
    if profile_to is None:
        run(cfg, extra_callbacks=[timer])
    else:
        import cProfile

        with cProfile.Profile() as profiler:
            run(cfg, extra_callbacks=[timer])
        profiler.dump_stats(profile_to)
    return timer.epochs


def time_conventional(cfg, workers: int, tmp: Path, device: str = "cpu") -> list[float]:
    """The conventional Lightning pipeline: per-sample transforms, step logging, torchmetrics, MLFlowLogger, progress bar."""
    import pytorch_lightning as pl
    import torch
    from hydra.utils import instantiate
    from pytorch_lightning.loggers import MLFlowLogger
    from torch.utils.data import DataLoader, Subset
    from torchmetrics.classification import MulticlassAccuracy
    from torchvision import datasets, transforms

    from lossbench.losses import build_loss

    d = cfg.data
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((d.mean,), (d.std,))])
    full = getattr(datasets, d.dataset)(str(d.root), train=True, transform=transform, download=False)
    n_val = d.val_size if isinstance(d.val_size, int) else round(d.val_size * len(full))
    perm = torch.randperm(len(full), generator=torch.Generator().manual_seed(d.split_seed))  # lossbench's split
    train_set, val_set = Subset(full, perm[n_val:].tolist()), Subset(full, perm[:n_val].tolist())
    train_loader = DataLoader(train_set, batch_size=d.batch_size, shuffle=True, num_workers=workers)
    val_loader = DataLoader(val_set, batch_size=d.eval_batch_size, num_workers=workers)

    class Conventional(pl.LightningModule):
        def __init__(self, net, loss, lr: float, num_classes: int):
            super().__init__()
            self.net, self.loss, self.lr = net, loss, lr
            self.train_acc = MulticlassAccuracy(num_classes=num_classes)
            self.val_acc = MulticlassAccuracy(num_classes=num_classes)

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            loss = self.loss(logits, y)
            self.train_acc(logits, y)
            self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
            self.log("train/acc", self.train_acc, on_step=True, on_epoch=True, prog_bar=True)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            self.val_acc(logits, y)
            self.log("val/loss", self.loss(logits, y), on_epoch=True, prog_bar=True)
            self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=cfg.optimizer.lr)

    pl.seed_everything(cfg.seed, verbose=False)
    module = Conventional(instantiate(cfg.model.net), build_loss(cfg.loss, d.num_classes), cfg.optimizer.lr, d.num_classes)
    logger = MLFlowLogger(experiment_name="conventional", tracking_uri=f"sqlite:///{tmp}/conventional.db")
    timer = epoch_timer()
    trainer = pl.Trainer(max_epochs=cfg.trainer.max_epochs, accelerator=device, devices=1, logger=logger, callbacks=[timer],
                         enable_progress_bar=True, default_root_dir=str(tmp / "conventional"))
    trainer.fit(module, train_loader, val_loader)
    return timer.epochs


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Time one variant for each (model, batch) of ``spec``; what a child process runs and reports."""
    import torch

    settings = Settings(**spec["settings"])
    tmp, variant, device = Path(spec["tmp"]), spec["variant"], spec.get("accelerator", "cpu")
    if device == "gpu" and not torch.cuda.is_available():
        return {"skipped": "torch.cuda.is_available() is false"}
    torch.set_num_threads(settings.threads)
    results = []
    for model, batch in spec["runs"]:
        cfg = compose(settings.overrides(model, batch, settings.warmup + settings.epochs, tmp, accelerator=device))
        if variant == "plain":
            times = time_plain(cfg, "cuda" if device == "gpu" else "cpu")
        elif variant == "lossbench":
            profile_to = Path(settings.profile) / f"lossbench-{model}-{batch}.prof" if settings.profile else None
            times = time_lossbench(cfg, profile_to)
        else:
            times = time_conventional(cfg, spec["workers"], tmp, device)
        measured = times[settings.warmup :] or times
        results.append({"model": model, "batch": batch, "epoch_s": measured, "warmup_s": times[: len(times) - len(measured)],
                        "median_epoch_s": statistics.median(measured), "min_epoch_s": min(measured), "threads": torch.get_num_threads()})
    return {"runs": results}


# --------------------------------------------------------------------------- running children


@dataclass
class Child:
    rc: int
    started: float  # time.time() just before the process was spawned
    wall_s: float
    max_rss_mb: float
    log: Path


def child_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["TMPDIR"] = str(tmp)  # run()'s scratch output folder lands in the benchmark's temp dir
    env.pop(FIRST_STEP_ENV, None)
    return env


def spawn(cmd: list[str], log: Path, env: dict[str, str], cwd: Path) -> Child:
    """Run a command to completion; its own peak RSS (wait4), wall time and output (into ``log``)."""
    with open(log, "ab") as out:
        out.write(f"$ {shlex.join(cmd)}\n".encode())
        out.flush()
        started, t0 = time.time(), time.perf_counter()
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd)
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
        wall = time.perf_counter() - t0
    process.returncode = os.waitstatus_to_exitcode(status)
    return Child(process.returncode, started, wall, usage.ru_maxrss / 1024, log)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def quiet():
    """In-process runs: keep Lightning's banners, warnings and progress bar out of the benchmark's output."""
    names = ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric", "lossbench", "mlflow", "alembic")
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
    """(variant, workers, round) in running order: plain and lossbench alternate ABBA-style over the rounds, so a
    slow stretch of a busy machine falls on both; the conventional pipeline, far from its thresholds, runs once."""
    order = []
    for r in range(settings.rounds):
        pair = ["plain", "lossbench"] if r % 2 == 0 else ["lossbench", "plain"]
        order += [(v, 0, r) for v in pair if v in sections]
        if r == 0 and "conventional" in sections:
            order += [("conventional", w, 0) for w in settings.workers]
    return order


def pool_rounds(variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per variant: the measured epochs of all its rounds pooled, the median and minimum over them."""
    pooled: dict[str, dict[str, Any]] = {}
    for v in variants:
        if v["label"] not in pooled:
            pooled[v["label"]] = {**v, "runs": [dict(r, epoch_s_by_round=[r["epoch_s"]]) for r in v.get("runs", [])],
                                  "rounds": 1, "max_rss_mb_by_round": [v["max_rss_mb"]], "load_by_round": [[v["load_before"][0], v["load_after"][0]]]}
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


def run_variant(variant: str, runs: list[tuple[str, int]], settings: Settings, tmp: Path, isolation: str,
                workers: int = 0, accelerator: str = "cpu") -> dict[str, Any]:
    """One variant over its (model, batch) runs, in a child process or in this one."""
    label = variant if variant != "conventional" else f"conventional-w{workers}"
    if accelerator == "gpu":
        label += "-gpu"
    load_before = list(os.getloadavg())
    spec = {"variant": variant, "runs": runs, "settings": vars(settings), "tmp": str(tmp), "workers": workers, "accelerator": accelerator}
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
        ran = spawn([sys.executable, "-m", "lossbench.bench", "--child", str(spec_file), "--child-out", str(out_file)], log, child_env(tmp), tmp)
        if ran.rc != 0 or not out_file.is_file():
            raise RuntimeError(f"variant {label} failed (exit {ran.rc}); end of {log}:\n{tail(log)}")
        result = json.loads(out_file.read_text())
        result.update(max_rss_mb=round(ran.max_rss_mb, 1), wall_s=round(ran.wall_s, 3))
    result.update(load_before=load_before, load_after=list(os.getloadavg()))
    result.update(variant=variant, label=label, workers=workers if variant == "conventional" else None, accelerator=accelerator)
    return result


# --------------------------------------------------------------------------- start-up, memory, sweep


FALLBACK_WRAPPER = """\
import sys, time
from pathlib import Path
import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from lossbench.paths import conf_dir
from lossbench.train import run

class FirstStep(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 0 and batch_idx == 0:
            Path(sys.argv[1]).write_text(repr(time.time()))

with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
    cfg = compose("config", overrides=sys.argv[2:])
run(cfg, extra_callbacks=[FirstStep()])
"""


def first_step_hook_present() -> bool:
    """Does ``python -m lossbench.train`` write the first-step time to ``$LOSSBENCH_FIRST_STEP_FILE``?"""
    sources = [REPO / "lossbench" / "train.py", REPO / "lossbench" / "tracking.py"]
    return any(p.is_file() and FIRST_STEP_ENV in p.read_text() for p in sources)


def job_overrides(settings: Settings, model: str, tmp: Path, name: str) -> list[str]:
    """One real one-epoch job, as a user launches it (figures on, like the default config)."""
    return [
        f"data={settings.data}", f"data.root={settings.root}", "data.download=false", f"model={model}",
        f"data.batch_size={settings.batch_of(model)}", "trainer.max_epochs=1", "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false", f"threads={settings.threads}", f"tracking.uri=sqlite:///{tmp}/mlflow.db",
        f"tracking.checkpoint_dir={tmp}/ckpt", f"hydra.run.dir={tmp}/outputs/{name}", *settings.data_overrides,
    ]


def measure_startup(settings: Settings, tmp: Path, model: str) -> dict[str, Any]:
    """Bare import of the heavy libraries vs ``python -m lossbench.train`` up to its first training step.

    Both are fresh processes timed from just before spawn. The tracking store exists already (as it
    does for every run after a project's first); each job runs to the end, so its peak RSS is also
    the memory of one whole job.
    """
    env = child_env(tmp)
    log = tmp / "startup.log"
    bare = []
    for _ in range(settings.reps):
        ran = spawn([sys.executable, "-c", BARE_IMPORT], log, env, tmp)
        if ran.rc != 0:
            raise RuntimeError(f"bare import failed (exit {ran.rc}):\n{tail(log)}")
        bare.append(ran.wall_s)
    hook = first_step_hook_present()
    jobs, notes, first_steps = [], [], []
    if not hook:
        notes.append(f"train.py does not read ${FIRST_STEP_ENV}: using the python -c fallback")
    fresh = not (tmp / "mlflow.db").exists()
    for i in range(settings.reps + (1 if fresh else 0)):
        mark = tmp / f"first-step-{i}.txt"
        overrides = job_overrides(settings, model, tmp, f"startup-{i}")
        while True:
            mark.unlink(missing_ok=True)
            if hook:
                cmd, run_env = [sys.executable, "-m", "lossbench.train", *overrides], {**env, FIRST_STEP_ENV: str(mark)}
            else:
                cmd, run_env = [sys.executable, "-c", FALLBACK_WRAPPER, str(mark), *[o for o in overrides if not o.startswith("hydra.")]], env
            ran = spawn(cmd, log, run_env, tmp)
            if ran.rc != 0:
                raise RuntimeError(f"lossbench job failed (exit {ran.rc}):\n{tail(log)}")
            if mark.is_file():
                break
            if not hook:
                raise RuntimeError(f"the start-up probe wrote nothing to {mark}:\n{tail(log)}")
            hook = False
            notes.append(f"${FIRST_STEP_ENV} was set but nothing was written: switched to the python -c fallback")
        job = {"first_step_s": round(float(mark.read_text()) - ran.started, 3), "wall_s": round(ran.wall_s, 3),
               "max_rss_mb": round(ran.max_rss_mb, 1), "store": "fresh" if fresh and i == 0 else "existing"}
        jobs.append(job)
        if job["store"] == "existing":
            first_steps.append(job["first_step_s"])
    if fresh:
        notes.append("the first job created the tracking store; it is reported but not in the median")
    if not first_steps:
        first_steps = [j["first_step_s"] for j in jobs]
    bare_median, first_median = statistics.median(bare), statistics.median(first_steps)
    method = ("env hook: python -m lossbench.train with $" + FIRST_STEP_ENV if hook else
              "fallback: python -c wrapper composing the config with hydra.compose and passing a first-step callback to run()")
    return {
        "model": model, "method": method, "bare_import_cmd": f"{sys.executable} -c {shlex.quote(BARE_IMPORT)}",
        "bare_import_s": [round(b, 3) for b in bare], "bare_import_median_s": round(bare_median, 3),
        "first_step_s": first_steps, "first_step_median_s": round(first_median, 3),
        "ratio": round(first_median / bare_median, 3), "target": STARTUP_TARGET, "jobs": jobs, "notes": notes,
    }


def measure_memory(settings: Settings, tmp: Path, model: str, startup: dict[str, Any] | None) -> dict[str, Any]:
    """Peak RSS of one real job (``python -m lossbench.train``, one epoch, to its end): the start-up jobs', else one of its own."""
    if startup and startup.get("jobs"):
        peaks = [j["max_rss_mb"] for j in startup["jobs"]]
        source = "the start-up section's jobs (wait4 ru_maxrss of each child)"
    else:
        log = tmp / "memory.log"
        ran = spawn([sys.executable, "-m", "lossbench.train", *job_overrides(settings, model, tmp, "memory")], log, child_env(tmp), tmp)
        if ran.rc != 0:
            raise RuntimeError(f"lossbench job failed (exit {ran.rc}):\n{tail(log)}")
        peaks, source = [round(ran.max_rss_mb, 1)], "one job of its own (wait4 ru_maxrss)"
    return {"model": model, "max_rss_mb": max(peaks), "jobs_max_rss_mb": peaks, "source": source, "target_mb": MEMORY_TARGET_MB}


def measure_sweep(settings: Settings, tmp: Path) -> dict[str, Any]:
    """The 30-job one-epoch sweep ``+experiment=classic_losses``: wall time and the share not spent in epochs."""
    from lossbench.paths import conf_dir

    experiment_file = conf_dir() / "experiment" / f"{SWEEP_EXPERIMENT}.yaml"
    if not experiment_file.is_file():
        return {"skipped": f"{experiment_file} does not exist"}
    store = tmp / "sweep.db"
    cmd = [sys.executable, "-m", "lossbench.train", "-m", f"+experiment={SWEEP_EXPERIMENT}", "trainer.max_epochs=1",
           f"data={settings.data}", f"data.root={settings.root}", "data.download=false", f"tracking.uri=sqlite:///{store}",
           f"tracking.checkpoint_dir={tmp}/sweep-ckpt", f"hydra.sweep.dir={tmp}/multirun", *settings.data_overrides]
    if settings.sweep_threads:
        cmd.append(f"threads={settings.sweep_threads}")
    log = tmp / "sweep.log"
    ran = spawn(cmd, log, child_env(tmp), tmp)
    if ran.rc != 0:
        raise RuntimeError(f"sweep failed (exit {ran.rc}):\n{tail(log)}")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = [r for r in client.search_runs(experiments, max_results=5000) if r.data.tags.get("lossbench.kind") == "train"]
    epochs = sorted(m.value for r in runs for m in client.get_metric_history(r.info.run_id, "time/epoch_s"))
    epoch_s = sum(epochs)
    return {
        "command": shlex.join(cmd), "jobs": len(runs), "finished": sum(r.info.status == "FINISHED" for r in runs),
        "wall_s": round(ran.wall_s, 3), "sum_epoch_s": round(epoch_s, 3), "not_training_share": round((ran.wall_s - epoch_s) / ran.wall_s, 4),
        "not_training_per_job_s": round((ran.wall_s - epoch_s) / max(1, len(runs)), 3),
        "epoch_s_median": round(statistics.median(epochs), 3) if epochs else None, "epoch_s_max": round(max(epochs), 3) if epochs else None,
        "max_rss_mb": round(ran.max_rss_mb, 1),
        "threads": settings.sweep_threads or "config default (every core in a sequential sweep)",
        "note": "without --sweep-threads each job of this sequential sweep uses every core, and other load on the machine can stretch "
                "epochs many times over (see epoch_s_median/max); with a parallel launcher the epochs overlap and the share understates the overhead",
    }


def gpu_present() -> bool:
    """Cheap check before spending a child process on the GPU section (the child asks torch itself)."""
    return Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists()


# --------------------------------------------------------------------------- report


def ratios(variants: list[dict[str, Any]], smoke: bool) -> list[dict[str, Any]]:
    """Per (model, batch): each variant's median against plain, and conventional's against lossbench, with targets."""
    rows = []
    by = {(v["label"], r["model"], r["batch"]): r["median_epoch_s"] for v in variants if "runs" in v for r in v["runs"]}
    fastest = {(v["label"], r["model"], r["batch"]): r["min_epoch_s"] for v in variants if "runs" in v for r in v["runs"]}
    for v in variants:
        for r in v.get("runs", []):
            key, med = (r["model"], r["batch"]), r["median_epoch_s"]
            plain_label, own_label = ("plain-gpu", "lossbench-gpu") if v["accelerator"] == "gpu" else ("plain", "lossbench")
            plain, own = by.get((plain_label, *key)), by.get((own_label, *key))
            plain_min, own_min = fastest.get((plain_label, *key)), fastest.get((own_label, *key))
            row = {"variant": v["label"], "model": key[0], "batch": key[1], "median_epoch_s": med, "min_epoch_s": r["min_epoch_s"],
                   "vs_plain": med / plain if plain else None, "conventional_over_lossbench": None, "target": None, "pass": None,
                   # Other load only ever adds time: the fastest epochs are the steadier comparison on a busy machine.
                   "vs_plain_min": r["min_epoch_s"] / plain_min if plain_min else None,
                   "conventional_over_lossbench_min": r["min_epoch_s"] / own_min if v["variant"] == "conventional" and own_min else None}
            if v["variant"] == "lossbench" and v["accelerator"] == "cpu" and key in OVERHEAD_TARGET:
                row["target"] = f"<= {OVERHEAD_TARGET[key]}x plain"
                row["pass"] = None if smoke or row["vs_plain"] is None else row["vs_plain"] <= OVERHEAD_TARGET[key]
            if v["variant"] == "conventional" and own:
                row["conventional_over_lossbench"] = med / own
                if key in SPEEDUP_TARGET:
                    row["target"] = f">= {SPEEDUP_TARGET[key]}x lossbench"
                    row["pass"] = None if smoke else row["conventional_over_lossbench"] >= SPEEDUP_TARGET[key]
            rows.append(row)
    return rows


def verdict(passed: bool | None, smoke: bool) -> str:
    return "n/a (smoke)" if smoke else "-" if passed is None else "PASS" if passed else "FAIL"


def table(result: dict[str, Any]) -> str:
    smoke = result["settings"]["smoke"]
    fmt = "{:<18} {:<7} {:>5} {:>15} {:>9} {:>10} {:<20} {}"
    lines = [fmt.format("variant", "model", "batch", "median s/epoch", "vs plain", "conv/lb", "target", "result")] if result["ratios"] else []
    for r in result["ratios"]:
        lines.append(fmt.format(
            r["variant"], r["model"], r["batch"], f"{r['median_epoch_s']:.3f}",
            "" if r["vs_plain"] is None else f"{r['vs_plain']:.2f}x",
            "" if r["conventional_over_lossbench"] is None else f"{r['conventional_over_lossbench']:.2f}x",
            r["target"] or "", verdict(r["pass"], smoke) if r["target"] else ""))
    s = result.get("startup")
    if s:
        lines.append(f"start-up ({s['model']}): first training step {s['first_step_median_s']:.2f} s vs bare import "
                     f"{s['bare_import_median_s']:.2f} s = {s['ratio']:.2f}x   target <= {STARTUP_TARGET}x   {verdict(s['pass'], smoke)}")
    m = result.get("memory")
    if m:
        lines.append(f"peak memory ({m['model']}, one job): {m['max_rss_mb']:.0f} MB   target <= {MEMORY_TARGET_MB:.0f} MB   {verdict(m['pass'], smoke)}")
    w = result.get("sweep")
    if w:
        lines.append(f"sweep: skipped: {w['skipped']}" if "skipped" in w else
                     f"sweep ({w['jobs']} jobs, 1 epoch): wall {w['wall_s']:.1f} s, epochs {w['sum_epoch_s']:.1f} s, "
                     f"not training {100 * w['not_training_share']:.1f}% ({w['not_training_per_job_s']:.1f} s/job; "
                     f"epoch median {w['epoch_s_median']:.2f} s, max {w['epoch_s_max']:.2f} s)")
    g = result.get("gpu")
    if g and "skipped" in g:
        lines.append(f"gpu: skipped: {g['skipped']}")
    if result["settings"].get("profile"):
        lines.append("NOTE: --profile was on: the lossbench rows ran under cProfile and are slower than they really are")
    lines.append(f"threads={result['machine']['threads']} cores={result['machine']['cores']} "
                 f"epochs={result['settings']['epochs']} (+{result['settings']['warmup']} warm-up) x {result['settings']['rounds']} rounds (plain, lossbench) isolation={result['settings']['isolation']} "
                 f"load avg before/after {result['machine']['load_before'][0]:.2f}/{result['machine']['load_after'][0]:.2f}")
    return "\n".join(line.rstrip() for line in lines)


def machine_info(threads: int) -> dict[str, Any]:
    from importlib import metadata

    versions = {}
    for name in ("torch", "torchvision", "pytorch-lightning", "hydra-core", "mlflow", "torchmetrics"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "")
    return {"cores": available_cores(), "cpu": cpu, "python": platform.python_version(), "platform": platform.platform(),
            "threads": threads, "versions": versions, "pythondontwritebytecode": os.environ.get("PYTHONDONTWRITEBYTECODE"),
            "load_before": list(os.getloadavg())}


# --------------------------------------------------------------------------- smoke data


def write_idx(path: Path, data: bytes, shape: tuple[int, ...]) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 0x08, len(shape)))
        f.write(struct.pack(f">{len(shape)}I", *shape))
        f.write(data)


def write_tiny(root: Path, dataset: str, n_train: int, n_test: int, seed: int = 0) -> Path:
    """A learnable MNIST-format data set in ``<root>/<dataset>/raw/``: each class lights its own rows."""
    import numpy as np

    raw = root / dataset / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = {True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    for train, n in ((True, n_train), (False, n_test)):
        labels = rng.permutation(np.arange(n) % 10)
        images = rng.integers(0, 60, size=(n, 28, 28))
        for i, label in enumerate(labels):
            images[i, 2 * label + 4 : 2 * label + 7, 4:24] += 180
        write_idx(raw / names[train][0], np.clip(images, 0, 255).astype(np.uint8).tobytes(), (n, 28, 28))
        write_idx(raw / names[train][1], labels.astype(np.uint8).tobytes(), (n,))
    return root


DATASET_OF = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


# --------------------------------------------------------------------------- main


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lossbench.bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny generated data, 1 epoch, 1 repetition, in process; checks nothing about speed")
    p.add_argument("--out", default="bench-results/bench.json", help="JSON file for every raw number (default %(default)s)")
    p.add_argument("--models", default="linear,mlp", help="comma-separated models (default %(default)s)")
    p.add_argument("--batch", default="", help="model=batch overrides, e.g. mlp=256 (default linear=64, mlp=128: the targets' batches)")
    p.add_argument("--epochs", type=int, default=None, help="measured epochs after the warm-up (default 3; smoke 1)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up epochs, not measured (default 1; smoke 0)")
    p.add_argument("--rounds", type=int, default=None, help="child runs of plain and lossbench, alternated, epochs pooled (default 2; smoke 1)")
    p.add_argument("--sweep-threads", type=int, default=None, help="append threads=N to the sweep's command (default: the config's own choice)")
    p.add_argument("--reps", type=int, default=None, help="start-up repetitions, median taken (default 3; smoke 1)")
    p.add_argument("--only", default="", help=f"comma-separated sections of: {', '.join(SECTIONS)} (default all but sweep)")
    p.add_argument("--threads", type=int, default=1, help="torch threads for every variant (default %(default)s: see docs/benchmark.md)")
    p.add_argument("--workers", default="0", help="DataLoader workers of the conventional pipeline, comma-separated (default 0)")
    p.add_argument("--data", default="fashion_mnist", choices=sorted(DATASET_OF), help="data config (default %(default)s)")
    p.add_argument("--root", default=os.environ.get("LOSSBENCH_DATA", "data"), help="data.root (default $LOSSBENCH_DATA or ./data)")
    p.add_argument("--isolation", choices=("subprocess", "inprocess"), default=None, help="where variants run (default subprocess; smoke inprocess)")
    p.add_argument("--profile", default=None, metavar="DIR", help="also dump a cProfile of each lossbench run into DIR")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, stores) and print its path")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    if args.child:
        result = child(json.loads(Path(args.child).read_text()))
        Path(args.child_out).write_text(json.dumps(result))
        return result

    sections = [s.strip() for s in args.only.split(",") if s.strip()] or list(DEFAULT_SECTIONS)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"--only: unknown section {unknown[0]!r}; use {', '.join(SECTIONS)}")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    batch = {k: int(v) for k, v in (item.split("=") for item in args.batch.split(",") if item.strip())}
    threads = args.threads
    if threads < 1:
        raise SystemExit("--threads must be at least 1")
    isolation = args.isolation or ("inprocess" if args.smoke else "subprocess")
    settings = Settings(
        data=args.data, root=str(Path(args.root).expanduser().resolve()), models=models, batch=batch,
        warmup=args.warmup if args.warmup is not None else (0 if args.smoke else 1),
        epochs=args.epochs if args.epochs is not None else (1 if args.smoke else 3),
        reps=args.reps if args.reps is not None else (1 if args.smoke else 3),
        sweep_threads=args.sweep_threads,
        rounds=max(1, args.rounds if args.rounds is not None else (1 if args.smoke else 2)),
        threads=threads, workers=[int(w) for w in args.workers.split(",") if w.strip()], smoke=args.smoke,
        profile=str(Path(args.profile).resolve()) if args.profile else None,
    )
    if settings.profile:
        Path(settings.profile).mkdir(parents=True, exist_ok=True)
    if not args.smoke and not (Path(settings.root) / DATASET_OF[settings.data] / "raw").is_dir():
        raise SystemExit(f"no {DATASET_OF[settings.data]} under {settings.root}: pass --root (the folder holding {DATASET_OF[settings.data]}/raw/)")
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="lossbench-bench-"))
    if args.smoke:
        settings.root = str(write_tiny(tmp / "data", DATASET_OF[settings.data], **SMOKE_DATA))
        settings.data_overrides = list(SMOKE_OVERRIDES)

    result: dict[str, Any] = {
        "command": shlex.join([sys.executable, "-m", "lossbench.bench", *(sys.argv[1:] if argv is None else argv)]),
        "settings": {**vars(settings), "isolation": isolation, "sections": sections},
        "machine": machine_info(threads),
        "targets": {"lossbench_over_plain_max": {f"{m}@{b}": t for (m, b), t in OVERHEAD_TARGET.items()},
                    "conventional_over_lossbench_min": {f"{m}@{b}": t for (m, b), t in SPEEDUP_TARGET.items()},
                    "startup_ratio_max": STARTUP_TARGET, "memory_mb_max": MEMORY_TARGET_MB},
        "variants": [],
    }
    runs = [(m, settings.batch_of(m)) for m in models]
    try:
        for variant, workers, round_ in schedule(sections, settings):
            progress(f"{variant}{f' (workers={workers})' if variant == 'conventional' else ''}"
                     f"{f' round {round_ + 1}' if variant != 'conventional' and settings.rounds > 1 else ''}: {', '.join(f'{m}@{b}' for m, b in runs)}")
            result["variants"].append(run_variant(variant, runs, settings, tmp, isolation, workers))
        result["variants"] = pool_rounds(result["variants"])
        job_model = "mlp" if "mlp" in models else models[0]
        if "startup" in sections:
            progress(f"start-up: bare import x{settings.reps}, lossbench jobs ({job_model})")
            s = measure_startup(settings, tmp, job_model)
            s["pass"] = None if settings.smoke else s["ratio"] <= STARTUP_TARGET
            result["startup"] = s
        if "memory" in sections:
            m = measure_memory(settings, tmp, job_model, result.get("startup"))
            m["pass"] = None if settings.smoke else m["max_rss_mb"] <= MEMORY_TARGET_MB
            result["memory"] = m
        if "sweep" in sections:
            progress("sweep: +experiment=classic_losses, 1 epoch (minutes)")
            result["sweep"] = measure_sweep(settings, tmp)
        if "gpu" in sections:
            if not gpu_present():
                result["gpu"] = {"skipped": "no CUDA device on this machine"}
            else:
                progress("gpu: lossbench and plain, mlp and cnn at batch 512")
                gpu_runs = [(m, GPU_BATCH) for m in GPU_MODELS]
                found = [run_variant(v, gpu_runs, settings, tmp, isolation, accelerator="gpu") for v in ("plain", "lossbench")]
                skipped = next((f["skipped"] for f in found if "skipped" in f), None)
                if skipped:
                    result["gpu"] = {"skipped": skipped}
                else:
                    result["variants"].extend(found)
                    result["gpu"] = {"runs": [{"variant": f["label"], **r} for f in found for r in f["runs"]]}
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    result["ratios"] = ratios(result["variants"], settings.smoke)
    result["machine"]["load_after"] = list(os.getloadavg())
    result["total_s"] = round(time.perf_counter() - started, 1)
    result["table"] = table(result)
    print(result["table"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"raw numbers: {out} ({result['total_s']:.0f} s)")
    return result


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
