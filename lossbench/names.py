"""lossbench's vocabulary: every metric and tag name a run records, the objective, and how epochs are numbered.

The bottom floor: no lossbench import, no torch. Every other module imports its names from here, and
``tests/test_house.py`` fails on a metric or tag name written as a string literal anywhere else in the
package. A name's meaning is said once, beside it.

- **Epochs** are counted from :data:`FIRST_EPOCH` (1) wherever a person reads one: the terminal, verdicts,
  tags, ``summary/*``, the report, figure axes and MLflow's Step axis. Epoch 1 is the state after one pass
  over the training data. In memory a run's curves are lists; epoch ``e`` sits at index ``e - FIRST_EPOCH``.
- **Per-epoch metrics** (step = epoch number): the run's own loss on every split, and the *yardsticks* every
  loss shares (:data:`YARDSTICKS`) on validation and on a fixed training subset evaluated in eval mode
  (``train_eval``), and :data:`OVERFIT_METRICS`, the overfitting signals on one scale for every loss.
- **Tags** say what a run is (kind, loss, seed, ...), where it belongs (sweep) and what it concluded (verdict).
"""

from __future__ import annotations

# ------------------------------------------------------------------------------------------- epochs

FIRST_EPOCH = 1
"""The number of the first epoch, everywhere a person reads one (and MLflow's step of its metrics)."""


def epoch_number(index: int) -> int:
    """The epoch a curve's list index holds (index 0 is epoch :data:`FIRST_EPOCH`)."""
    return int(index) + FIRST_EPOCH


def epoch_index(number: float) -> int:
    """The list index of epoch ``number`` in a run's curves."""
    return int(number) - FIRST_EPOCH


# ------------------------------------------------------------------------------ per-epoch metrics

YARDSTICKS = ("acc", "nll", "ece")  # what lossbench.metrics.yardsticks computes on every evaluation pass
VAL_PREFIX, TRAIN_EVAL_PREFIX = "val", "train_eval"  # validation, and a fixed training subset in eval mode
EVAL_PREFIXES = (VAL_PREFIX, TRAIN_EVAL_PREFIX)  # the validation dataloaders 0 and 1, in this order
EVAL_METRICS = ("loss", *YARDSTICKS)  # per evaluation pass: the run's own loss, then the yardsticks

TRAIN_LOSS, TRAIN_ACC = "train/loss", "train/acc"  # running means over the epoch's training steps
VAL_LOSS, VAL_ACC, VAL_NLL = "val/loss", "val/acc", "val/nll"
TRAIN_EVAL_LOSS, TRAIN_EVAL_ACC, TRAIN_EVAL_NLL = "train_eval/loss", "train_eval/acc", "train_eval/nll"
LR, EPOCH_TIME = "lr", "time/epoch_s"

TRAIN_METRICS = (TRAIN_LOSS, TRAIN_ACC)
OTHER_METRICS = (LR, EPOCH_TIME)

# The direction each evaluation metric improves in. Lightning's checkpoint and early-stopping callbacks
# read the metrics when validation ends, before the epoch's train/* exist (they would judge each epoch
# by the previous epoch's training numbers), so only these can be monitored.
MONITORABLE: dict[str, str] = {
    f"{prefix}/{name}": "max" if name == "acc" else "min" for prefix in EVAL_PREFIXES for name in EVAL_METRICS
}

GAP_ACC, GAP_NLL = "overfit/gap_acc", "overfit/gap_nll"
VAL_NLL_RISE, NLL_DRIFT = "overfit/val_nll_rise", "overfit/nll_drift"
OVERFIT_METRICS = (VAL_NLL_RISE, NLL_DRIFT, GAP_ACC, GAP_NLL)
"""Overfitting on one scale for every loss, per epoch (lossbench.analysis.overfit_curves), each what the verdict would
read were the run to stop at that epoch: how far smoothed validation NLL stands above its lowest (0.2 = 20 % above),
as ``val_nll_rise`` while training NLL fell since that lowest (overfitting once above the verdict's margin) or as
``nll_drift`` while it did not (calibration worsening on every split); and the accuracy gap ``train_eval/acc -
val/acc`` and the NLL gap ``val/nll - train_eval/nll`` (positive = better on training data). The sweep's curves view
charts them: a loss whose NLL lives at 2-4 and one at 0.3 read on the same axis."""

