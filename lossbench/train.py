"""python -m lossbench.train loss=mae — one run: compose -> build -> fit -> test -> record.

Reads top to bottom: check the config, load the data, build the model and loss, open the MLflow
run, train with Lightning, test the best and the last weights, record curves, summary and figures.
Everything that can be wrong with the input fails before a run is created.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import tempfile
import uuid
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lossbench.config import (
    CONFIG_HASH_VERSION,
    ConfigError,
    LossbenchError,
    chosen_scheduler,
    config_hash,
    flatten,
    redact_override,
    redact_tree,
    resolved,
    validate,
    without_name,
)
from lossbench.paths import conf_dir
from lossbench.process import import_heavy  # before torch/Lightning/MLflow: its exit handler runs after theirs

log = logging.getLogger("lossbench")
OBJECTIVE = "val/acc"  # what a sweep's job returns (Hydra sweepers optimise it)
# What a job imports beyond Hydra (with its store's modules: job_modules), once per process, by import_heavy
# (the collector paused); a sweep worker does it before its first job (lossbench.workers).
JOB_MODULES = (
    "torch",
    "pytorch_lightning",
    "lossbench.callbacks",
    "lossbench.console",
    "lossbench.data",
    "lossbench.losses",
    "lossbench.module",
    "lossbench.preflight",
    "lossbench.store",
)


def job_modules(tracking_uri: str) -> tuple[str, ...]:
    """:data:`JOB_MODULES` and the MLflow store module that a client of ``tracking_uri`` imports on connecting
    (SQLAlchemy's for a database, ~1.5 s of imports; the REST client's for a server)."""
    remote = str(tracking_uri).startswith(("http://", "https://"))
    return (*JOB_MODULES, "mlflow.store.tracking." + ("rest_store" if remote else "sqlalchemy_store"))


def run(cfg: DictConfig, extra_callbacks: list | None = None) -> float:
    """Train and record one configuration; return the last epoch's validation accuracy.

    ``extra_callbacks``: your own Lightning callbacks, added to the trainer after lossbench's (e.g. to
    time epochs or inspect the optimizer; see benchmarks/ for examples).
    """
    # 1. Check everything before anything is recorded; config errors answer before the heavy imports.
    validate(cfg)
    import_heavy(*job_modules(cfg.tracking.uri))
    import pytorch_lightning as pl
    import torch

    from lossbench import analysis, gpus, preflight, store_links, sweep
    from lossbench.callbacks import EpochLogger
    from lossbench.console import EpochLine, MiniBatchProgressBar
    from lossbench.losses import build_loss
    from lossbench.module import LossbenchModule, curves
    from lossbench.optim import check_fused
    from lossbench.store import CHECKPOINT_TAG, Tracker

    quiet_libraries()
    # Lightning makes torch's CUDA check go through NVML so that forked DataLoader workers stay safe.
    # lossbench forks no workers, and through NVML every optimizer step pays ~50 us to ask for CUDA.
    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
    torch.set_num_threads(cfg.threads or sweep.threads_per_job())
    check_fused(cfg.optimizer)
    if cfg.analysis.figures:  # started now, the drawing process imports matplotlib while the model trains
        from lossbench import run_figures

        run_figures.drawer()
    data = built("data", lambda: instantiate(cfg.data, shuffle_seed=cfg.seed))  # conf/data: lossbench.data.MNISTFamily
    splits = data.load()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    net = built("model", lambda: instantiate(cfg.model.net))
    loss = built("loss", lambda: build_loss(cfg.loss, cfg.data.num_classes))
    optimizer = built("optimizer", lambda: instantiate(without_name(cfg.optimizer)))
    scheduler_cfg = chosen_scheduler(cfg)
    scheduler = None if scheduler_cfg is None else built("scheduler", lambda: instantiate(without_name(scheduler_cfg)))
    probe = built("optimizer", lambda: optimizer([torch.nn.Parameter(torch.zeros(1))]))  # bad keywords fail now
    if scheduler is not None:
        built("scheduler", lambda: scheduler(probe))
    device = preflight.training_device(cfg.trainer)
    batch = slice(0, cfg.data.batch_size)  # one training batch through model and loss, on the training device
    preflight.check_one_batch(net, loss, splits.train_x[batch], splits.train_y[batch], cfg, device)
    tracker = Tracker.connect(cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.timeout_s)

    # 2. Skip, resume, or start a run of this exact config.
    identity = config_hash(cfg)
    tracker.fail_stale_runs(identity)
    skip = cfg.tracking.skip_finished if cfg.tracking.skip_finished is not None else sweep.in_sweep()
    if skip and (done := tracker.runs_of_config(identity, ["FINISHED"])):
        log.info(
            "skipping: this config already FINISHED as run %s (tracking.skip_finished=false runs it again)",
            done[0].info.run_id,
        )
        sweep.record_outcome("skipped", done[0].info.run_id, done[0].data.metrics.get(OBJECTIVE))
        return done[0].data.metrics.get(OBJECTIVE, math.nan)
    run_id, ckpt_path = resume_point(cfg, tracker, identity)
    if run_id is None:
        name = (
            cfg.tracking.run_name
            or f"{cfg.loss.name}-{cfg.optimizer.name}-{cfg.model.name}-s{cfg.seed}-{uuid.uuid4().hex[:6]}"
        )
        tags = {
            "loss": cfg.loss.name,
            "optimizer": cfg.optimizer.name,
            "model": cfg.model.name,
            "data": cfg.data.name,
            "scheduler": "none" if scheduler_cfg is None else scheduler_cfg.name,
            "seed": cfg.seed,
            "config_hash": identity,
            "config_hash_version": CONFIG_HASH_VERSION,
            **sweep.tags(),
        }
        run_id = tracker.create_run(name, tags, dict(flatten(resolved(cfg))))
    else:
        tracker.reopen(run_id)
    checkpoint_dir = Path(cfg.tracking.checkpoint_dir).resolve() / run_id
    tracker.set_tags(
        run_id,
        {
            CHECKPOINT_TAG: checkpoint_dir,
            "threads": torch.get_num_threads(),
            **{f"noise.{k}": v for k, v in data.noise_report.items()},
        },
    )

    # 3. Train. The run ends FINISHED, FAILED (with the reason) or KILLED, whatever happens.
    with recorded(tracker, run_id):
        module = LossbenchModule(
            net,
            loss,
            optimizer,
            scheduler,
            num_classes=cfg.data.num_classes,
            gradient_clip_val=cfg.trainer.gradient_clip_val,  # applied in the module's own optimizer steps
            train_eval_true=data.train_eval_true_labels,
        )
        best = pl.callbacks.ModelCheckpoint(
            dirpath=checkpoint_dir, filename="best", monitor=cfg.checkpoint.monitor, mode=cfg.checkpoint.mode
        )
        # Every epoch's end, whatever the monitor did: Lightning's save_last writes last.ckpt only when "best" improved.
        last = pl.callbacks.ModelCheckpoint(
            dirpath=checkpoint_dir, filename="last", monitor=None, save_top_k=1, enable_version_counter=False
        )
        callbacks = [EpochLogger(tracker, run_id, checkpoint_dir), best, last, EpochLine(), *(extra_callbacks or [])]
        if cfg.early_stopping.enabled:
            es = cfg.early_stopping
            callbacks.append(
                pl.callbacks.EarlyStopping(
                    monitor=es.monitor, mode=es.mode, patience=es.patience, min_delta=es.min_delta
                )
            )
        progress = sys.stdout.isatty() if cfg.trainer.enable_progress_bar is None else cfg.trainer.enable_progress_bar
        if progress:
            callbacks.append(MiniBatchProgressBar(-(-data.sizes["train"] // data.batch_size), data.batches_per_step))
        gpu = gpus.gpu_for_sweep_job(cfg.launch.jobs_per_gpu) if cfg.trainer.accelerator != "cpu" else None
        trainer = instantiate(  # conf/trainer: pytorch_lightning.Trainer, with what lossbench decides itself
            cfg.trainer,
            _convert_="all",
            gradient_clip_val=None,  # the module clips its own (manual) optimizer steps
            enable_progress_bar=progress,
            callbacks=callbacks,
            logger=False,
            num_sanity_val_steps=0,
            default_root_dir=output_dir(),
            **({} if gpu is None else {"devices": [gpu]}),  # parallel jobs on one machine take its GPUs in turn
        )
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
        history = curves(module.history)
        rule = analysis.Rule.from_config(cfg.analysis)
        summary = analysis.summarize(history, rule, cfg.checkpoint.monitor, cfg.checkpoint.mode)
        figures = start_figures(cfg, history, summary)  # drawn in the background while the run finishes

        # 4. Test the selected checkpoint (checkpoint.monitor; validation accuracy by default) and the final weights;
        #    when the last epoch is strictly the best, its checkpoint holds the final weights and one test serves both.
        if best.best_model_path and last_is_best(history.get(cfg.checkpoint.monitor, []), cfg.checkpoint.mode):
            (final,) = trainer.test(module, datamodule=data, verbose=False)
            selected = final
        else:
            (final,) = trainer.test(module, datamodule=data, verbose=False)
            (selected,) = trainer.test(
                module, datamodule=data, ckpt_path=best.best_model_path or None, verbose=False, weights_only=True
            )
        tests = {**selected, **{k.replace("test/", "test_last/", 1): v for k, v in final.items()}}
        if figures is not None:
            figures.add_confusion(module.test_confusion, data.class_names)  # the test just run: the selected checkpoint

        # 5. Record what the run means: test metrics, overfitting summary, config, figures.
        verdict = analysis.judge(history, rule)
        results = {**tests, **summary}
        tracker.log_metrics(run_id, {k: v for k, v in results.items() if v is not None and not math.isnan(v)})
        tracker.set_tags(
            run_id,
            {
                "onset_epoch": "none" if verdict.onset_epoch is None else verdict.onset_epoch,
                "verdict": verdict.kind,
                "verdict_text": verdict.text,
            },
        )
        record_artifacts(tracker, run_id, cfg, figures)
    objective = history[OBJECTIVE][-1] if history.get(OBJECTIVE) else math.nan
    sweep.record_outcome("finished", run_id, objective)
    log.info(
        "run %s finished: test/acc %.4f (epoch %d, best %s), %.4f (last epoch); %s",
        run_id,
        results["test/acc"],
        summary.get("summary/selected_epoch", -1),
        cfg.checkpoint.monitor,
        results["test_last/acc"],
        verdict.text,
    )
    for line in store_links.look_lines(tracker.uri, store_links.run_url(tracker.uri, tracker.experiment_id, run_id)):
        log.info(line)
    return objective


def last_is_best(values: list[float], mode: str) -> bool:
    """True when the last epoch's monitored value beats every earlier one strictly (ModelCheckpoint keeps the earlier on a tie)."""
    if not values or any(math.isnan(v) for v in values):
        return False
    last, earlier = values[-1], values[:-1]
    return all(last > v for v in earlier) if mode == "max" else all(last < v for v in earlier)


