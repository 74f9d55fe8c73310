"""The claims, the protocols that test them, and how each protocol's sweep is launched.

A protocol is an ordinary experiment (``conf/experiment/claim_*.yaml``); ``python -m lossbench.claims`` launches it
exactly as a person would, ``python -m lossbench.train -m +experiment=claim_X <overrides>``, so a re-run skips the
jobs that FINISHED and the sweep's own report lands on its parent run. ``--quick`` is not another code path: it is
:attr:`Protocol.quick`, Hydra overrides put before the user's own (a key given twice: the user's wins).
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from lossbench import job
from lossbench.paths import compose, conf_dir


@dataclass(frozen=True)
class Protocol:
    """One experiment that gives evidence for some claims."""

    name: str
    """The experiment: ``conf/experiment/<name>.yaml``."""
    quick: tuple[str, ...]
    """``--quick``'s Hydra overrides: the pilot (fewer epochs, images and models; three seeds, the fewest a paired
    test reads, so that the pilot's spread sizes the full protocols' seeds), minutes on 2 CPU cores."""
    tunes: bool = False
    """A tuning protocol: run before the others, its runs choose their learning rates (:func:`tuned_overrides`)."""


_QUICK_COMMON = ("seed=0,1,2", "trainer.max_epochs=6", "data.train_size=3000", "data.train_eval_size=2000")
_QUICK_TUNING = ("model=linear", "optimizer.lr=1.0e-3,3.0e-3", *_QUICK_COMMON[1:])
PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("claim_tuning", _QUICK_TUNING, tunes=True),
        Protocol("claim_tuning_binary", _QUICK_TUNING, tunes=True),
        Protocol("claim_binary", ("model=linear", *_QUICK_COMMON)),
        Protocol("claim_margin", ("optimizer.weight_decay=1.0e-4,1.0e-3", *_QUICK_COMMON)),
        Protocol("claim_losses", ("model=linear", *_QUICK_COMMON)),
        Protocol("claim_outliers", _QUICK_COMMON),
        Protocol("claim_label_noise", _QUICK_COMMON),
        Protocol(
            "claim_overfitting",
            (*_QUICK_COMMON[:1], "trainer.max_epochs=10", "data.train_size=2000", "data.train_eval_size=2000"),
        ),
    )
}
"""Every protocol, in the order they run: equal tuning first, then the short ones (a broken setup shows within
minutes)."""


@functools.cache
def written() -> Mapping[str, Any]:
    """The claims' predictions, controls and claim 6's detector as conf/claims.yaml writes them, before any run."""
    return OmegaConf.to_container(OmegaConf.load(conf_dir() / "claims.yaml"))


def tuned_overrides(rows: Sequence[Mapping[str, Any]], score: str) -> list[str]:
    """The tuning runs' choice, as the overrides every other protocol's ``optimizer.lr`` reads: for each loss x model
    x number of classes, the learning rate with the highest mean ``score`` (best validation accuracy) over its seeds
    (ties: the smaller rate). ``++tuned.lr.<loss>_<model>_<classes>=<lr>``, sorted."""
    scores: dict[tuple[str, str, Any], dict[float, list[float]]] = {}
    for r in rows:
        if math.isfinite(r.get(score, math.nan)) and math.isfinite(r.get("lr", math.nan)):
            scores.setdefault((r["loss"], r["model"], r["classes"]), {}).setdefault(r["lr"], []).append(r[score])
    chosen = {key: max(by_lr, key=lambda lr: (sum(by_lr[lr]) / len(by_lr[lr]), -lr)) for key, by_lr in scores.items()}
    return [f"++tuned.lr.{loss}_{model}_{classes}={lr:g}" for (loss, model, classes), lr in sorted(chosen.items())]


@dataclass(frozen=True)
class Claim:
    """One rule of thumb as a tutorial states it, and what lossbench measures to test it."""

    number: int
    statement: str
    protocols: tuple[str, ...]
    measured: str
    """What is measured, in words (the metric names are those a run records: lossbench.names)."""


CLAIMS: tuple[Claim, ...] = (
    Claim(
        1,
        "MSE is sensitive to outliers; MAE is more robust to noise and outliers.",
        ("claim_outliers",),
        "on a regression task (predict the angle each image was rotated by, one output; lossbench.regression), how "
        "much each loss's error against the clean test targets (RMSE in degrees, at the epoch with the lowest clean "
        "validation RMSE) rises when 30 % of the training targets are replaced by gross outliers (a uniformly random "
        "angle in ±180°); MSE's rise against MAE's and Huber's, seed by seed",
    ),
    Claim(
        2,
        "MAE may converge more slowly; MSE gives smoother gradients.",
        ("claim_losses",),
        "epochs until validation accuracy first reaches the target (`analysis.target_acc`); a run that never reaches "
        "it is censored, kept and ranked last (+inf), never dropped; MAE against MSE on each model by a Mann-Whitney U "
        "test. The smoothness of gradients is not measured: the verdict is on convergence",
    ),
    Claim(
        3,
        "Cross-entropy penalises confident wrong predictions heavily.",
        ("claim_losses",),
        "on test images predicted wrong with a confidence of at least 0.9: the loss they receive and the norm of its "
        "gradient with respect to the logits, each relative to the average test image (1 = treated like any image; "
        "scale-free, so losses compare); CE against MSE and MAE",
    ),
    Claim(
        4,
        "Hinge loss encourages correct classification with a margin.",
        ("claim_margin",),
        "the SVM's claim: under an L2 penalty (optimizer.weight_decay swept, the SVM's C), the median distance from a "
        "training image to the nearest decision boundary over all classes, in input space (the test images' beside "
        "it), on the linear model; hinge against CE and MSE at each penalty",
    ),
    Claim(
        5,
        "For probabilistic outputs, cross-entropy is preferred (softmax pairs with categorical CE).",
        ("claim_losses",),
        "the test NLL of the probabilities each loss trains (BCE's sigmoids, the softmax for the others; hinge trains "
        "none and is shown on the softmax), at the selected epoch; its ECE (15 bins) and both after temperature "
        "scaling beside it (scaling separates calibration from ranking); MSE, MAE and BCE against CE",
    ),
    Claim(
        6,
        "Watch validation loss: if it rises while training loss falls, the model is overfitting.",
        ("claim_overfitting",),
        "per run, the claim's rule read on the loss's own `val/loss` against `train_eval/loss` "
        "(summary/loss_has_onset), against overfitting defined on accuracy (validation accuracy worse than its best "
        "while the training data's improves); per loss, its sensitivity and specificity with Wilson intervals, from a "
        "design with overfitting and non-overfitting runs for every loss",
    ),
    Claim(
        7,
        "BCE is for binary problems, categorical CE for multi-class ones.",
        ("claim_binary", "claim_losses"),
        "test accuracy at the selected epoch. On two classes (T-shirt/top against Shirt, claim_binary), one sigmoid "
        "logit (bce_single) and a softmax over two logits (ce) are the same model: theory predicts a tie, decided by "
        "equivalence within a margin. On ten (claim_losses), CE against BCE's ten one-vs-rest sigmoids: CE ahead",
    ),
    Claim(
        8,
        "MAE on the softmax probabilities is robust to flipped labels; cross-entropy is not (Ghosh et al., 2017).",
        ("claim_label_noise",),
        "claim 1's classification form: how many points of test accuracy each loss loses at the last epoch (the model "
        "it trains to) when 40 % of the training labels are flipped (symmetric), against its clean run of the same "
        "seed, on the MLP; MAE's loss against CE's",
    ),
)


# ------------------------------------------------------------------------------------ overrides


_MACHINE_PATH = re.compile(r"^(~|/|[A-Za-z]:[\\/]|\w+:////|file:///)")


def portable(override: str) -> str:
    """An override as a page or a printed command shows it: a value that is a path on this machine (``/data``,
    ``sqlite:////home/me/mlflow.db``) becomes ``<key>``, for the reader to fill in; the rest as given."""
    key, sep, value = override.partition("=")
    return f"{key}=<{key.lstrip('+~')}>" if sep and _MACHINE_PATH.match(value) else override


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """``(plain overrides, {key: its values})``: ``seed=0,1`` and ``seed=range(0,5)`` sweep; ``data.root=/x`` is plain.
    Every key the command line sets is in the dict, so that it replaces a sweeper param of that key (as Hydra's
    sweeper does: ``model=linear`` after the experiment's ``model: linear,mlp`` sweeps the linear model only)."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    plain, given = [], {}
    for text, override in zip(overrides, parsed):
        if override.is_sweep_override():
            given[override.get_key_element()] = list(override.sweep_string_iterator())
        else:
            plain.append(text)
            given[override.get_key_element()] = [override.get_value_element_as_str()]
    return plain, given


def swept_values(key: str, text: str) -> list[str]:
    """The values of one of an experiment's sweeper params (``0,1,2``, ``range(3)``), as Hydra's sweeper reads them."""
    (override,) = OverridesParser.create().parse_overrides([f"{key}={text}"])
    return list(override.sweep_string_iterator()) if override.is_sweep_override() else [str(text)]


def arguments(protocol: Protocol, overrides: Sequence[str], quick: bool) -> list[str]:
    """The protocol's Hydra arguments: the experiment, ``--quick``'s overrides, then the user's (the last wins)."""
    return [f"+experiment={protocol.name}", *(protocol.quick if quick else ()), *overrides]


@dataclass(frozen=True)
class Design:
    """What a protocol runs, as its composed config says: the grid swept, and what every job shares."""

    protocol: str
    grid: dict[str, list[str]]
    """Swept key -> its values (the experiment's sweeper params, then the command line's sweeps)."""
    fixed: dict[str, object]
    """What every job shares, in words a reader needs (data, sizes, epochs, optimizer, ...)."""
    tracking_uri: str
    experiment: str

    @property
    def jobs(self) -> int:
        return len(list(itertools.product(*self.grid.values()))) if self.grid else 1


def design(protocol: Protocol, overrides: Sequence[str], quick: bool) -> Design:
    """Compose the protocol as its sweep will (fails in seconds on an override Hydra cannot compose)."""
    plain, given = split_overrides(arguments(protocol, overrides, quick))
    cfg = compose(*plain, hydra_config=True)
    params = {str(k): swept_values(str(k), str(v)) for k, v in (cfg.hydra.sweeper.params or {}).items()}
    grid = {**params, **{k: v for k, v in given.items() if k in params or len(v) > 1}}
    data = cfg.data
    fixed = {
        "data": data.name if data.classes is None else f"{data.name}, classes {list(data.classes)} relabelled",
        "training images": data.train_size if data.train_size is not None else "all",
        "validation images": data.val_size,
        "epochs": cfg.trainer.max_epochs,
        "optimizer": f"{cfg.optimizer.name}, lr "
        + (
            "tuned per loss and model (claim_tuning)"
            if OmegaConf.is_interpolation(cfg.optimizer, "lr")
            else str(cfg.optimizer.lr)
        ),
        "batch size": data.batch_size,
    }
    fixed["a seed redraws"] = (
        "the validation split, training subset, label- and input-noise draws, initial weights and batch order"
        if data.get("redraw")
        else "the initial weights and batch order (split, subset and noise draws fixed)"
    )
    if "model" not in grid:
        fixed["model"] = cfg.model.name
    if cfg.analysis.target_acc is not None:
        fixed["target validation accuracy"] = cfg.analysis.target_acc
    for kind in ("label_noise", "input_noise"):
        if f"data.{kind}.rate" in grid or data[kind].rate:
            fixed[kind.replace("_", " ")] = data[kind].kind
    if data.get("task") == "regression":  # claim 1 (lossbench.regression)
        fixed["task"] = f"regression: each image's rotation angle, uniform in ±{data.rotation.degrees}°"
        fixed["outlier targets"] = f"{data.outliers.kind} in ±{data.outliers.degrees}°, training targets only"
    return Design(protocol.name, grid, fixed, str(cfg.tracking.uri), str(cfg.tracking.experiment))


# ------------------------------------------------------------------------------------ launching


def sweep_command(protocol: Protocol, overrides: Sequence[str], quick: bool, sweep_dir: Path) -> list[str]:
    """``python -m lossbench.train -m +experiment=<protocol> ...``, its jobs' folders under ``sweep_dir``."""
    return [
        sys.executable,
        "-m",
        "lossbench.train",
        "-m",
        *arguments(protocol, overrides, quick),
        f"hydra.sweep.dir={sweep_dir}",
    ]


@dataclass(frozen=True)
class Launched:
    """How one protocol's sweep went: its exit status, its jobs' outcomes, its wall time and its log."""

    protocol: str
    command: list[str]
    returncode: int
    outcomes: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    log: Path | None = None

    def counts(self) -> Mapping[str, int]:
        return {status: sum(o["status"] == status for o in self.outcomes) for status in job.OUTCOMES}


def launch(protocol: Protocol, overrides: Sequence[str], quick: bool, sweep_dir: Path) -> Launched:
    """Run the protocol's sweep to its end (its output to ``<sweep_dir>.log``); a failed job does not stop it."""
    for stale in sweep_dir.glob(f"*/{job.OUTCOME_FILE}"):  # a grid that shrank since: its old jobs are not this one's
        stale.unlink()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    command = sweep_command(protocol, overrides, quick, sweep_dir)
    log_path = sweep_dir.with_suffix(".log")
    started = time.monotonic()
    with open(log_path, "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    outcomes = job.read_outcomes(sweep_dir)
    return Launched(protocol.name, command, done.returncode, outcomes, time.monotonic() - started, log_path)