CONFIDENCE = ("wrong_conf", "confident_wrong", "confident_wrong_loss", "confident_wrong_grad")
"""How a run's own loss treats the predictions it gets wrong, on every evaluation pass of a run with
``analysis.confident_wrong=true`` (lossbench.metrics.confidence; also ``test/*``, ``test_last/*``):
the mean confidence (top softmax probability) of the wrong predictions; the share of images predicted wrong with a
confidence of at least lossbench.metrics.CONFIDENT (0.9); and the loss and the gradient those confidently wrong
images receive from the run's own loss, relative to the average image (the mean per-image loss on them over the
mean on all; the mean per-image norm of the loss's gradient with respect to the logits on them over the mean on
all). 1 = treated like any image; NaN when no image is confidently wrong."""
CONFIDENCE_METRICS: tuple[str, ...] = tuple(f"{prefix}/{name}" for prefix in EVAL_PREFIXES for name in CONFIDENCE)
VAL_CONFIDENT_WRONG = f"{VAL_PREFIX}/{CONFIDENCE[1]}"

EPOCH_METRICS: tuple[str, ...] = (
    *TRAIN_METRICS,
    *MONITORABLE,
    *OTHER_METRICS,
    *OVERFIT_METRICS,
)
"""Every metric a run records each epoch (lossbench.module's history, tests/test_input.py checks a real fit); with
``analysis.confident_wrong=true`` :data:`CONFIDENCE_METRICS` too."""

MEMORISATION = ("memorised", "flipped_true_acc", "clean_acc")  # lossbench.metrics.memorisation, on train_eval
NOISE_METRICS: tuple[str, ...] = tuple(f"{TRAIN_EVAL_PREFIX}/{name}" for name in MEMORISATION)
"""Recorded as well, each epoch, when the training labels are noisy (``data.label_noise.rate > 0``)."""
MEMORISED = NOISE_METRICS[0]

REGRESSION_YARDSTICKS = ("rmse_deg", "mae_deg")
"""What a regression run (``data.task=regression``, lossbench.regression) records on every evaluation pass instead of
:data:`YARDSTICKS`: the root mean squared and the mean absolute error of its one output against the *clean* targets,
in the target's unit (degrees of rotation), whatever the targets it trained on (a share of them outliers)."""
REGRESSION_EVAL_METRICS = ("loss", *REGRESSION_YARDSTICKS)
TRAIN_MAE_DEG = "train/mae_deg"
"""A regression run's running mean absolute error over the epoch's training steps, against the targets it trains on
(outliers included), in degrees: what ``train/acc`` is to a classifier."""
REGRESSION_MONITORABLE: dict[str, str] = {
    f"{prefix}/{name}": "min" for prefix in EVAL_PREFIXES for name in REGRESSION_EVAL_METRICS
}
"""What a regression run's checkpoint can be selected by (``checkpoint.monitor``): lower is better for each."""
VAL_RMSE_DEG, VAL_MAE_DEG = (f"{VAL_PREFIX}/{name}" for name in REGRESSION_YARDSTICKS)
REGRESSION_EPOCH_METRICS: tuple[str, ...] = (TRAIN_LOSS, TRAIN_MAE_DEG, *REGRESSION_MONITORABLE, *OTHER_METRICS)
"""Every metric a regression run records each epoch (tests/test_regression.py checks a real fit)."""

# --------------------------------------------------------------------------------- final metrics

TEST_PREFIX, TEST_LAST_PREFIX = "test/", "test_last/"
"""``test/*``: the selected checkpoint (best :data:`OBJECTIVE`) on the test set; ``test_last/*``: the final weights."""
TEST_ACC, TEST_LAST_ACC = TEST_PREFIX + "acc", TEST_LAST_PREFIX + "acc"
TEST_NLL, TEST_ECE, TEST_LAST_NLL, TEST_LAST_ECE = (
    p + m for p in (TEST_PREFIX, TEST_LAST_PREFIX) for m in YARDSTICKS[1:]
)