def built(group: str, build):
    """Build one piece of the config; a failure becomes a one-line ConfigError naming its group."""
    try:
        return build()
    except LossbenchError:
        raise
    except Exception as e:
        cause = e.__cause__ or e  # Hydra wraps the constructor's own error
        message = " ".join(str(cause).split())[:400]
        raise ConfigError(f"{group}: cannot be built from its config: {type(cause).__name__}: {message}") from e


def resume_point(cfg: DictConfig, tracker, identity: str) -> tuple[str | None, str | None]:
    """(run id, checkpoint) to continue, or (None, None) for a fresh run. ``resume`` is null, false, true or a path."""
    import torch

    from lossbench.store import CHECKPOINT_TAG
    from lossbench.sweep import in_sweep as sweep_job

    resume = sweep_job() if cfg.resume is None else cfg.resume  # null: resume in sweeps (a requeued or re-run job)
    if resume is False:
        return None, None
    if resume is True:
        for run in tracker.runs_of_config(identity, ["KILLED", "FAILED"]):
            last = Path(run.data.tags.get(CHECKPOINT_TAG, "")) / "last.ckpt"
            if last.is_file():
                log.info("resuming run %s from %s", run.info.run_id, last)
                return run.info.run_id, str(last)
        log.info("resume=true: no interrupted run of this config with a checkpoint; starting a fresh run")
        return None, None
    path = Path(cfg.resume).expanduser()  # validate() checked that it is a file
    run_id = Path(path).resolve().parent.name
    try:
        found = tracker.client.get_run(run_id)
    except Exception as e:
        raise ConfigError(
            f"resume={cfg.resume!r}: its folder name {run_id!r} is not a run of this tracking store"
        ) from e
    if found.data.tags.get("config_hash") != identity:
        raise ConfigError(
            f"resume={cfg.resume!r}: run {run_id} was trained with another config "
            f"(config_hash {found.data.tags.get('config_hash')}, this one {identity}); resume it with its own overrides"
        )
    torch.load(path, map_location="cpu", weights_only=True)  # refuse pickled objects before reopening the run
    return run_id, str(path)


