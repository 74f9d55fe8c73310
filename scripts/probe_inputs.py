"""Issue 18's probe: bad overrides against ``python -m lossbench.train``, as a new user would type them.

    python scripts/probe_inputs.py [--data-root /work/runs12/data] [--only seed=-1 ...]

Each override runs on Fashion-MNIST (2,000 training images, one epoch) with its own fresh SQLite
store. Prints a Markdown table: override, exit code, seconds to answer, whether torch was imported
before the answer, the one ``lossbench: error:`` line (or the last line of stderr), whether a
traceback reached the terminal, and the runs left in the store. "disk full" points
``tracking.checkpoint_dir`` at a 64 KiB tmpfs (needs root; reported as skipped otherwise).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DISK_FULL = "disk full while checkpointing"
PROBES: list[str] = [
    # issue 18's table
    "model.net.in_shape=[1,10,10]",
    "data.num_classes=3",
    "checkpoint.monitor=val/bogus",
    "seed=-1",
    "optimizer.lr=inf",
    DISK_FULL,
    # the others it names: bad types, ranges, NaN lr, unknown noise kind, empty experiment name, dangerous _target_s,
    # missing or wrong data root, dead or unsupported tracking URI
    "optimizer.lr=fast",
    "data.batch_size=0",
    "trainer.max_epochs=-1",
    "optimizer.lr=nan",
    "data.label_noise.kind=pairwise",
    "data.label_noise.rate=1.5",
    "tracking.experiment=''",
    "loss.criterion._target_=os.system",
    "model.net._target_=subprocess.Popen",
    "data.root=/nonexistent data.download=false",
    "data.root={tmp}/empty data.download=true",
    "tracking.uri=http://127.0.0.1:9",
    "tracking.uri=ftp://example.org/x",
    "loss=nosuchloss",
    "no_such_key=1",
    "data.val_size=1.5",
    "threads=0",
    "model=mlp model.net.dropout=1.2",
    "early_stopping.enabled=true early_stopping.monitor=val/bogus",
    "checkpoint.monitor=val/acc checkpoint.mode=min",
    "trainer.accelerator=gpu",
    "loss=bce loss.target=index",
    "+loss.criterion.reduction=none",
    "optimizer.betas=[0.9,2]",
]
HEAVY = ("torch", "pytorch_lightning", "mlflow")


def probe(override: str, data_root: str, work: Path) -> dict:
    work.mkdir(parents=True)
    store = work / "mlflow.db"
    checkpoints = work / "checkpoints"
    mounted = False
    if override == DISK_FULL:
        checkpoints.mkdir()
        if (
            shutil.which("mount") is None
            or subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(checkpoints)], capture_output=True
            ).returncode
            != 0
        ):
            return {"override": override, "skipped": "cannot mount a tmpfs here (needs root)"}
        mounted = True
    args = [
        "data=fashion_mnist",
        f"data.root={data_root}",
        "data.train_size=2000",
        "trainer.max_epochs=1",
        f"tracking.uri=sqlite:///{store}",
        f"tracking.checkpoint_dir={checkpoints}",
    ]
    if override != DISK_FULL:
        args += override.format(tmp=work).split()
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "lossbench.train", *args],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        if mounted:
            subprocess.run(["umount", str(checkpoints)], check=False)
    seconds = time.monotonic() - started
    lines = done.stderr.splitlines()
    imported = {line.split("|")[-1].strip().split(".")[0] for line in lines if line.startswith("import time:")}
    stderr = [line for line in lines if not line.startswith("import time:")]
    errors = [line for line in stderr if line.startswith("lossbench: error:")]
    answer = (
        errors[0]
        if len(errors) == 1
        else (f"{len(errors)} error lines: " if errors else "") + (stderr[-1] if stderr else "(nothing)")
    )
    return {
        "override": override,
        "code": done.returncode,
        "seconds": seconds,
        "torch": "torch" in imported,
        "answer": answer,
        "traceback": "Traceback" in done.stderr + done.stdout,
        "runs": runs_in(store),
    }


def runs_in(store: Path) -> str:
    if not store.exists():
        return "no store"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    found = client.get_experiment_by_name("lossbench")
    runs = [] if found is None else client.search_runs([found.experiment_id])
    return ", ".join(f"{r.info.status}" for r in runs) or "none"


def table(rows: list[dict]) -> str:
    out = [
        "| override | exit | seconds | torch imported | the one line | traceback | runs in the store |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "skipped" in r:
            out.append(f"| `{r['override']}` | skipped | | | {r['skipped']} | | |")
            continue
        answer = r["answer"].replace("|", "\\|")
        out.append(
            f"| `{r['override']}` | {r['code']} | {r['seconds']:.1f} | {'yes' if r['torch'] else 'no'} | {answer} | "
            f"{'YES' if r['traceback'] else 'no'} | {r['runs']} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="/work/runs12/data", help="a torchvision root holding FashionMNIST/raw/")
    parser.add_argument("--only", nargs="*", help="run just these overrides (as listed in PROBES)")
    options = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lossbench-probe-") as tmp:
        for i, override in enumerate(options.only or PROBES):
            rows.append(probe(override, options.data_root, Path(tmp) / f"p{i}"))
            print(
                f"{i + 1}/{len(options.only or PROBES)} {override}: exit {rows[-1].get('code')}",
                file=sys.stderr,
                flush=True,
            )
    print(table(rows))


if __name__ == "__main__":
    main()