TEST_RMSE_DEG, TEST_MAE_DEG, TEST_LAST_RMSE_DEG, TEST_LAST_MAE_DEG = (
    p + m for p in (TEST_PREFIX, TEST_LAST_PREFIX) for m in REGRESSION_YARDSTICKS
)
"""A regression run's clean-target errors on the test set: the selected checkpoint (lowest ``checkpoint.monitor``,
``val/rmse_deg`` in the claims) and the final weights."""

MARGIN_QUANTILES = (10, 25, 50, 75, 90)
"""The percentiles of the test set's margins a run records."""
MARGINS: tuple[str, ...] = (
    *(f"margin_q{q}" for q in MARGIN_QUANTILES),
    "margin_ge1",
    *(f"input_margin_q{q}" for q in MARGIN_QUANTILES),
)
"""The test set's margins (lossbench.metrics.margins), recorded as ``test/*`` and ``test_last/*`` by a run with
``analysis.margins=true``: percentiles of the
*logit margin* ``z_y - max_{k != y} z_k`` (negative when wrong), the share of test images with a logit margin of at
least 1 (multi-class hinge's own margin), and percentiles of the *input margin*: the distance from the image to the
nearest decision boundary in the model's (normalised) input space over all competing classes,
``min_{j != y} (z_y - z_j) / ||grad_x (z_y - z_j)||`` (exact for a linear model, first-order for a network; Elsayed et
al., 2018), signed like the logit margin. The logit margin is in each loss's own logit scale; the input margin
compares across losses."""
TEST_MARGINS: tuple[str, ...] = tuple(TEST_PREFIX + m for m in MARGINS)
TEST_MARGIN_Q = dict(zip(MARGIN_QUANTILES, TEST_MARGINS[: len(MARGIN_QUANTILES)]))
TEST_MARGIN_GE1 = TEST_MARGINS[len(MARGIN_QUANTILES)]
TEST_INPUT_MARGIN_Q = dict(zip(MARGIN_QUANTILES, TEST_MARGINS[len(MARGIN_QUANTILES) + 1 :]))
TRAIN_EVAL_MARGINS: tuple[str, ...] = tuple(f"{TRAIN_EVAL_PREFIX}/{m}" for m in MARGINS)
"""The same margins of the selected weights on the train_eval rows (the data they were trained on, with its training
labels: the SVM's margin), recorded once at the end by a run with ``analysis.margins=true``."""
TRAIN_EVAL_INPUT_MARGIN_Q = dict(zip(MARGIN_QUANTILES, TRAIN_EVAL_MARGINS[len(MARGIN_QUANTILES) + 1 :]))
TEST_CONFIDENCE: dict[str, str] = {name: TEST_PREFIX + name for name in CONFIDENCE}

CALIBRATION = ("own_nll", "own_ece", "own_nll_ts", "own_ece_ts", "nll_ts", "ece_ts")
"""Each loss scored on the probabilities it trains (lossbench.metrics.calibration; its YAML's ``probabilities``: the C
one-vs-rest sigmoids of BCE normalised to sum to 1, the softmax for the rest): NLL and ECE of those probabilities,
the same after temperature scaling (one temperature fitted on the validation logits by minimising their NLL, Guo et
al. 2017), and the softmax's NLL and ECE after its own temperature scaling. Recorded by every run as ``test/*`` and
``test_last/*``: the NLL/ECE yardsticks mix calibration with ranking, these separate them."""
TEST_CALIBRATION: dict[str, str] = {name: TEST_PREFIX + name for name in CALIBRATION}