class recorded:
    """Context manager: end the MLflow run FINISHED, KILLED (SIGINT/SIGTERM) or FAILED (with the reason)."""

    def __init__(self, tracker, run_id: str):
        self.tracker, self.run_id = tracker, run_id

    def __enter__(self):
        self._previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        return self

    def __exit__(self, kind, error, tb) -> bool:
        signal.signal(signal.SIGTERM, self._previous)
        if error is None:
            status, reason = "FINISHED", None
        elif isinstance(error, KeyboardInterrupt) or (isinstance(error, SystemExit) and _interrupted(error)):
            cause = error if isinstance(error, KeyboardInterrupt) else error.__context__
            status, reason = "KILLED", f"interrupted ({str(cause or '') or 'SIGINT'}); continue it with resume=true"
            from lossbench import sweep

            sweep.record_outcome("killed", self.run_id, None, reason)
        else:
            first = str(error).strip().splitlines()[0] if str(error).strip() else "no message"
            status, reason = "FAILED", f"{type(error).__name__}: {first}"
        try:
            self.tracker.end(self.run_id, status, reason)
        except Exception as e:  # the store itself may be what failed: never hide the original error
            log.error("could not mark run %s %s in %s: %s", self.run_id, status, self.tracker.uri, e)
            if error is None:
                raise
        return False


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"{signal.Signals(signum).name}: cancelled, preempted or stopped")


