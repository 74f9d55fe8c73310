"""Everything about a composed config that is not training: validation, flattening, identity.

``validate`` runs before anything is loaded or recorded, so bad input fails in a second with a
message that names the key and says what it accepts.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lossbench import folders
from lossbench.errors import ConfigError, first_line
from lossbench.names import MONITORABLE, REGRESSION_MONITORABLE

# Keys that say where or how a run is recorded, executed or judged, not what is trained: two configs
# that differ only here are the same experiment (the same config hash; the report groups them together).
# The data's and the trainer's _target_ name the code that builds them (like lossbench's own version), and so
# does the data source's (which reader, e.g. IdxFiles: the class it reads with, data.source.dataset, stays); the
# data and the training they build are in the other keys. (optimizer/scheduler/model.net _target_ name
# what is trained: those stay in the identity.) data.batches_per_step only groups the same mini-batches and
# optimizer steps into fewer Lightning steps (tests/test_train.py: every evaluation bit-identical); data.hold
# only says whether a split waits on the device normalised or as uint8 pixels, normalised per batch by the same
# formula (tests/test_data.py: the same numbers, bit for bit). loss.probabilities only says which probabilities
# score the run (test/own_*), not what it trains.
OPERATIONAL_KEYS = (
    "tracking",
    "tuned",  # the claims' tuned-rate table (conf/experiment/claim_*.yaml): optimizer.lr, which reads it, is hashed
    "report",
    "resume",
    "threads",
    "launch",
    "optimizer.fused",
    "analysis",
    "loss.probabilities",
    "hydra",
    "data._target_",
    "data.source._target_",
    "data.hold",
    "data.root",
    "data.download",
    "data.batches_per_step",
    "trainer._target_",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
)
CONFIG_HASH_VERSION = "6"
"""Tagged on every run as ``config_hash_version``; runs are matched (skipped, resumed) by ``config_hash`` alone.
Version 1 also hashed ``analysis.*``, ``trainer.accelerator`` and ``trainer.devices``: none of its runs match.
Version 2 hashed "no scheduler" as ``scheduler.name=none``, version 3 as ``scheduler: null``: its runs without a
scheduler do not match; its runs with one (cosine, step, plateau) keep their hash and still match. Version 4 no
longer hashes ``data.batches_per_step`` (operational: how many mini-batches one Lightning step carries): no
version-3 run matches. Version 5: a data set is its YAML (its source, shape, class names, per-channel mean and
std as lists, noise map, augmentation) and a model takes ``in_shape`` from it: no version-4 run matches. Version 6:
every data set has ``data.input_noise`` (corrupted training images) and ``data.classes`` (a subset of its classes):
no version-5 run matches."""


HASHED_WHEN_SET: dict[str, Any] = {"data.redraw": False, "analysis.confident_wrong": False, "analysis.margins": False}
"""Keys in the identity only when they differ from the value here, their default: a run recorded before the key
existed keeps its hash (no new :data:`CONFIG_HASH_VERSION`). ``data.redraw=true`` draws other data (the seed draws
the split and the noise); the two ``analysis`` keys (operational otherwise) make a run record measurements a run
without them lacks, so a sweep that asks for them never reuses a run that has none."""


def is_operational(key: str) -> bool:
    """True when a dotted config key (or param name) is one of :data:`OPERATIONAL_KEYS` or below one."""
    return any(key == k or key.startswith(k + ".") for k in OPERATIONAL_KEYS)


# A key is secret when one of its words (split on _ and -) is one of these: api_key, db-password, token.
_SECRET_WORDS = {"password", "passwd", "pass", "pwd", "token", "secret", "key", "credential", "credentials", "apikey"}
_URI_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<user>[^:/@\s]+):(?P<password>[^@/\s]+)@", re.I)


_MISSING = object()

# Choices that config validation and the code that uses them share (one list each; torch-free here).
NOISE_KINDS: tuple[str, ...] = ("symmetric", "asymmetric")
INPUT_NOISE_KINDS: tuple[str, ...] = ("uniform", "gaussian")
HOLDS: tuple[str, ...] = ("float32", "uint8")
LOSS_INPUTS: tuple[str, ...] = ("logits", "softmax", "sigmoid", "log_softmax")
LOSS_TARGETS: tuple[str, ...] = ("index", "onehot", "signed")
TASKS: tuple[str, ...] = ("classification", "regression")
"""``data.task``: what a run's model predicts. Absent (every data set's YAML): classification. ``regression``
(lossbench.regression: predict each image's rotation angle) is set by conf/experiment/claim_outliers.yaml."""
REGRESSION_DATA = "lossbench.regression.RotatedImages"
REGRESSION_CRITERIA: tuple[str, ...] = (
    "torch.nn.MSELoss",
    "torch.nn.L1Loss",
    "torch.nn.HuberLoss",
    "torch.nn.SmoothL1Loss",
)
OUTLIER_KINDS: tuple[str, ...] = ("uniform", "offset")
LOSS_PROBABILITIES: tuple[str, ...] = ("softmax", "sigmoid")
"""``loss.probabilities``: the distribution a loss trains, what scores it as ``test/own_*`` (lossbench.metrics)."""
SAME_CODE, ANY_CODE = "same_code", "any_code"
REUSE_POLICIES: tuple[str, ...] = (SAME_CODE, ANY_CODE)
"""``tracking.reuse``: which FINISHED run of the same config makes a job unnecessary (lossbench.provenance.reused)."""


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    """A finite real number (not a bool): inf and NaN are never a usable hyper-parameter."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _positive_int(v: Any) -> bool:
    return _is_int(v) and v > 0


def _probability(v: Any) -> bool:
    return _is_number(v) and 0 <= v < 1


def _betas(v: Any) -> bool:
    return (OmegaConf.is_list(v) or isinstance(v, (list, tuple))) and len(v) == 2 and all(_probability(b) for b in v)


def _widths(v: Any) -> bool:
    """Layer widths: a whole number >= 1, or a list of them (an MLP's hidden layers, a CNN's channels)."""
    if OmegaConf.is_list(v) or isinstance(v, (list, tuple)):
        return all(_positive_int(w) for w in v)
    return _positive_int(v)


def _is_list(v: Any) -> bool:
    return OmegaConf.is_list(v) or isinstance(v, (list, tuple))


def _numbers(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """A number that passes ``check``, or a non-empty list of them (one per channel)."""
    return lambda v: (_is_list(v) and len(v) > 0 and all(check(x) for x in v)) or (not _is_list(v) and check(v))


def _pairs(v: Any) -> bool:
    """null, or a list of [source, target] class pairs (integers >= 0)."""
    return v is None or (
        _is_list(v) and all(_is_list(p) and len(p) == 2 and all(_is_int(c) and c >= 0 for c in p) for p in v)
    )


def _class_subset(v: Any) -> bool:
    """Two or more distinct class indices (integers >= 0)."""
    return _is_list(v) and len(v) >= 2 and all(_is_int(c) and c >= 0 for c in v) and len(set(v)) == len(v)


SEED_MAX = 2**32 - 1  # what Lightning's seed_everything (numpy's seed) accepts: 0 .. 2^32 - 1


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


_MONITORS = (
    "one of "
    + ", ".join(MONITORABLE)
    + " (on a regression run, data.task=regression: one of "
    + ", ".join(REGRESSION_MONITORABLE)
    + ")"
)

# (dotted key, check, what it accepts). Keys absent from the config (e.g. a custom optimizer without
# momentum) are not checked.
RULES: list[tuple[str, Callable[[Any], bool], str]] = [
    ("seed", lambda v: _is_int(v) and 0 <= v <= SEED_MAX, f"an integer from 0 to {SEED_MAX}"),
    ("threads", _optional(_positive_int), "null or an integer >= 1"),
    ("launch.jobs_per_gpu", _positive_int, "an integer >= 1"),
    (
        "resume",
        lambda v: v is None or isinstance(v, bool) or (isinstance(v, str) and Path(v).expanduser().is_file()),
        "null, true, false or the path of an existing checkpoint file",
    ),
    ("trainer.max_epochs", _positive_int, "an integer >= 1"),
    ("trainer.gradient_clip_val", _optional(lambda v: _is_number(v) and v > 0), "null or a number > 0"),
    ("data.batch_size", _positive_int, "an integer >= 1"),
    ("data.eval_batch_size", _positive_int, "an integer >= 1"),
    ("data.batches_per_step", _positive_int, "an integer >= 1"),
    (
        "data.val_size",
        lambda v: (_positive_int(v)) or (_is_number(v) and not _is_int(v) and 0 < v < 1),
        "a count >= 1 or a fraction in (0, 1)",
    ),
    ("data.train_eval_size", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    ("data.train_size", _optional(_positive_int), "null or an integer >= 1"),
    ("data.std", _numbers(lambda v: _is_number(v) and v > 0), "a number > 0, or a list of one per channel"),
    ("data.mean", _numbers(_is_number), "a finite number, or a list of one per channel"),
    (
        "data.shape",
        lambda v: _is_list(v) and len(v) == 3 and all(_positive_int(x) for x in v),
        "[channels, height, width] (data=folder and data=npz read it from the images in data.root: is data.root right?)",
    ),
    ("data.noise_map", _pairs, "null or a list of [source, target] class pairs, e.g. [[7,1],[2,7]]"),
    ("data.hold", lambda v: v in HOLDS, "one of " + ", ".join(HOLDS)),
    ("data.augment.crop", lambda v: _is_int(v) and v >= 0, "an integer >= 0 (pixels of padding; 0: no crop)"),
    ("data.augment.flip", lambda v: isinstance(v, bool), "true or false"),
    ("data.split_seed", _is_int, "an integer"),
    ("data.redraw", lambda v: isinstance(v, bool), "true or false"),
    ("data.label_noise.seed", _is_int, "an integer"),
    ("data.num_classes", lambda v: _is_int(v) and v >= 2, "an integer >= 2"),
    ("data.label_noise.rate", _probability, "a probability in [0, 1)"),
    ("data.label_noise.kind", lambda v: v in NOISE_KINDS, "one of " + ", ".join(NOISE_KINDS)),
    ("data.input_noise.rate", _probability, "a probability in [0, 1)"),
    ("data.input_noise.kind", lambda v: v in INPUT_NOISE_KINDS, "one of " + ", ".join(INPUT_NOISE_KINDS)),
    ("data.input_noise.std", lambda v: _is_number(v) and v > 0, "a number > 0 (a fraction of the pixel range)"),
    ("data.input_noise.seed", _is_int, "an integer"),
    ("data.classes", _optional(_class_subset), "null or a list of two or more distinct class indices >= 0, e.g. [0,6]"),
    ("optimizer.lr", lambda v: _is_number(v) and v > 0, "a number > 0"),
    ("optimizer.weight_decay", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    ("optimizer.momentum", lambda v: _probability(v), "a number in [0, 1)"),
    ("optimizer.betas", _betas, "a pair of numbers in [0, 1), e.g. [0.9,0.999]"),
    ("optimizer.eps", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    ("optimizer.alpha", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    ("scheduler.step_size", _positive_int, "an integer >= 1"),
    ("scheduler.gamma", lambda v: _is_number(v) and v > 0, "a number > 0"),
    ("scheduler.T_max", _positive_int, "an integer >= 1"),
    ("scheduler.eta_min", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    ("scheduler.factor", lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    ("scheduler.patience", lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    ("model.net.dropout", _probability, "a probability in [0, 1)"),
    ("model.net.hidden", _widths, "a width >= 1 or a list of widths >= 1 (a layer of width 0 has nothing to learn)"),
    ("model.net.channels", _widths, "a list of channel counts >= 1"),
    ("loss.input", lambda v: v in LOSS_INPUTS, "one of " + ", ".join(LOSS_INPUTS)),
    ("loss.target", lambda v: v in LOSS_TARGETS, "one of " + ", ".join(LOSS_TARGETS)),
    ("loss.probabilities", lambda v: v in LOSS_PROBABILITIES, "one of " + ", ".join(LOSS_PROBABILITIES)),
    ("loss.outputs", _optional(lambda v: v == 1), "null or 1 (one sigmoid logit for two classes: loss=bce_single)"),
    ("checkpoint.monitor", lambda v: v in MONITORABLE or v in REGRESSION_MONITORABLE, _MONITORS),
    ("checkpoint.mode", lambda v: v in ("min", "max"), "min or max"),
    ("early_stopping.enabled", lambda v: isinstance(v, bool), "true or false"),
    ("early_stopping.monitor", lambda v: v in MONITORABLE or v in REGRESSION_MONITORABLE, _MONITORS),
    ("early_stopping.mode", lambda v: v in ("min", "max"), "min or max"),
    ("early_stopping.patience", _positive_int, "an integer >= 1"),
    ("early_stopping.min_delta", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    ("analysis.smooth", _positive_int, "an integer >= 1 (epochs)"),
    ("analysis.patience", _positive_int, "an integer >= 1 (epochs)"),
    ("analysis.margin_nll", lambda v: _is_number(v) and v >= 0, "a number >= 0 (a fraction: 0.1 = 10 %)"),
    ("analysis.margin_acc", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1) (0.01 = 1 pp)"),
    ("analysis.target_acc", _optional(lambda v: _is_number(v) and 0 < v <= 1), "null or an accuracy in (0, 1]"),
    ("analysis.confident_wrong", lambda v: isinstance(v, bool), "true or false"),
    ("analysis.margins", lambda v: isinstance(v, bool), "true or false"),
    ("tracking.reuse", lambda v: v in REUSE_POLICIES, "one of " + ", ".join(REUSE_POLICIES)),
    ("tracking.timeout_s", lambda v: _is_number(v) and v > 0, "a number of seconds > 0"),
    ("tracking.experiment", lambda v: isinstance(v, str) and v.strip() != "", "a non-empty name"),
    ("tracking.stage", lambda v: v in (1, 2), "1 (a sweep's first runs) or 2 (its one extension)"),
    ("report.reference", lambda v: isinstance(v, str) and v.strip() != "", "a loss name, e.g. ce"),
    ("report.min_effect_pp", _optional(lambda v: _is_number(v) and v > 0), "null or a number of pp > 0"),
    ("data.task", lambda v: v in TASKS, "one of " + ", ".join(TASKS)),
    ("data.rotation.degrees", lambda v: _is_number(v) and 0 < v <= 180, "a number of degrees in (0, 180]"),
    ("data.rotation.seed", _is_int, "an integer"),
    ("data.outliers.rate", _probability, "a probability in [0, 1)"),
    ("data.outliers.kind", lambda v: v in OUTLIER_KINDS, "one of " + ", ".join(OUTLIER_KINDS)),
    ("data.outliers.degrees", lambda v: _is_number(v) and v > 0, "a number of degrees > 0"),
    ("data.outliers.seed", _is_int, "an integer"),
]


def validate(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` naming every key whose value lossbench cannot use; torch is not needed."""
    try:
        tree = resolved(cfg)
    except OmegaConfBaseException as e:  # an interpolation that points nowhere, e.g. optimizer.lr='${nope}'
        raise ConfigError(f"{e.full_key or 'config'}: {first_line(e)} (fix it on the command line)") from e
    problems = []
    for key, check, accepts in RULES:
        value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
        if value is _MISSING:
            continue
        if key == "data.num_classes" and value is None and any(p.startswith("data.shape=None") for p in problems):
            continue  # read from the same files, said once
        if not check(value):
            problems.append(_invalid(key, value, accepts) + _looked_in(cfg, key, value))
    checked = {key for key, _, _ in RULES}
    problems += [
        f"{key}={value!r} is invalid: expected a finite number"
        for key, value in _non_finite(tree)
        if key not in checked and not key.startswith("loss.criterion.")
    ]  # a test loss may take NaN on purpose
    problems += _groups_given_a_value(cfg) or (  # the checks below read those groups' keys
        _monitor_direction(cfg, "checkpoint")
        + _monitor_direction(cfg, "early_stopping")
        + _data_fits(cfg)
        + _task_fits(cfg)
        + store_problem(cfg)
    )
    if problems:
        raise ConfigError("; ".join(problems) + " (fix it on the command line, e.g. key=value)")


def check(key: str, value: Any) -> None:
    """Raise :class:`ConfigError` when ``value`` breaks the :data:`RULES` entry of ``key`` (for code given a value directly)."""
    for rule_key, ok, accepts in RULES:
        if rule_key == key and not ok(value):
            raise ConfigError(_invalid(key, value, accepts))


def _invalid(key: str, value: Any, accepts: str) -> str:
    return f"{key}={value!r} is invalid: expected {accepts}"


def _looked_in(cfg: DictConfig, key: str, value: Any) -> str:
    """For a fact data=folder or data=npz reads from data.root (``${lossbench.images:...}``) and did not find: where
    it looked and what it found there."""
    if value is not None or key != "data.shape":
        return ""
    parent, _, leaf = key.rpartition(".")
    raw = OmegaConf.to_container(OmegaConf.select(cfg, parent), resolve=False).get(leaf)
    found = re.search(rf"{re.escape(folders.RESOLVER)}:.*,(\w+),\w+}}$", str(raw))
    if found is None or found[1] not in folders.LAYOUTS:
        return ""
    return f"; data.root={OmegaConf.select(cfg, 'data.root')}: {folders.missing(str(cfg.data.root), found[1])}"


def _non_finite(tree: Any, key: str = "") -> Iterator[tuple[str, float]]:
    """``(dotted key, value)`` of every inf or NaN in a nested config container (list items included)."""
    if isinstance(tree, Mapping):
        for k, v in tree.items():
            yield from _non_finite(v, f"{key}.{k}" if key else str(k))
    elif isinstance(tree, list):
        for v in tree:
            yield from _non_finite(v, key)
    elif isinstance(tree, float) and not math.isfinite(tree):
        yield key, tree


def _groups_given_a_value(cfg: DictConfig) -> list[str]:
    """A group of keys that the command line replaced by one value (``data.input_noise=-0.1``): its keys' rules
    cannot see it, and the code that builds it would fail on it after torch loads."""
    problems = []
    for group in dict.fromkeys(key.rsplit(".", 1)[0] for key, _, _ in RULES if "." in key):
        value = OmegaConf.select(cfg, group, default=None, throw_on_missing=False)
        if value is not None and not isinstance(value, DictConfig):
            keys = [key for key, _, _ in RULES if key.startswith(group + ".")]
            example = next((key for key in keys if key.endswith(".rate")), keys[0])
            problems.append(
                f"{group}={value!r} is invalid: expected a group of keys ({', '.join(keys)}); set one of them, "
                f"e.g. {example}=..."
            )
    return problems


def _monitor_direction(cfg: DictConfig, group: str) -> list[str]:
    """A mode that selects the worst epoch of its monitor (val/acc with min, val/nll with max) is a mistake."""
    monitor, mode = OmegaConf.select(cfg, f"{group}.monitor"), OmegaConf.select(cfg, f"{group}.mode")
    better = MONITORABLE.get(monitor, REGRESSION_MONITORABLE.get(monitor))
    if better is None or mode not in ("min", "max") or mode == better:
        return []
    return [
        f"{group}.mode={mode} would keep the worst {monitor} ({monitor} improves {'upwards' if better == 'max' else 'downwards'}): set {group}.mode={better}"
    ]


def is_regression(cfg: DictConfig) -> bool:
    """True for a regression run (``data.task=regression``); every data set's YAML leaves the key out."""
    return OmegaConf.select(cfg, "data.task", default="classification") == "regression"


def _task_fits(cfg: DictConfig) -> list[str]:
    """What a run's task (``data.task``) rules out: on a regression run, the options that only mean something for a
    classifier (label noise, class-shaped heads and losses, the yardsticks accuracy and NLL, figures of them); on a
    classification run, the regression monitors."""
    monitors = [(g, OmegaConf.select(cfg, f"{g}.monitor")) for g in ("checkpoint", "early_stopping")]
    if not is_regression(cfg):
        return [
            f"{g}.monitor={m} is a regression yardstick (data.task=regression): use one of {', '.join(MONITORABLE)}"
            for g, m in monitors
            if m in REGRESSION_MONITORABLE
        ]
    fix = "a regression run (data.task=regression)"
    checks = [
        (OmegaConf.select(cfg, "data._target_") == REGRESSION_DATA, f"data._target_={REGRESSION_DATA}"),
        (OmegaConf.select(cfg, "model.net.num_classes") == 1, "model.net.num_classes=1 (one output: the angle)"),
        (
            OmegaConf.select(cfg, "loss.criterion._target_") in REGRESSION_CRITERIA,
            "loss= one of mse, mae, huber, smooth_l1 (" + ", ".join(REGRESSION_CRITERIA) + ")",
        ),
        (not OmegaConf.select(cfg, "loss.smoothing", default=0), "loss.smoothing=0"),
        (
            not OmegaConf.select(cfg, "data.label_noise.rate", default=0),
            "data.label_noise.rate=0 (labels are not its targets: data.outliers.rate)",
        ),
        (
            not OmegaConf.select(cfg, "analysis.figures", default=False),
            "analysis.figures=false (the run's figures chart accuracy and NLL)",
        ),
        (OmegaConf.select(cfg, "analysis.target_acc", default=None) is None, "analysis.target_acc=null"),
        (
            "ReduceLROnPlateau" not in str(OmegaConf.select(cfg, "scheduler._target_", default="")),
            "a scheduler other than plateau (it watches val/nll)",
        ),
    ]
    checks += [
        (m in REGRESSION_MONITORABLE, f"{g}.monitor= one of {', '.join(REGRESSION_MONITORABLE)}") for g, m in monitors
    ]
    return [f"{fix} needs {needed}" for ok, needed in checks if not ok]


def _data_fits(cfg: DictConfig) -> list[str]:
    """Data keys that each pass their rule but not together: per-channel values for the wrong number of channels,
    asymmetric noise without the data set's class map, a class map outside the classes."""
    data = cfg.get("data")
    if data is None or not _is_list(data.get("shape")) or len(data.shape) != 3:
        return []
    problems = []
    channels = data.shape[0]
    subset, classes = data.get("classes"), data.get("num_classes")
    if OmegaConf.select(cfg, "loss.outputs") == 1 and _is_int(classes) and classes != 2:
        problems.append(
            f"loss={OmegaConf.select(cfg, 'loss.name')} has one sigmoid output, for two classes only, but "
            f"data.num_classes={classes}: choose two, e.g. data.classes=[0,6] data.num_classes=2"
        )
    if _is_list(subset) and _class_subset(subset) and _is_int(classes) and classes != len(subset):
        problems.append(
            f"data.classes={list(subset)} keeps {len(subset)} classes (relabelled 0..{len(subset) - 1}) but "
            f"data.num_classes={classes}: set data.num_classes={len(subset)}"
        )
    for key in ("mean", "std"):
        value = data.get(key)
        if _is_list(value) and len(value) not in (1, channels):
            problems.append(
                f"data.{key} has {len(value)} values for {channels} channel(s) (data.shape={list(data.shape)})"
            )
    noise, pairs = data.get("label_noise") or {}, data.get("noise_map")
    if not (noise.get("kind") == "asymmetric" and _is_number(noise.get("rate")) and noise.rate > 0):
        return problems
    if not pairs:
        problems.append(
            f"data.label_noise.kind=asymmetric needs the data set's class map, and data={data.get('name')} has none "
            "(data.noise_map=null): set data.noise_map=[[source,target],...] or data.label_noise.kind=symmetric"
        )
    elif _pairs(pairs) and _is_int(classes) and any(c >= classes for p in pairs for c in p):
        problems.append(f"data.noise_map names a class >= data.num_classes={classes}")
    return problems


SQLITE_HEADER = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file."""


def store_problem(cfg: DictConfig) -> list[str]:
    """``tracking.uri`` naming an SQLite file (``sqlite:///`` or a bare path) that cannot be an MLflow store."""
    uri = OmegaConf.select(cfg, "tracking.uri", default=None)
    if not isinstance(uri, str) or ("://" in uri and not uri.startswith("sqlite:///")):
        return []
    path = Path(uri.removeprefix("sqlite:///").split("?", 1)[0] if "://" in uri else uri).expanduser()
    if str(path) in ("", ".", ":memory:"):
        return []
    problem = sqlite_problem(path.resolve())
    return [f"tracking.uri={uri}: {problem}"] if problem else []


def sqlite_problem(db: Path, must_exist: bool = False) -> str | None:
    """Why the file ``db`` of a ``sqlite:///`` URI cannot be an MLflow store, or None when it can (or may become
    one): read before MLflow opens it, without writing anything (MLflow would retry a folder for ~100 s and would
    add its tables to any other SQLite database)."""
    if db.is_dir():
        return (
            f"{db} is a folder, not an SQLite file (an old ./mlruns file store? MLflow 3 reads databases only: "
            "point tracking.uri at a database file, e.g. sqlite:///mlflow.db)"
        )
    if not db.exists():
        if must_exist:
            return f"{db} does not exist"
        if db.parent.exists() and not db.parent.is_dir():
            return f"{db.parent} is a file, not a folder"
        if not db.parent.is_dir():
            return f"folder {db.parent} does not exist; create it or choose another store"
        return None if os.access(db.parent, os.W_OK) else f"{db.parent} is not writable; fix its permissions"
    try:
        with open(db, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
        if not header:
            return None  # an empty file: SQLite makes it a new database
        if header != SQLITE_HEADER:
            return f"{db} is not an SQLite database (it starts {header[:8]!r})"
        with closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as connection:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except (OSError, sqlite3.Error) as e:
        return f"{db} cannot be read: {first_line(e) or type(e).__name__}"
    if tables and "experiments" not in tables:
        return f"{db} is an SQLite database but not an MLflow store (no experiments table); choose another file"
    return None


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ``(dotted.key, leaf)`` pairs of a nested mapping; lists stay leaves."""
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flatten(value, dotted + ".")
        else:
            yield dotted, value


def redact(key: str, value: Any) -> Any:
    """Hide secrets before they reach a tracking store: values of secret-looking keys, and passwords in URIs."""
    if _SECRET_WORDS & set(re.split(r"[_\-]", key.rsplit(".", 1)[-1].lower())):
        return "***"
    if isinstance(value, str):
        return _URI_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", value)
    return value


def redact_tree(tree: Any, key: str = "") -> Any:
    """:func:`redact` applied to every leaf of a nested config container."""
    if isinstance(tree, Mapping):
        return {k: redact_tree(v, f"{key}.{k}" if key else str(k)) for k, v in tree.items()}
    if isinstance(tree, list):
        return [redact_tree(v, key) for v in tree]
    return redact(key, tree)


def redact_override(override: str) -> str:
    """A command-line override ``key=value`` with its value redacted as a param would be."""
    key, sep, value = override.partition("=")
    return f"{key}{sep}{redact(key.lstrip('+~'), value)}" if sep else override


def chosen_scheduler(cfg: DictConfig) -> DictConfig | None:
    """The scheduler node to build, or None for a constant rate: ``scheduler: null`` (``scheduler=none``).

    An experiment that tunes a scheduler (``scheduler.eta_min``) and a command line that says ``scheduler=none``
    leave those settings without a ``_target_``: no scheduler either (the settings stay in the params and the hash).
    """
    node = cfg.scheduler
    return node if node is not None and "_target_" in node else None


def without_name(group: DictConfig) -> dict[str, Any]:
    """A group's config without its display ``name``: what Hydra instantiates (optimizer, scheduler)."""
    return {k: v for k, v in group.items() if k != "name"}


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain containers, interpolations resolved (without Hydra's own node, which is never resolved)."""
    if "hydra" in cfg:
        cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    return OmegaConf.to_container(cfg, resolve=True)


def config_hash(cfg: DictConfig) -> str:
    """A short, stable hash of what a run trains: configs equal up to :data:`OPERATIONAL_KEYS` give equal hashes."""
    items = {
        k: v
        for k, v in flatten(resolved(cfg))
        if (v != HASHED_WHEN_SET[k] if k in HASHED_WHEN_SET else not is_operational(k))
    }
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()[:16]