SUMMARY_PREFIX = "summary/"
SUMMARY_FIGURES: tuple[str, ...] = (
    "epochs",
    "selected_epoch",
    "best_epoch_nll",
    "best_epoch_acc",
    "best_val_nll",
    "best_val_acc",
    "gap_acc_selected",
    "gap_nll_selected",
    "gap_acc_last",
    "gap_nll_last",
    "val_nll_rise",
    "train_nll_change",
    "has_onset",
    "onset_epoch",
    "drift",
    "epochs_to_target",
    "seconds_to_target",
    "loss_rise",
    "loss_has_onset",
    "loss_onset_epoch",
)
"""What lossbench.analysis.summarize says of a run's curves, in a stable order; recorded as ``summary/<figure>``."""
SUMMARY_KEYS: tuple[str, ...] = tuple(SUMMARY_PREFIX + figure for figure in SUMMARY_FIGURES)
SUMMARY_EPOCHS, SUMMARY_SELECTED_EPOCH = SUMMARY_PREFIX + "epochs", SUMMARY_PREFIX + "selected_epoch"
SUMMARY_ONSET_EPOCH = SUMMARY_PREFIX + "onset_epoch"
SUMMARY_EPOCHS_TO_TARGET, SUMMARY_SECONDS_TO_TARGET = (SUMMARY_PREFIX + f for f in SUMMARY_FIGURES[15:17])
"""The first epoch whose validation accuracy reaches ``analysis.target_acc`` (when set), and the seconds its epochs
took (``time/epoch_s`` summed: training and evaluation); absent when the run never reaches it."""
SUMMARY_LOSS_RISE, SUMMARY_LOSS_HAS_ONSET, SUMMARY_LOSS_ONSET = (SUMMARY_PREFIX + f for f in SUMMARY_FIGURES[17:20])
"""The overfitting rule of lossbench.analysis.judge read on the run's *own* loss (``val/loss`` against
``train_eval/loss``) instead of the shared yardsticks: how far smoothed ``val/loss`` ended above its lowest (relative),
whether that rule says "overfits" (1) or not (0), and its onset. What a practitioner watching only ``val/loss`` sees."""

# ------------------------------------------------------------------------------------- objective

OBJECTIVE, OBJECTIVE_MODE = VAL_ACC, "max"
"""What selects a run's tested checkpoint by default (``checkpoint.monitor``/``mode`` in conf/config.yaml) and
what a sweep's job returns to Hydra's sweepers: validation accuracy, a yardstick every loss aims at."""
MONITOR_BEFORE_PARAM = (VAL_NLL, "min")
"""The monitor of runs recorded before ``checkpoint.monitor`` was a param (lossbench's first versions)."""
PLATEAU_MONITOR = VAL_NLL
"""What ReduceLROnPlateau (``scheduler=plateau``) watches: a yardstick every loss shares."""

# ------------------------------------------------------------------------------------------ tags

KIND_TAG = "lossbench.kind"
KIND_TRAIN, KIND_SWEEP, KIND_REPORT, KIND_CLAIMS = "train", "sweep", "report", "claims"
"""What a run is: a training run, a sweep's parent run (it holds the sweep's report), a report of runs, the verdicts
of ``python -m lossbench.claims`` on its protocols' sweeps."""
CLAIMS_EXPERIMENT = "claims"
"""The MLflow experiment that holds ``python -m lossbench.claims``'s runs (each protocol's sweep has its own)."""
CLAIMS_ID_TAG = "lossbench.claims_id"
"""Which claims run a run is: a hash of the protocols' sweep ids (re-running the same command updates the same run)."""

# What was trained: one tag per choice, so MLflow's UI can group and filter by it.
DIMENSION_TAGS = ("loss", "optimizer", "model", "data", "scheduler", "seed")
SEED_TAG = "seed"
CONFIG_HASH_TAG = "config_hash"
"""The identity of what a run trains (lossbench.config.config_hash): runs are skipped and resumed by it."""
CONFIG_HASH_VERSION_TAG = "config_hash_version"

SWEEP_TAG = "sweep_id"
SWEEP_JOB_TAG = "sweep_job"
SWEEP_OVERRIDES_TAG = "sweep_overrides"
PARENT_RUN_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"
"""A run's description, Markdown shown on its page in MLflow's UI."""

VERDICT_TAG, VERDICT_TEXT_TAG, ONSET_TAG = "verdict", "verdict_text", "onset_epoch"
"""What lossbench.analysis.judge concluded: the kind, one sentence, and the onset epoch (or ``none``)."""
THREADS_TAG = "threads"
TEST_SIZE_TAG = "test_size"
"""Images in the run's test set: one image is ``1 / test_size`` of test accuracy (10,000 for MNIST and CIFAR,
26,032 for SVHN, 18,800 for EMNIST Balanced)."""
NOISE_TAG_PREFIX = "noise."
SEED_DRIVES_TAG = "lossbench.seed_drives"
"""Which sources of variance the run's seed drew, comma-separated (lossbench.data.SEED_SOURCES): always ``init,order``
(initial weights, batch order and augmentation); with ``data.redraw=true`` also those of the data in effect:
``split`` (the validation split and the train_eval rows), ``subset`` (``data.train_size``), ``label_noise`` and
``input_noise`` (when their rate is above 0). A seed is a replication (Bouthillier et al. 2021)."""

