"""What the numbers say: ratios against the targets, the printed table, the machine they came from."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any

from benchmarks.settings import (
    JOB_OVERHEAD_TARGET_S,
    MEMORY_TARGET_MB,
    OVERHEAD_TARGET,
    SPEEDUP_TARGET,
    STARTUP_TARGET,
    SWEEP_TARGET,
)
from lossbench.job import available_cores


def ratios(variants: list[dict[str, Any]], smoke: bool) -> list[dict[str, Any]]:
    """Per (model, batch): each variant's median against plain (and plain-fused), conventional's against lossbench, with targets."""
    rows = []
    by = {(v["label"], r["model"], r["batch"]): r["median_epoch_s"] for v in variants if "runs" in v for r in v["runs"]}
    fastest = {
        (v["label"], r["model"], r["batch"]): r["min_epoch_s"] for v in variants if "runs" in v for r in v["runs"]
    }
    for v in variants:
        for r in v.get("runs", []):
            key, med = (r["model"], r["batch"]), r["median_epoch_s"]
            suffix = "-gpu" if v["accelerator"] == "gpu" else ""
            plain_label, own_label = "plain" + suffix, "lossbench" + suffix
            plain, own, fused = (
                by.get((plain_label, *key)),
                by.get((own_label, *key)),
                by.get(("plain-fused" + suffix, *key)),
            )
            plain_min, own_min = fastest.get((plain_label, *key)), fastest.get((own_label, *key))
            row = {
                "variant": v["label"],
                "model": key[0],
                "batch": key[1],
                "median_epoch_s": med,
                "min_epoch_s": r["min_epoch_s"],
                "vs_plain": med / plain if plain else None,
                "vs_plain_fused": med / fused if fused else None,
                "conventional_over_lossbench": None,
                "target": None,
                "pass": None,
                # Other load only ever adds time: the fastest epochs are the steadier comparison on a busy machine.
                "vs_plain_min": r["min_epoch_s"] / plain_min if plain_min else None,
                "conventional_over_lossbench_min": r["min_epoch_s"] / own_min
                if v["variant"] == "conventional" and own_min
                else None,
            }
            if v["variant"] == "lossbench" and v["accelerator"] == "cpu" and key in OVERHEAD_TARGET:
                row["target"] = f"<= {OVERHEAD_TARGET[key]}x plain"
                row["pass"] = None if smoke or row["vs_plain"] is None else row["vs_plain"] <= OVERHEAD_TARGET[key]
            if v["variant"] == "conventional" and own:
                row["conventional_over_lossbench"] = med / own
                if key in SPEEDUP_TARGET:
                    row["target"] = f">= {SPEEDUP_TARGET[key]}x lossbench"
                    row["pass"] = None if smoke else row["conventional_over_lossbench"] >= SPEEDUP_TARGET[key]
            rows.append(row)
    return rows


def verdict(passed: bool | None, smoke: bool) -> str:
    return "n/a (smoke)" if smoke else "-" if passed is None else "PASS" if passed else "FAIL"


def table(result: dict[str, Any]) -> str:
    smoke = result["settings"]["smoke"]
    fmt = "{:<18} {:<7} {:>5} {:>15} {:>9} {:>10} {:>10} {:<20} {}"
    lines = (
        [
            fmt.format(
                "variant", "model", "batch", "median s/epoch", "vs plain", "vs fused", "conv/lb", "target", "result"
            )
        ]
        if result["ratios"]
        else []
    )
    for r in result["ratios"]:
        lines.append(
            fmt.format(
                r["variant"],
                r["model"],
                r["batch"],
                f"{r['median_epoch_s']:.3f}",
                "" if r["vs_plain"] is None else f"{r['vs_plain']:.2f}x",
                "" if r.get("vs_plain_fused") is None else f"{r['vs_plain_fused']:.2f}x",
                "" if r["conventional_over_lossbench"] is None else f"{r['conventional_over_lossbench']:.2f}x",
                r["target"] or "",
                verdict(r["pass"], smoke) if r["target"] else "",
            )
        )
    s = result.get("startup")
    if s:
        lines.append(
            f"start-up ({s['model']}): first training step {s['first_step_median_s']:.2f} s vs bare import "
            f"{s['bare_import_median_s']:.2f} s = {s['ratio']:.2f}x   target <= {STARTUP_TARGET}x   {verdict(s['pass'], smoke)}"
        )
    m = result.get("memory")
    if m:
        lines.append(
            f"peak memory ({m['model']}, one job): {m['max_rss_mb']:.0f} MB   target <= {MEMORY_TARGET_MB:.0f} MB   {verdict(m['pass'], smoke)}"
        )
    o = result.get("overhead")
    if o:
        lines.append(
            f"per-job overhead ({o['model']}, 1 epoch, warm process): {o['overhead_s_median']:.2f} s outside the epochs "
            f"(setup {o['setup_s_median']:.2f}, tests {o['tests_s_median']:.2f}, record {o['record_s_median']:.2f}; "
            f"epoch {o['epochs_s_median']:.2f} s while the previous job's figures are drawn)   "
            f"target <= {JOB_OVERHEAD_TARGET_S} s   {verdict(o['pass'], smoke)}"
        )
    w = result.get("sweep")
    if w:
        for when in ("before", "after"):
            s = w[when]
            lines.append(
                f"sweep {when:<6} ({s['jobs']} jobs, 1 epoch, {s['code']}): wall {s['wall_s']:.1f} s, "
                f"threads/job {','.join(map(str, s['threads']))}, epoch median {s['epoch_s_median']:.2f} s"
            )
        lines.append(
            f"sweep after / before: {w['ratio']:.2f}x   target <= {SWEEP_TARGET}x   {verdict(w['pass'], smoke)}"
        )
    g = result.get("gpu")
    if g and "skipped" in g:
        lines.append(f"gpu: skipped: {g['skipped']}")
    if result["settings"].get("profile"):
        lines.append(
            "NOTE: --profile was on: the lossbench rows ran under cProfile and are slower than they really are"
        )
    lines.append(
        f"threads={result['machine']['threads']} cores={result['machine']['cores']} "
        f"epochs={result['settings']['epochs']} (+{result['settings']['warmup']} warm-up) x {result['settings']['rounds']} rounds (plain, plain-fused, lossbench) isolation={result['settings']['isolation']} "
        f"load avg before/after {result['machine']['load_before'][0]:.2f}/{result['machine']['load_after'][0]:.2f}"
    )
    return "\n".join(line.rstrip() for line in lines)


def machine_info(threads: int) -> dict[str, Any]:
    from importlib import metadata

    versions = {}
    for name in ("torch", "torchvision", "pytorch-lightning", "hydra-core", "mlflow", "torchmetrics"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "",
        )
    return {
        "cores": available_cores(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "threads": threads,
        "versions": versions,
        "pythondontwritebytecode": os.environ.get("PYTHONDONTWRITEBYTECODE"),
        "load_before": list(os.getloadavg()),
    }
