"""The epoch variants, each timed per epoch inside a child process (see ``children``).

- ``plain``: a hand-written PyTorch loop over the very tensors lossbench trains on (same splits, model,
  loss, optimizer as a user writes it: default kernels), followed by the same evaluation passes
  (validation and the fixed train_eval subset, with the same yardsticks). What the arithmetic costs.
- ``plain-fused``: the same loop with PyTorch's fused optimizer kernel (``fused=True``).
- ``lossbench``: ``lossbench.train.run(cfg)`` on the real composed config (MLflow on, every metric,
  checkpoints, progress bar off, fused kernels as configured by default); an epoch is the time between
  consecutive ``on_train_epoch_start`` marks of a callback passed through ``extra_callbacks`` (the last
  ends at ``on_train_end``), so validation, checkpointing and the MLflow flush are all inside it.
- ``conventional``: the usual Lightning pipeline: torchvision dataset with a per-sample
  ``ToTensor``/``Normalize`` through a shuffling ``DataLoader``, ``self.log(on_step=True,
  on_epoch=True, prog_bar=True)`` every step, a torchmetrics ``MulticlassAccuracy`` updated every
  step, ``MLFlowLogger`` on SQLite and the progress bar on (written to the child's log file).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.settings import NVML_ENV, Settings
from lossbench.paths import compose


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


def time_plain(cfg, device: str = "cpu", fused: bool = False) -> list[float]:
    """A plain PyTorch loop doing lossbench's work: one training epoch, then the two evaluation passes.

    ``fused=False`` builds the optimizer as a user writes it (no ``fused`` argument: PyTorch's default kernel).
    """
    import torch
    from hydra.utils import instantiate

    from lossbench.config import without_name
    from lossbench.losses import build_loss

    data = instantiate(cfg.data, shuffle_seed=cfg.seed)
    s = data.load()  # the same splits, held the same way
    train_x, train_y = s.train_x.to(device), s.train_y.to(device)
    # What each batch goes through (None when the held tensors are what the model takes: MNIST's fast path).
    transforms = (data.train_transform, data.batch_transform)
    transforms = tuple(None if t is None else t.to(torch.device(device)) for t in transforms)
    evals = [
        (s.val_x.to(device), s.val_y.to(device)),
        (s.train_x[s.train_eval_idx].to(device), s.train_y[s.train_eval_idx].to(device)),
    ]
    torch.manual_seed(cfg.seed)
    net = instantiate(cfg.model.net).to(device)
    loss_fn = build_loss(cfg.loss, cfg.data.num_classes).to(device)
    options = {k: v for k, v in without_name(cfg.optimizer).items() if k != "fused"}
    optimizer = instantiate(options, **({"fused": True} if fused else {}))(net.parameters())
    batch, eval_batch = cfg.data.batch_size, cfg.data.eval_batch_size
    generator = torch.Generator().manual_seed(cfg.seed)
    times = []
    # Importing Lightning (lossbench.data does) sets PYTORCH_NVML_BASED_CUDA_CHECK=1, after which every
    # Adam.step asks NVML whether CUDA exists (~50 us on a machine without it). A plain script does not
    # import Lightning, so the plain loop runs without it.
    nvml_check = os.environ.pop(NVML_ENV, None)
    try:
        for _ in range(cfg.trainer.max_epochs):
            times.append(
                _plain_epoch(
                    net, loss_fn, optimizer, train_x, train_y, evals, batch, eval_batch, generator, device, transforms
                )
            )
    finally:
        if nvml_check is not None:
            os.environ[NVML_ENV] = nvml_check
    return times


def _plain_epoch(
    net, loss_fn, optimizer, train_x, train_y, evals, batch: int, eval_batch: int, generator, device: str, transforms
) -> float:
    """One shuffled training epoch, then evaluation passes computing the run's loss and the yardsticks; seconds."""
    import torch

    from lossbench.metrics import yardsticks

    n = len(train_y)
    start = time.perf_counter()
    net.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    order = torch.randperm(n, generator=generator).to(device)
    train_transform, eval_transform = transforms
    augments = train_transform is not None and train_transform.augments
    draws = train_transform.draw(n, generator).to(device) if augments else None
    for i in range(0, n, batch):
        idx = order[i : i + batch]
        x, y = train_x[idx], train_y[idx]
        if train_transform is not None:
            x = train_transform(x, None if draws is None else draws[i : i + batch])
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
            prepare = eval_transform or (lambda batch: batch)
            logits = torch.cat([net(prepare(x[i : i + eval_batch])).float() for i in range(0, len(y), eval_batch)])
            values = {"loss": loss_fn(logits, y), **yardsticks(logits, y)}
            record += torch.stack(list(values.values())).tolist()
    if not all(math.isfinite(v) for v in record):
        raise RuntimeError(f"plain loop diverged: {record}")
    return time.perf_counter() - start


def time_lossbench(cfg, profile_to: Path | None = None) -> list[float]:
    """lossbench's real path, ``lossbench.train.run``, with an epoch timer passed in as a Lightning callback."""
    from lossbench.train import run

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
    from hydra.utils import get_class, instantiate
    from omegaconf import OmegaConf
    from pytorch_lightning.loggers import MLFlowLogger
    from torch.utils.data import DataLoader, Subset
    from torchmetrics.classification import MulticlassAccuracy
    from torchvision import transforms

    from lossbench.losses import build_loss

    d = cfg.data
    mean, std = (OmegaConf.to_container(d, resolve=True)[key] for key in ("mean", "std"))
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    split_args = OmegaConf.to_container(d.source.train, resolve=True)
    full = get_class(d.source.dataset)(str(d.root), transform=transform, download=False, **split_args)
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
    module = Conventional(
        instantiate(cfg.model.net), build_loss(cfg.loss, d.num_classes), cfg.optimizer.lr, d.num_classes
    )
    logger = MLFlowLogger(experiment_name="conventional", tracking_uri=f"sqlite:///{tmp}/conventional.db")
    timer = epoch_timer()
    trainer = pl.Trainer(
        max_epochs=cfg.trainer.max_epochs,
        accelerator=device,
        devices=1,
        logger=logger,
        callbacks=[timer],
        enable_progress_bar=True,
        default_root_dir=str(tmp / "conventional"),
    )
    before = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        trainer.fit(module, train_loader, val_loader)
    finally:  # MLflow's set_tracking_uri (the logger's) exports its URI: a later run in this process must not inherit it
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
    return timer.epochs


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Time one variant for each (model, batch) of ``spec``; what a child process runs and reports."""
    import torch

    settings = Settings(**spec["settings"])
    tmp, variant, device = Path(spec["tmp"]), spec["variant"], spec.get("accelerator", "cpu")
    if device == "gpu" and not torch.cuda.is_available():
        return {"skipped": "torch.cuda.is_available() is false"}
    torch.set_num_threads(settings.threads)
    if variant == "overhead":
        from benchmarks.jobs import time_overhead

        return time_overhead(settings, spec["runs"][0][0], tmp)
    results = []
    for model, batch in spec["runs"]:
        cfg = compose(*settings.overrides(model, batch, settings.warmup + settings.epochs, tmp, accelerator=device))
        if variant in ("plain", "plain-fused"):
            times = time_plain(cfg, "cuda" if device == "gpu" else "cpu", fused=variant == "plain-fused")
        elif variant == "lossbench":
            profile_to = Path(settings.profile) / f"lossbench-{model}-{batch}.prof" if settings.profile else None
            times = time_lossbench(cfg, profile_to)
        else:
            times = time_conventional(cfg, spec["workers"], tmp, device)
        measured = times[settings.warmup :] or times
        results.append(
            {
                "model": model,
                "batch": batch,
                "epoch_s": measured,
                "warmup_s": times[: len(times) - len(measured)],
                "median_epoch_s": statistics.median(measured),
                "min_epoch_s": min(measured),
                "threads": torch.get_num_threads(),
            }
        )
    return {"runs": results}