FAILURE_TAG = "lossbench.failure"
"""Why a run ended FAILED or KILLED, in one line."""
CHECKPOINT_TAG = "lossbench.checkpoint_dir"
HOST_TAG, PID_TAG = "lossbench.host", "lossbench.pid"
"""Where the process that owns a RUNNING run lives: a run whose process is gone is not running."""
PID_STARTED_TAG = "lossbench.pid_started"
"""When that process started (seconds since the epoch, as the OS says): a later process given the same pid is
not the run's owner."""
STAGE_TAG = "lossbench.stage"
"""1 for a sweep's first runs, 2 for the runs its one extension added (lossbench.decisions' second look)."""
FIRST_EPOCH_TAG = "lossbench.first_epoch"
"""The MLflow step of a run's first epoch: :data:`FIRST_EPOCH` on runs recorded since epochs are numbered from 1.
Runs without the tag (recorded earlier) logged their first epoch at step 0, and keep doing so when resumed."""
FIGURES_ERROR_TAG = "lossbench.figures_error"

# ------------------------------------------------------------------------------------ provenance
# Which code made a run, with what, where, and how to make it again (lossbench.provenance writes them on every
# run and on a sweep's parent run; lossbench.report.provenance reads them back).

LOSSBENCH_VERSION_TAG = "lossbench.version"
"""lossbench's package version (``pyproject.toml``)."""
COMMIT_TAG = "lossbench.git.commit"
"""The commit of lossbench's own source tree, or ``unknown (not a git checkout)``."""
MODIFIED_TAG = "lossbench.git.modified"
"""``true`` when lossbench's code differed from that commit (tracked changes or untracked code files), ``false``
when not, ``unknown`` outside a git checkout."""
DIFF_TAG = "lossbench.git.diff_sha256"
"""sha256 of the run's artifact :data:`CODE_DIFF_ARTIFACT` (the patch from the commit to the code that ran); only
on a modified tree."""
CODE_VERSION_TAG = "lossbench.code_version"
"""A hash of the content of the code that makes a run's numbers (lossbench.provenance.CODE_AREAS): equal for equal
code, committed or not; what the skip policy (``tracking.reuse``) compares."""
COMMAND_TAG = "lossbench.command"
"""The command that makes this run again (its config hash included): ``python -m lossbench.train <overrides>``."""
LIBRARY_TAG_PREFIX = "lossbench.lib."
LIBRARIES: dict[str, str] = {
    "python": "",
    "torch": "torch",
    "torchvision": "torchvision",
    "lightning": "pytorch-lightning",
    "hydra": "hydra-core",
    "mlflow": "mlflow",
    "numpy": "numpy",
}
"""Library -> its distribution on PyPI (python: the interpreter); recorded as ``lossbench.lib.<library>``."""
LIBRARY_TAGS: dict[str, str] = {name: LIBRARY_TAG_PREFIX + name for name in LIBRARIES}
CPU_TAG, GPU_TAG, GPU_COUNT_TAG = "lossbench.device.cpu", "lossbench.device.gpu", "lossbench.device.gpu_count"
"""The CPU's model name; the training GPU's name (``none`` on CPU) and how many GPUs the process sees."""
DRIVER_TAG, CUDA_TAG = "lossbench.device.driver", "lossbench.device.cuda"
"""The NVIDIA driver's version (GPU runs only) and the CUDA version torch was built with (``none`` for a CPU build)."""
CODE_DIFF_ARTIFACT = "code.diff"

# MLflow's own tags (mlflow.utils.mlflow_tags): its run list's "Source" column shows mlflow.source.name, its
# "Version" column the first 6 characters of mlflow.source.git.commit, its "User" column mlflow.user.
SOURCE_NAME_TAG, SOURCE_TYPE_TAG = "mlflow.source.name", "mlflow.source.type"
GIT_COMMIT_TAG, GIT_BRANCH_TAG, USER_TAG = "mlflow.source.git.commit", "mlflow.source.git.branch", "mlflow.user"
