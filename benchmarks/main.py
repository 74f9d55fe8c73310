"""python -m benchmarks [--smoke] — run the sections, print the table, write every raw number as JSON.

Every variant runs at the same torch thread count (``--threads``, default 1). ``--smoke`` runs on tiny
generated data (tests/idx.py's writer), in process, once, and checks nothing about speed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import jobs
from benchmarks.children import pool_rounds, run_variant, schedule
from benchmarks.epochs import child
from benchmarks.settings import (
    DEFAULT_SECTIONS,
    GPU_BATCH,
    GPU_MODELS,
    JOB_OVERHEAD_TARGET_S,
    MEMORY_TARGET_MB,
    OVERHEAD_TARGET,
    SECTIONS,
    SMOKE_DATA,
    SMOKE_OVERRIDES,
    SPEEDUP_TARGET,
    STARTUP_TARGET,
    SWEEP_TARGET,
    Settings,
)
from benchmarks.table import machine_info, ratios, table
from lossbench.shipped import data_yaml, downloadable


def write_tiny(root: Path, data: str, n_train: int, n_test: int) -> Path:
    """The tests' learnable MNIST-format data (tests/idx.py) where conf/data/<data>.yaml reads it, for --smoke."""
    from tests.idx import RAW_FILES, write_mnist_family

    source = data_yaml(data).source
    if list(source.files.train) != list(RAW_FILES[True]) or not source.folder.endswith("/raw"):
        raise SystemExit(f"--smoke writes MNIST's idx files: data={data} reads other files; use an MNIST-format --data")
    return write_mnist_family(root, source.folder.split("/")[0], n_train=n_train, n_test=n_test)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny generated data, 1 epoch, 1 repetition, in process; checks nothing about speed",
    )
    p.add_argument(
        "--out", default="bench-results/bench.json", help="JSON file for every raw number (default %(default)s)"
    )
    p.add_argument("--models", default="linear,mlp", help="comma-separated models (default %(default)s)")
    p.add_argument(
        "--batch",
        default="",
        help="model=batch overrides, e.g. mlp=256 (default linear=64, mlp=128: the targets' batches)",
    )
    p.add_argument("--epochs", type=int, default=None, help="measured epochs after the warm-up (default 3; smoke 1)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up epochs, not measured (default 1; smoke 0)")
    p.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="child runs of plain, plain-fused and lossbench, alternated, epochs pooled (default 2; smoke 1)",
    )
    p.add_argument(
        "--before-rev",
        default=None,
        help="git revision whose code is the sweep's 'before' (default: this checkout "
        "with hydra/launcher=basic optimizer.fused=false)",
    )
    p.add_argument(
        "--reps",
        type=int,
        default=None,
        help="start-up and per-job overhead repetitions, median taken (default 3; smoke 1)",
    )
    p.add_argument(
        "--only", default="", help=f"comma-separated sections of: {', '.join(SECTIONS)} (default all but sweep)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for every variant (default %(default)s: see docs/benchmark.md)",
    )
    p.add_argument(
        "--workers", default="0", help="DataLoader workers of the conventional pipeline, comma-separated (default 0)"
    )
    p.add_argument("--data", default="fashion_mnist", choices=downloadable(), help="data config (default %(default)s)")
    p.add_argument(
        "--root", default=os.environ.get("LOSSBENCH_DATA", "data"), help="data.root (default $LOSSBENCH_DATA or ./data)"
    )
    p.add_argument(
        "--isolation",
        choices=("subprocess", "inprocess"),
        default=None,
        help="where variants run (default subprocess; smoke inprocess)",
    )
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
    sections, settings = checked(args)
    isolation = args.isolation or ("inprocess" if args.smoke else "subprocess")
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="lossbench-bench-"))
    if args.smoke:
        settings.root = str(write_tiny(tmp / "data", settings.data, **SMOKE_DATA))
        settings.data_overrides = list(SMOKE_OVERRIDES)
    result: dict[str, Any] = {
        "command": shlex.join([sys.executable, "-m", "benchmarks", *(sys.argv[1:] if argv is None else argv)]),
        "settings": {**vars(settings), "isolation": isolation, "sections": sections},
        "machine": machine_info(settings.threads),
        "targets": targets(),
        "variants": [],
    }
    try:
        measure(result, sections, settings, tmp, isolation)
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


