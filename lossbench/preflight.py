"""Checks that need the data or the built pieces: one training batch through the model and the loss.

``train.py`` runs them after loading the data and building the model, loss and optimizer, and
before a run is created, so a model that does not fit the images, a loss that does not fit the
model's output or the labels, or a trainer that cannot start answers in one line naming the key to
change, with no run left in the store.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from lossbench.config import is_regression
from lossbench.errors import ConfigError, describe


def training_device(trainer_cfg: Mapping[str, Any]) -> torch.device:
    """The device Lightning will train on with the ``trainer`` node's settings (a bad setting fails here, before the run).

    Its ``_target_`` (the Trainer class) and ``gradient_clip_val`` (lossbench clips in its own optimizer steps) are
    not Lightning settings to check.
    """
    if OmegaConf.is_config(trainer_cfg):
        trainer_cfg = OmegaConf.to_container(trainer_cfg, resolve=True)
    trainer_cfg = {k: v for k, v in trainer_cfg.items() if k not in ("_target_", "gradient_clip_val")}
    try:
        with (
            warnings.catch_warnings()
        ):  # what Lightning warns about (e.g. an unused srun) it says again when training starts
            warnings.simplefilter("ignore")
            trainer = pl.Trainer(
                **{
                    **trainer_cfg,
                    "logger": False,
                    "enable_checkpointing": False,
                    "enable_progress_bar": False,
                    "enable_model_summary": False,
                }
            )
    except Exception as e:
        raise ConfigError(f"trainer: cannot start with {_settings(trainer_cfg)}: {describe(e)}") from e
    return trainer.strategy.root_device


def check_one_batch(
    net: nn.Module, loss: nn.Module, x: Tensor, y: Tensor, cfg: DictConfig, device: torch.device
) -> None:
    """Raise :class:`ConfigError` naming the key to change when a training batch cannot go through ``net`` and ``loss``.

    Forward and backward run with model and loss in eval mode and the gradients are dropped afterwards:
    no batch-norm statistic, dropout draw, random number, weight or loss state changes, so training is
    exactly what it would be.
    """
    net.to(device)
    loss.to(device)
    x, y = x.to(device), y.to(device)
    was_training = net.training, loss.training
    net.eval()
    loss.eval()  # a loss may count or change with its training calls (tests/faults.py does)
    try:
        try:
            logits = net(x)
        except Exception as e:
            raise ConfigError(_model_message(cfg, x, e)) from e
        empty = [(name, tuple(p.shape)) for name, p in net.named_parameters() if p.numel() == 0]
        if empty:
            name, shape = empty[0]
            raise ConfigError(
                f"model={cfg.model.name}: layer {name} has shape {shape}, no weights to learn: every layer needs a width "
                "of at least 1; check model.net.*"
            )
        regression = is_regression(cfg)  # one output: the angle (lossbench.regression)
        expected = (len(y), 1 if regression else cfg.data.num_classes)
        if not torch.is_tensor(logits) or tuple(logits.shape) != expected:
            shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
            width, fix = ("1", "1") if regression else ("data.num_classes", "${data.num_classes}")
            raise ConfigError(
                f"model={cfg.model.name}: returns {shape} for a batch of {len(y)} images, expected {expected} "
                f"(batch, {width}); set model.net.num_classes={fix}"
            )
        name = f"loss={cfg.loss.name} (loss.input={cfg.loss.get('input', 'logits')}, loss.target={cfg.loss.get('target', 'index')})"
        try:
            value = loss(logits, y)
        except Exception as e:
            raise ConfigError(
                f"{name} cannot score the model's output {tuple(logits.shape)} against class indices: "
                f"{describe(e)}; fix loss.input, loss.target or loss.criterion"
            ) from e
        if not torch.is_tensor(value) or value.ndim != 0:
            shape = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
            raise ConfigError(f"{name} returns {shape}, not one number per batch; set loss.criterion.reduction=mean")
        if not bool(torch.isfinite(value)):
            raise ConfigError(
                f"{name} is {float(value)} on the first batch, before any step: fix loss.criterion or loss.input"
            )
        try:
            value.backward()
        except Exception as e:
            raise ConfigError(f"{name} cannot be differentiated: {describe(e)}; fix loss.criterion") from e
    finally:
        net.zero_grad(set_to_none=True)
        net.train(was_training[0])
        loss.train(was_training[1])


def _model_message(cfg: DictConfig, x: Tensor, error: Exception) -> str:
    """Name ``model.net.in_shape`` when it does not fit the images, else the model group."""
    image = "x".join(map(str, x.shape[1:]))
    given = cfg.model.net.get("in_shape")
    if given is not None and list(given) != list(x.shape[1:]):
        given, fits = ("[" + ",".join(map(str, shape)) + "]" for shape in (given, x.shape[1:]))
        return (
            f"model.net.in_shape={given} does not fit the data: images are {image} (channels x height x width); "
            f"set model.net.in_shape={fits} (or leave it at its default, ${{data.shape}})"
        )
    return f"model={cfg.model.name}: cannot take a batch of {image} images: {describe(error)}; check model.net.*"


def _settings(trainer_cfg: dict[str, Any]) -> str:
    return " ".join(
        f"trainer.{k}={v}" for k, v in trainer_cfg.items() if k in ("accelerator", "devices", "precision", "strategy")
    )