def _interrupted(error: SystemExit) -> bool:
    """Lightning turns Ctrl-C into sys.exit(1) after its own clean-up; its context is the KeyboardInterrupt."""
    return isinstance(error.__context__, KeyboardInterrupt) or type(error).__name__ == "SIGTERMException"


def quiet_libraries() -> None:
    """Lightning's start-up banners and a deprecation warning it triggers itself say nothing about the run."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def output_dir() -> str:
    return HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else tempfile.mkdtemp(prefix="lossbench-")


def start_figures(cfg: DictConfig, history, summary):
    """Start drawing the run's figures in the drawing process (None when ``analysis.figures`` is false)."""
    if not cfg.analysis.figures:
        return None
    from lossbench.run_figures import RunFigures

    title = f"{cfg.loss.name} / {cfg.optimizer.name} / {cfg.model.name} / seed {cfg.seed}"
    return RunFigures(Path(output_dir()), title, history, summary, cfg.checkpoint.monitor)


def record_artifacts(tracker, run_id: str, cfg: DictConfig, figures) -> None:
    """The resolved config, the Hydra overrides and (once drawn) the figures, as run artifacts."""
    out = Path(output_dir())
    (out / "config.resolved.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(redact_tree(resolved(cfg)))))
    tracker.log_artifact(run_id, out / "config.resolved.yaml")
    if HydraConfig.initialized():  # the command line, with secrets hidden like every param
        overrides = [redact_override(o) for o in HydraConfig.get().overrides.task]
        (out / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(overrides)))
        tracker.log_artifact(run_id, out / "overrides.yaml")
    if figures is not None:
        figures.record(tracker, run_id)  # in a sweep worker, after this job has returned (lossbench.run_figures)


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def main(cfg: DictConfig) -> float:
    """Bad input exits 2 and a failed run exits 1, each with one line; a sweep records the job as failed and goes on."""
    from lossbench import gpus, sweep

    try:
        return run(cfg)
    except LossbenchError as e:
        message, code = str(e), e.exit_code
    except Exception as e:  # not the user's input (a full disk, a store that went away): the traceback goes to the log
        text = " ".join(str(e).split())[:300] or "no message"
        message, code = f"{type(e).__name__}: {text} ({save_traceback(e)})", 1
    finally:
        gpus.release()  # a joblib worker's GPU slot, free for the next job
    if sweep.in_sweep():  # one bad job must not stop the sweep
        log.error("job failed: %s", message)
        sweep.record_outcome("failed", None, None, message)
        return math.nan
    print(f"lossbench: error: {message}", file=sys.stderr)
    sys.exit(code)


def save_traceback(error: BaseException) -> str:
    """Append ``error``'s traceback to the job's log file (Hydra's, else one in the output folder); say where it went."""
    record = log.makeRecord(
        log.name, logging.ERROR, __file__, 0, "run failed", None, (type(error), error, error.__traceback__)
    )
    hydra_log = next((h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)), None)
    path = Path(hydra_log.baseFilename) if hydra_log else Path(output_dir()) / "lossbench_error.log"
    formatter = (
        hydra_log.formatter
        if hydra_log and hydra_log.formatter
        else logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    )
    try:
        if hydra_log:
            hydra_log.flush()
        with open(path, "a") as f:
            f.write(formatter.format(record) + "\n")
    except OSError as e:  # the disk that filled up may hold the log too
        return f"full traceback not saved: {path}: {e.strerror}"
    return f"full traceback in {path}"


if __name__ == "__main__":
    main()