def checked(args: argparse.Namespace) -> tuple[list[str], Settings]:
    """The sections to run and the settings, from the command line; a mistake ends the program before anything runs."""
    sections = [s.strip() for s in args.only.split(",") if s.strip()] or list(DEFAULT_SECTIONS)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"--only: unknown section {unknown[0]!r}; use {', '.join(SECTIONS)}")
    if args.threads < 1:
        raise SystemExit("--threads must be at least 1")
    settings = Settings(
        data=args.data,
        root=str(Path(args.root).expanduser().resolve()),
        models=[m.strip() for m in args.models.split(",") if m.strip()],
        batch={k: int(v) for k, v in (item.split("=") for item in args.batch.split(",") if item.strip())},
        warmup=args.warmup if args.warmup is not None else (0 if args.smoke else 1),
        epochs=args.epochs if args.epochs is not None else (1 if args.smoke else 3),
        reps=args.reps if args.reps is not None else (1 if args.smoke else 3),
        before_rev=args.before_rev,
        rounds=max(1, args.rounds if args.rounds is not None else (1 if args.smoke else 2)),
        threads=args.threads,
        workers=[int(w) for w in args.workers.split(",") if w.strip()],
        smoke=args.smoke,
        profile=str(Path(args.profile).resolve()) if args.profile else None,
    )
    if settings.profile:
        Path(settings.profile).mkdir(parents=True, exist_ok=True)
    folder = data_yaml(settings.data).source.folder  # where conf/data/<data>.yaml reads its files under data.root
    if not args.smoke and not (Path(settings.root) / folder).is_dir():
        raise SystemExit(f"no {settings.data} under {settings.root}: pass --root (the folder holding {folder}/)")
    return sections, settings


def targets() -> dict[str, Any]:
    """The issues' targets, as the result file states them."""
    return {
        "lossbench_over_plain_max": {f"{m}@{b}": t for (m, b), t in OVERHEAD_TARGET.items()},
        "conventional_over_lossbench_min": {f"{m}@{b}": t for (m, b), t in SPEEDUP_TARGET.items()},
        "startup_ratio_max": STARTUP_TARGET,
        "memory_mb_max": MEMORY_TARGET_MB,
        "job_overhead_s_max": JOB_OVERHEAD_TARGET_S,
        "sweep_after_over_before_max": SWEEP_TARGET,
    }


def measure(result: dict[str, Any], sections: list[str], settings: Settings, tmp: Path, isolation: str) -> None:
    """Run the sections in order, each adding its numbers to ``result``."""
    models = settings.models
    runs = [(m, settings.batch_of(m)) for m in models]
    for variant, workers, round_ in schedule(sections, settings):
        progress(
            f"{variant}{f' (workers={workers})' if variant == 'conventional' else ''}"
            f"{f' round {round_ + 1}' if variant != 'conventional' and settings.rounds > 1 else ''}: {', '.join(f'{m}@{b}' for m, b in runs)}"
        )
        result["variants"].append(run_variant(variant, runs, settings, tmp, isolation, workers))
    result["variants"] = pool_rounds(result["variants"])
    job_model = "mlp" if "mlp" in models else models[0]
    if "startup" in sections:
        progress(f"start-up: bare import x{settings.reps}, lossbench jobs ({job_model})")
        s = jobs.measure_startup(settings, tmp, job_model)
        s["pass"] = None if settings.smoke else s["ratio"] <= STARTUP_TARGET
        result["startup"] = s
    if "memory" in sections:
        m = jobs.measure_memory(settings, tmp, job_model, result.get("startup"))
        m["pass"] = None if settings.smoke else m["max_rss_mb"] <= MEMORY_TARGET_MB
        result["memory"] = m
    if "overhead" in sections:
        progress(f"per-job overhead: 1 + {settings.reps} one-epoch jobs ({job_model}) in one process")
        o = run_variant("overhead", [(job_model, settings.batch_of(job_model))], settings, tmp, isolation)
        o["pass"] = jobs.overhead_verdict(o, settings.smoke)
        result["overhead"] = o
    if "sweep" in sections:
        progress("sweep: the README's 30 jobs, 1 epoch, before then after (minutes)")
        result["sweep"] = jobs.measure_sweep(settings, tmp)
    if "gpu" in sections:
        result["gpu"] = measure_gpu(result, settings, tmp, isolation)


def measure_gpu(result: dict[str, Any], settings: Settings, tmp: Path, isolation: str) -> dict[str, Any]:
    """lossbench and the plain loops on the GPU (their variants join ``result``), or why it was skipped."""
    if not jobs.gpu_present():
        return {"skipped": "no CUDA device on this machine"}
    progress("gpu: lossbench and plain, mlp and cnn at batch 512")
    gpu_runs = [(m, GPU_BATCH) for m in GPU_MODELS]
    found = [
        run_variant(v, gpu_runs, settings, tmp, isolation, accelerator="gpu")
        for v in ("plain", "plain-fused", "lossbench")
    ]
    skipped = next((f["skipped"] for f in found if "skipped" in f), None)
    if skipped:
        return {"skipped": skipped}
    result["variants"].extend(found)
    return {"runs": [{"variant": f["label"], **r} for f in found for r in f["runs"]]}


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
