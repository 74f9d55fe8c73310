"""What one benchmark run measures (``Settings``, shared with its child processes) and the targets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BARE_IMPORT = "import torch, torchvision, pytorch_lightning, hydra, mlflow"
NVML_ENV = "PYTORCH_NVML_BASED_CUDA_CHECK"
FIRST_STEP_ENV = "BENCH_FIRST_STEP_FILE"  # where python -m benchmarks.first_step writes the time of the first step
EPOCH_VARIANTS = ("plain", "plain-fused", "lossbench", "conventional")
SECTIONS = (*EPOCH_VARIANTS, "startup", "memory", "overhead", "sweep", "gpu")
DEFAULT_SECTIONS = (*EPOCH_VARIANTS, "startup", "memory", "overhead", "gpu")
DEFAULT_BATCH = {"linear": 64, "mlp": 128, "cnn": 128}
GPU_MODELS, GPU_BATCH = ("mlp", "cnn"), 512
# The issues' targets. Each holds only at its model's batch size, on full data (never in --smoke).
OVERHEAD_TARGET = {("mlp", 128): 1.0, ("linear", 64): 1.0}  # lossbench / plain (default kernels)  <=
SPEEDUP_TARGET = {("mlp", 128): 4.0, ("linear", 64): 5.0}  # conventional / lossbench  >=
STARTUP_TARGET = 1.5  # first training step / bare import  <=
MEMORY_TARGET_MB = 2048.0  # peak RSS of one job  <=
JOB_OVERHEAD_TARGET_S = 0.5  # one job's wall time outside its training epochs, in a warm process  <=
SWEEP_TARGET = 0.5  # the README's sweep: after / before wall time  <=
# The README's 30-job sweep, as typed; the benchmark adds one epoch, the data and where to record.
SWEEP_AS_TYPED = ["-m", "loss=mse,mae,bce,ce,hinge", "optimizer=adam,sgd", "seed=0,1,2"]
# "Before" without --before-rev: today's code with the old defaults (one job at a time, default kernels).
SWEEP_BEFORE_OVERRIDES = ["hydra/launcher=basic", "optimizer.fused=false"]
SMOKE_DATA = {"n_train": 1200, "n_test": 300}
SMOKE_OVERRIDES = ["data.val_size=200", "data.train_eval_size=200", "data.eval_batch_size=100"]


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
    threads: int = 1
    workers: list[int] = field(default_factory=lambda: [0])
    data_overrides: list[str] = field(default_factory=list)
    smoke: bool = False
    before_rev: str | None = None  # git revision whose code is the sweep's "before"; None: SWEEP_BEFORE_OVERRIDES
    profile: str | None = None  # folder for cProfile dumps of the lossbench variant

    def batch_of(self, model: str) -> int:
        return self.batch.get(model, DEFAULT_BATCH.get(model, 64))

    def overrides(self, model: str, batch: int, epochs: int, tmp: Path, accelerator: str = "cpu") -> list[str]:
        """The real config's overrides for one timed run (progress bar off, MLflow into ``tmp``)."""
        return [
            f"data={self.data}",
            f"data.root={self.root}",
            "data.download=false",
            f"model={model}",
            f"data.batch_size={batch}",
            f"trainer.max_epochs={epochs}",
            f"trainer.accelerator={accelerator}",
            "trainer.enable_progress_bar=false",
            f"threads={self.threads}",
            f"tracking.uri=sqlite:///{tmp}/mlflow.db",
            f"tracking.checkpoint_dir={tmp}/ckpt",
            "analysis.figures=false",
            *self.data_overrides,
        ]

    def job_overrides(self, model: str, tmp: Path, name: str) -> list[str]:
        """One real one-epoch job, as a user launches it (figures on, like the default config)."""
        return [
            f"data={self.data}",
            f"data.root={self.root}",
            "data.download=false",
            f"model={model}",
            f"data.batch_size={self.batch_of(model)}",
            "trainer.max_epochs=1",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
            f"threads={self.threads}",
            f"tracking.uri=sqlite:///{tmp}/mlflow.db",
            f"tracking.checkpoint_dir={tmp}/ckpt",
            f"hydra.run.dir={tmp}/outputs/{name}",
            *self.data_overrides,
        ]
