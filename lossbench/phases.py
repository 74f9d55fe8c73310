"""One run, in four phases: prepare -> open (or resume) the run -> fit and test -> record.

:func:`lossbench.train.run` calls them in that order; each takes only the part of the config it uses.

1. :func:`prepare` loads the data and builds the model, loss, optimizer and scheduler, and sends one training
   batch through model and loss on the training device: whatever is wrong with the input fails here, before
   a run exists in the store.
2. :func:`open_run` connects to the store and finds what to do with this exact config: skip it (it FINISHED
   before, in a sweep), resume its interrupted run from ``last.ckpt``, or create a new run.
3. :func:`fit_and_test` trains with Lightning, then tests the selected checkpoint and the final weights.
4. :func:`record` writes what the run means: test metrics, the overfitting summary and verdict, the config and
   the figures.

Imported by a run after the heavy imports (torch, Lightning, MLflow), so they stand at the top of this module.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lossbench import analysis, gpus, job, preflight, provenance, regression, run_figures
from lossbench.callbacks import EpochLogger
from lossbench.config import (
    CONFIG_HASH_VERSION,
    chosen_scheduler,
    config_hash,
    flatten,
    is_regression,
    redact_override,
    redact_tree,
    resolved,
    without_name,
)
from lossbench.console import EpochLine, MiniBatchProgressBar
from lossbench.errors import ConfigError, LossbenchError, describe
from lossbench.losses import build_loss
from lossbench.models import SingleLogit
from lossbench.module import LossbenchModule, curves
from lossbench.names import (
    CHECKPOINT_TAG,
    CODE_DIFF_ARTIFACT,
    CONFIG_HASH_TAG,
    CONFIG_HASH_VERSION_TAG,
    FIRST_EPOCH,
    FIRST_EPOCH_TAG,
    KIND_TRAIN,
    NOISE_TAG_PREFIX,
    NOTE_TAG,
    OBJECTIVE,
    ONSET_TAG,
    PARENT_RUN_TAG,
    SEED_DRIVES_TAG,
    STAGE_TAG,
    SUMMARY_EPOCHS,
    SUMMARY_SELECTED_EPOCH,
    SWEEP_TAG,
    TEST_ACC,
    TEST_LAST_ACC,
    TEST_LAST_PREFIX,
    TEST_PREFIX,
    TEST_SIZE_TAG,
    THREADS_TAG,
    VERDICT_TAG,
    VERDICT_TEXT_TAG,
)
from lossbench.optim import check_fused
from lossbench.store import Tracker, tag_filter

log = logging.getLogger("lossbench")

# ------------------------------------------------------------------------------------- 1. prepare


@dataclass
class Prepared:
    """What a run trains, built and checked: the data (loaded), the network, the loss and the optimizer and
    scheduler factories, and the device Lightning will train on."""

    data: Any
    net: torch.nn.Module
    loss: torch.nn.Module
    optimizer: Any
    scheduler: Any
    device: torch.device


def prepare(cfg: DictConfig) -> Prepared:
    """Build every piece of the config and send one training batch through model and loss (no run exists yet)."""
    quiet_libraries()
    # Lightning makes torch's CUDA check go through NVML so that forked DataLoader workers stay safe.
    # lossbench forks no workers, and through NVML every optimizer step pays ~50 us to ask for CUDA.
    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    torch.set_num_threads(cfg.threads or job.threads_per_job())
    check_fused(cfg.optimizer)
    if cfg.analysis.figures:  # started now, the drawing process imports matplotlib while the model trains
        run_figures.drawer()
    data = built("data", lambda: instantiate(cfg.data, shuffle_seed=cfg.seed))  # conf/data: lossbench.data.ImageData
    data.load()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    with warnings.catch_warnings(record=True) as said:  # shown only if the model passes its check below
        warnings.simplefilter("always")
        net = built("model", lambda: build_net(cfg))
    if is_regression(cfg):  # one output and torch's criterion on it (lossbench.regression)
        loss = built("loss", lambda: regression.build_loss(cfg.loss))
    else:
        loss = built("loss", lambda: build_loss(cfg.loss, cfg.data.num_classes))
    optimizer = built("optimizer", lambda: instantiate(without_name(cfg.optimizer)))
    scheduler_cfg = chosen_scheduler(cfg)
    scheduler = None if scheduler_cfg is None else built("scheduler", lambda: instantiate(without_name(scheduler_cfg)))
    probe = built("optimizer", lambda: optimizer([torch.nn.Parameter(torch.zeros(1))]))  # bad keywords fail now
    if scheduler is not None:
        built("scheduler", lambda: scheduler(probe))
    device = preflight.training_device(cfg.trainer)
    x, y = data.head(cfg.data.batch_size)  # one training batch through model and loss, on the training device
    preflight.check_one_batch(net, loss, x, y, cfg, device)
    for w in said:  # (a model too big for its images warns of zero-element layers before its one-line error)
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return Prepared(data, net, loss, optimizer, scheduler, device)


def build_net(cfg: DictConfig) -> torch.nn.Module:
    """The model of ``model.net``; with ``loss.outputs: 1`` (``loss=bce_single``, two classes) its head has one
    output, read as the logits ``[0, s]`` (lossbench.models.SingleLogit)."""
    if cfg.loss.get("outputs") == 1:
        return SingleLogit(instantiate(cfg.model.net, num_classes=1))
    return instantiate(cfg.model.net)


def built(group: str, build):
    """Build one piece of the config; a failure becomes a one-line ConfigError naming its group."""
    try:
        return build()
    except LossbenchError:
        raise
    except Exception as e:
        raise ConfigError(f"{group}: cannot be built from its config: {describe(e)}") from e


def quiet_libraries() -> None:
    """Lightning's start-up banners and warnings that say nothing about the run: its deprecation warning it
    triggers itself, and its hint that ``srun`` exists (lossbench's Slurm launcher starts jobs itself)."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system but is not used")


# ------------------------------------------------------------------------------------ 2. open the run


@dataclass(frozen=True)
class Identity:
    """What a run is, from its config: the hash that recognises it, its params, tags and name; and what makes it:
    the code (lossbench.provenance) and the command that composes the same config."""

    config_hash: str
    params: dict[str, Any]
    tags: dict[str, Any]
    name: str
    code: provenance.Code
    command: str


def identity(cfg: DictConfig) -> Identity:
    """The run's identity (:func:`lossbench.config.config_hash`), params, tags, a readable unique name, this
    process's code and the command that makes the run again."""
    scheduler = chosen_scheduler(cfg)
    tags = {
        "loss": cfg.loss.name,
        "optimizer": cfg.optimizer.name,
        "model": cfg.model.name,
        "data": cfg.data.name,
        "scheduler": "none" if scheduler is None else scheduler.name,
        "seed": cfg.seed,
    }
    name = cfg.tracking.run_name or "-".join(
        [cfg.loss.name, cfg.optimizer.name, cfg.model.name, f"s{cfg.seed}", uuid.uuid4().hex[:6]]
    )
    command = provenance.command(provenance.job_overrides())
    return Identity(config_hash(cfg), dict(flatten(resolved(cfg))), tags, name, provenance.code(), command)


@dataclass(frozen=True)
class Opened:
    """The run this job records into (``skipped``: the FINISHED run that makes this job unnecessary)."""

    tracker: Tracker
    run_id: str
    checkpoint_dir: Path
    ckpt_path: str | None = None
    skipped: bool = False
    objective: float = math.nan


def open_run(tracking: DictConfig, resume: bool | str | None, who: Identity) -> Opened:
    """Skip (a FINISHED config, in a sweep by default, made by code ``tracking.reuse`` accepts), resume (an
    interrupted run with a checkpoint) or create the run of ``who`` in the store of ``tracking`` (``tracking.*``)."""
    tracker = Tracker.connect(tracking.uri, tracking.experiment, tracking.timeout_s)
    tracker.end_orphaned_runs(tag_filter(KIND_TRAIN, {CONFIG_HASH_TAG: who.config_hash}))  # before resume looks
    skip = tracking.skip_finished if tracking.skip_finished is not None else job.in_sweep()
    done = tracker.runs_of_config(who.config_hash, ["FINISHED"]) if skip else []
    made_by = [provenance.code_version_of(run.data.tags) for run in done]
    chosen = provenance.reused(made_by, who.code.code_version, tracking.reuse)
    if chosen is not None:
        run = done[chosen]
        same = made_by[chosen] == who.code.code_version
        log.log(
            logging.INFO if same else logging.WARNING,
            "skipping: this config already FINISHED as run %s, made by %s (tracking.skip_finished=false runs it again)",
            run.info.run_id,
            "this code" if same else f"other code ({made_by[chosen] or 'unknown'}; tracking.reuse={tracking.reuse})",
        )
        objective = run.data.metrics.get(OBJECTIVE, math.nan)
        return Opened(tracker, run.info.run_id, Path(), skipped=True, objective=objective)
    if done:
        log.info(
            "this config FINISHED before (run %s) but by other code; training it again (tracking.reuse=any_code reuses it)",
            done[0].info.run_id,
        )
    run_id, ckpt_path = resume_point(tracker, resume, who, tracking.reuse)
    if run_id is None:
        tags = {
            **who.tags,
            CONFIG_HASH_TAG: who.config_hash,
            CONFIG_HASH_VERSION_TAG: CONFIG_HASH_VERSION,
            FIRST_EPOCH_TAG: FIRST_EPOCH,  # its epochs' MLflow steps
            STAGE_TAG: tracking.stage,
            **provenance.run_tags(who.code, who.command),
        }
        run_id = tracker.create_run(who.name, {**tags, **job.sweep_tags()}, who.params)
        record_code(tracker, run_id, who.code)
        job.label_logs(who.name)
    else:
        tracker.reopen(run_id)
        job.label_logs(tracker.client.get_run(run_id).info.run_name or run_id)
    checkpoint_dir = Path(tracking.checkpoint_dir).resolve() / run_id
    return Opened(tracker, run_id, checkpoint_dir, ckpt_path)


def record_code(tracker: Tracker, run_id: str, code: provenance.Code) -> None:
    """On a run made by modified code: the patch from its commit to that code, as the artifact ``code.diff``."""
    if code.modified:
        path = Path(job.output_dir()) / CODE_DIFF_ARTIFACT
        path.write_text(code.diff)
        tracker.log_artifact(run_id, path)


def resume_point(
    tracker: Tracker, resume: bool | str | None, who: Identity, reuse: str
) -> tuple[str | None, str | None]:
    """(run id, checkpoint) to continue, or (None, None) for a fresh run. ``resume`` is null, false, true or a path;
    ``true`` continues only a run made by code that ``reuse`` (``tracking.reuse``) accepts."""
    asked = resume is True  # said by the user, not the sweep's default: then a fresh start is worth a line
    resume = job.in_sweep() if resume is None else resume  # null: resume in sweeps (a requeued or re-run job)
    if resume is False:
        return None, None
    if resume is True:
        for run in tracker.runs_of_config(who.config_hash, ["KILLED", "FAILED"]):
            last = Path(run.data.tags.get(CHECKPOINT_TAG, "")) / "last.ckpt"
            made_by = provenance.code_version_of(run.data.tags)
            if provenance.reused([made_by], who.code.code_version, reuse) is None:
                log.info("not resuming run %s: made by other code (tracking.reuse=%s)", run.info.run_id, reuse)
            elif last.is_file():
                log.info("resuming run %s from %s", run.info.run_id, last)
                return run.info.run_id, str(last)
        log.log(
            logging.INFO if asked else logging.DEBUG,
            "resume=true: no interrupted run of this config with a checkpoint; starting a fresh run",
        )
        return None, None
    path = Path(resume).expanduser()  # validate() checked that it is a file
    run_id = Path(path).resolve().parent.name
    try:
        found = tracker.client.get_run(run_id)
    except Exception as e:
        raise ConfigError(f"resume={resume!r}: its folder name {run_id!r} is not a run of this tracking store") from e
    if found.data.tags.get(CONFIG_HASH_TAG) != who.config_hash:
        raise ConfigError(
            f"resume={resume!r}: run {run_id} was trained with another config "
            f"({CONFIG_HASH_TAG} {found.data.tags.get(CONFIG_HASH_TAG)}, this one {who.config_hash}); resume it with its own overrides"
        )
    if provenance.code_version_of(found.data.tags) != who.code.code_version:
        log.warning("resume=%s: run %s was started by other code; it continues with this code", resume, run_id)
    try:
        torch.load(path, map_location="cpu", weights_only=True)  # refuse pickled objects before reopening the run
    except Exception as e:  # truncated, not a checkpoint, or pickled objects: the run stays as it was
        raise ConfigError(
            f"resume={resume!r}: {path} cannot be read as a checkpoint ({describe(e, 200)}); run {run_id} is left "
            "as it was: point resume= at a checkpoint that is whole, or leave resume= out for a fresh run"
        ) from e
    if found.info.status == "FINISHED":  # exit 2, not 0: what was asked (more training) did not happen
        raise ConfigError(
            f"resume={resume!r}: run {run_id} already FINISHED; there is nothing to continue and it is left as it is "
            "(to train this config again, leave resume= out)"
        )
    return run_id, str(path)


# ------------------------------------------------------------------------------------ 3. fit and test


@dataclass
class Fitted:
    """What training and testing produced: the curves, the summary, and the test metrics of both checkpoints."""

    module: LossbenchModule
    history: dict[str, list[float]]
    summary: dict[str, float]
    tests: dict[str, float] = field(default_factory=dict)
    figures: Any = None


def fit_and_test(cfg: DictConfig, prepared: Prepared, opened: Opened, extra_callbacks: list | None = None) -> Fitted:
    """Train with Lightning (``trainer``, ``checkpoint``, ``early_stopping``, ``analysis`` of the config), then
    test the selected checkpoint (best ``checkpoint.monitor``) and the final weights."""
    data = prepared.data
    parts = (prepared.net, prepared.loss, prepared.optimizer, prepared.scheduler)
    if is_regression(cfg):  # scored against the clean targets (lossbench.regression)
        module = regression.RegressionModule(
            *parts,
            gradient_clip_val=cfg.trainer.gradient_clip_val,
            scale=data.target_scale,
            train_eval_clean=data.train_eval_true_labels,
        )
    else:
        module = LossbenchModule(
            *parts,
            num_classes=cfg.data.num_classes,
            gradient_clip_val=cfg.trainer.gradient_clip_val,  # applied in the module's own optimizer steps
            train_eval_true=data.train_eval_true_labels,
            confident_wrong=cfg.analysis.confident_wrong,
            margins=cfg.analysis.margins,
            probabilities=cfg.loss.get("probabilities", "softmax"),
        )
    best = pl.callbacks.ModelCheckpoint(
        dirpath=opened.checkpoint_dir, filename="best", monitor=cfg.checkpoint.monitor, mode=cfg.checkpoint.mode
    )
    # Every epoch's end, whatever the monitor did: Lightning's save_last writes last.ckpt only when "best" improved.
    last = pl.callbacks.ModelCheckpoint(
        dirpath=opened.checkpoint_dir, filename="last", monitor=None, save_top_k=1, enable_version_counter=False
    )
    logger = EpochLogger(opened.tracker, opened.run_id, opened.checkpoint_dir)
    callbacks = [logger, best, last, EpochLine(), *(extra_callbacks or [])]
    if cfg.early_stopping.enabled:
        es = cfg.early_stopping
        callbacks.append(
            pl.callbacks.EarlyStopping(monitor=es.monitor, mode=es.mode, patience=es.patience, min_delta=es.min_delta)
        )
    trainer = build_trainer(cfg, data, callbacks)
    trainer.fit(module, datamodule=data, ckpt_path=opened.ckpt_path, weights_only=True)
    history = curves(module.history)
    rule = analysis.Rule.from_config(cfg.analysis)
    summary = analysis.summarize(history, rule, cfg.checkpoint.monitor, cfg.checkpoint.mode)
    fitted = Fitted(module, history, summary, figures=start_figures(cfg, history, summary))
    # The selected checkpoint and the final weights; when the last epoch is strictly the best, its checkpoint
    # holds the final weights and one test serves both.
    (final,) = trainer.test(module, datamodule=data, verbose=False)
    selected = final
    if not (best.best_model_path and last_is_best(history.get(cfg.checkpoint.monitor, []), cfg.checkpoint.mode)):
        (selected,) = trainer.test(
            module, datamodule=data, ckpt_path=best.best_model_path or None, verbose=False, weights_only=True
        )
    renamed = {k.replace(TEST_PREFIX, TEST_LAST_PREFIX, 1): v for k, v in final.items() if k.startswith(TEST_PREFIX)}
    fitted.tests = {**selected, **renamed}  # train_eval/* margins: of the selected weights only
    if fitted.figures is not None:
        fitted.figures.add_confusion(module.test_confusion, data.class_names)  # of the test just run: the selected one
    return fitted


def build_trainer(cfg: DictConfig, data, callbacks: list) -> pl.Trainer:
    """Lightning's Trainer from ``trainer.*`` (conf/trainer), with what lossbench decides itself."""
    progress = sys.stdout.isatty() if cfg.trainer.enable_progress_bar is None else cfg.trainer.enable_progress_bar
    if progress:
        callbacks.append(MiniBatchProgressBar(-(-data.sizes["train"] // data.batch_size), data.batches_per_step))
    gpu = gpus.gpu_for_sweep_job(cfg.launch.jobs_per_gpu) if cfg.trainer.accelerator != "cpu" else None
    return instantiate(
        cfg.trainer,
        _convert_="all",
        gradient_clip_val=None,  # the module clips its own (manual) optimizer steps
        enable_progress_bar=progress,
        callbacks=callbacks,
        logger=False,
        num_sanity_val_steps=0,
        default_root_dir=job.output_dir(),
        **({} if gpu is None else {"devices": [gpu]}),  # parallel jobs on one machine take its GPUs in turn
    )


def last_is_best(values: list[float], mode: str) -> bool:
    """True when the last epoch's monitored value beats every earlier one strictly (ModelCheckpoint keeps the earlier on a tie)."""
    if not values or any(math.isnan(v) for v in values):
        return False
    last, earlier = values[-1], values[:-1]
    return all(last > v for v in earlier) if mode == "max" else all(last < v for v in earlier)


def start_figures(cfg: DictConfig, history, summary):
    """Start drawing the run's figures in the drawing process (None when ``analysis.figures`` is false)."""
    if not cfg.analysis.figures:
        return None
    title = f"{cfg.loss.name} / {cfg.optimizer.name} / {cfg.model.name} / seed {cfg.seed}"
    return run_figures.RunFigures(Path(job.output_dir()), title, history, summary, cfg.checkpoint.monitor)


# ------------------------------------------------------------------------------------------ 4. record


def record(cfg: DictConfig, opened: Opened, fitted: Fitted) -> analysis.Verdict:
    """Test metrics, the overfitting summary and verdict, the config and the figures, on the run."""
    tracker, run_id = opened.tracker, opened.run_id
    verdict = analysis.judge(fitted.history, analysis.Rule.from_config(cfg.analysis))
    results = {**fitted.tests, **fitted.summary}
    tracker.log_metrics(run_id, {k: shown(v) for k, v in results.items() if v is not None and not math.isnan(v)})
    tracker.set_tags(
        run_id,
        {
            ONSET_TAG: "none" if verdict.onset_epoch is None else verdict.onset_epoch,
            VERDICT_TAG: verdict.kind,
            VERDICT_TEXT_TAG: verdict.text,
            NOTE_TAG: run_note(cfg, fitted, verdict, tracker.experiment_id, job.sweep_tags()),
        },
    )
    record_artifacts(tracker, run_id, cfg, fitted.figures)
    return verdict


def shown(value: float) -> float:
    """A final figure as MLflow shows it: 6 significant digits (``0.8257``, not float32's ``0.8256999850273132``;
    a test set of 10,000 images resolves 4)."""
    return float(f"{value:.6g}")


def run_note(
    cfg: DictConfig, fitted: Fitted, verdict: analysis.Verdict, experiment_id: str, sweep: dict[str, str]
) -> str:
    """The run's description in MLflow (one paragraph, Markdown): what ran, test accuracy at the selected and the
    last epoch in %, the verdict, and the sweep run that compares it with the others (a link inside the UI)."""
    what = f"{cfg.loss.name} / {cfg.optimizer.name} / {cfg.model.name} / {cfg.data.name}, seed {cfg.seed}"
    selected, epochs = fitted.summary.get(SUMMARY_SELECTED_EPOCH), fitted.summary.get(SUMMARY_EPOCHS)
    acc, last = fitted.tests.get(TEST_ACC, math.nan), fitted.tests.get(TEST_LAST_ACC, math.nan)
    tested = (
        f"Test accuracy {acc * 100:.2f} % at the selected epoch {int(selected)} (highest {cfg.checkpoint.monitor})"
        if selected is not None and cfg.checkpoint.mode == "max"
        else f"Test accuracy {acc * 100:.2f} % at the selected epoch"
    ) + (f", {last * 100:.2f} % at the last epoch {int(epochs)}" if epochs is not None else "")
    parent = sweep.get(PARENT_RUN_TAG)
    where = (
        f" Compared with the other losses in [sweep-{sweep[SWEEP_TAG]}](#/experiments/{experiment_id}/runs/{parent}"
        "?workflowType=machine_learning), whose description is the report's answer."
        if parent and SWEEP_TAG in sweep
        else ""
    )
    return f"**{what}.** {tested}. Verdict: {verdict.text}.{where}"


def run_tags(opened: Opened, prepared: Prepared) -> dict[str, Any]:
    """Tags of how this attempt runs (a resumed run gets them again): its checkpoint folder, threads, device, the
    size of its test set (the finest difference the report can tell), label noise, what its seed drew."""
    data = prepared.data
    return {
        CHECKPOINT_TAG: opened.checkpoint_dir,
        THREADS_TAG: torch.get_num_threads(),
        **provenance.device_tags(prepared.device),
        TEST_SIZE_TAG: data.sizes["test"],
        SEED_DRIVES_TAG: ",".join(data.seed_drives),
        **{f"{NOISE_TAG_PREFIX}{k}": v for k, v in data.noise_report.items()},
    }


def record_artifacts(tracker: Tracker, run_id: str, cfg: DictConfig, figures) -> None:
    """The resolved config, the Hydra overrides and (once drawn) the figures, as run artifacts."""
    out = Path(job.output_dir())
    (out / "config.resolved.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(redact_tree(resolved(cfg)))))
    tracker.log_artifact(run_id, out / "config.resolved.yaml")
    if HydraConfig.initialized():  # the command line, with secrets hidden like every param
        overrides = [redact_override(o) for o in HydraConfig.get().overrides.task]
        (out / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
        tracker.log_artifact(run_id, out / "overrides.yaml")
    if figures is not None:
        figures.record(tracker, run_id)  # in a sweep worker, after this job has returned (lossbench.run_figures)
