"""Which code made the numbers a report counts, and where one report mixes code: its "Code" section and the
``code`` entry of ``summary.json``.

Read from the tags every run carries (:mod:`lossbench.provenance`): the code (commit, modified or not, the content
hash ``lossbench.code_version``), the libraries and the device. A group whose runs were made by different code (or
by clean and modified trees of one commit) or with different library versions gets a warning line; so does a
report whose groups were made by different code, since its comparisons then compare code as well as losses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lossbench import provenance
from lossbench.names import (
    CODE_DIFF_ARTIFACT,
    CODE_VERSION_TAG,
    COMMAND_TAG,
    COMMIT_TAG,
    CPU_TAG,
    DIFF_TAG,
    GPU_TAG,
    LIBRARY_TAGS,
    LOSSBENCH_VERSION_TAG,
    MODIFIED_TAG,
)
from lossbench.report.aggregate import Findings
from lossbench.report.runs import RunRecord

SHOWN_NAMES = {"python": "Python", "lightning": "Lightning", "hydra": "Hydra", "mlflow": "MLflow"}


def libraries_of(run: RunRecord) -> str:
    """``Python 3.11.7, torch 2.15.0, …`` as the run recorded them; ``unknown`` for runs recorded before."""
    found = [(SHOWN_NAMES.get(name, name), run.tags.get(tag)) for name, tag in LIBRARY_TAGS.items()]
    return ", ".join(f"{name} {version}" for name, version in found if version) or "unknown"


def device_of(run: RunRecord) -> str:
    """``<GPU name> (GPU)`` or ``<CPU model> (CPU)``; ``unknown`` for runs recorded before."""
    gpu, cpu = run.tags.get(GPU_TAG), run.tags.get(CPU_TAG)
    if gpu and gpu != "none":
        return f"{gpu} (GPU)"
    return f"{cpu} (CPU)" if cpu else "unknown"


def _counts(runs: Sequence[RunRecord], key) -> list[tuple[str, list[RunRecord]]]:
    """(value, its runs) of ``key(run)``, most runs first (ties in order of appearance)."""
    by: dict[str, list[RunRecord]] = {}
    for run in runs:
        by.setdefault(key(run), []).append(run)
    return sorted(by.items(), key=lambda item: -len(item[1]))


def _runs(n: int) -> str:
    return f"{n} run{'s' * (n != 1)}"


def _listing(groups: list[tuple[str, list[RunRecord]]]) -> str:
    return ", ".join(f"{value}: {_runs(len(runs))}" for value, runs in groups)


def warnings(findings: Findings) -> list[dict[str, Any]]:
    """One warning per group that mixes code (or clean and modified trees) or library versions, and one for the
    whole report when its counted runs come from more than one code version: ``{"group", "mixes", "text"}``."""
    found = []
    codes = _counts(findings.selection.finished, lambda r: provenance.label(r.tags))
    if len(codes) > 1:
        text = f"the runs counted here were made by {len(codes)} code versions ({_listing(codes)}): groups made by different code are compared as if they were not"
        found.append({"group": None, "mixes": "code", "text": text})
    for row in findings.rows:
        codes = _counts(row.runs, lambda r: provenance.label(r.tags))
        if len(codes) > 1:
            trees = {r.tags.get(MODIFIED_TAG) for r in row.runs} >= {"true", "false"}
            kind = "code versions, clean and modified trees" if trees else "code versions"
            text = f"**{row.label}** mixes {len(codes)} {kind}: {_listing(codes)}"
            found.append({"group": row.label, "mixes": "code", "text": text})
        libraries = _counts(row.runs, libraries_of)
        if len(libraries) > 1:
            text = f"**{row.label}** mixes library versions: {_listing(libraries)}"
            found.append({"group": row.label, "mixes": "libraries", "text": text})
    return found


def section(findings: Findings) -> list[str]:
    """The report's "Code" section: the code versions, libraries and devices of the runs counted, then warnings."""
    runs = findings.selection.finished
    if not runs:
        return []
    codes = _counts(runs, lambda r: provenance.label(r.tags))
    lines = [
        f"The {len(runs)} runs counted were made by {len(codes)} code version{'s' * (len(codes) != 1)} (commit of "
        "lossbench's source; `+modified`: its code differed from the commit, and the patch is the run's artifact "
        f"`{CODE_DIFF_ARTIFACT}`; each run's tag `{COMMAND_TAG}` makes it again):",
        "\n".join(f"- `{value}`: {_runs(len(members))}" for value, members in codes),
        "Libraries: "
        + "; ".join(f"{value} ({_runs(len(members))})" for value, members in _counts(runs, libraries_of))
        + ". Devices: "
        + "; ".join(f"{value} ({_runs(len(members))})" for value, members in _counts(runs, device_of))
        + ".",
    ]
    mixed = warnings(findings)
    if mixed:
        lines.append("\n".join(f"- **Warning**: {w['text']}." for w in mixed))
    return ["## Code", *lines]


def summary(findings: Findings) -> dict[str, Any]:
    """The ``code`` entry of summary.json: the same facts as :func:`section`, as data."""
    runs = findings.selection.finished
    versions = []
    for value, members in _counts(runs, lambda r: provenance.label(r.tags)):
        tags = members[0].tags
        versions.append(
            {
                "label": value,
                "commit": tags.get(COMMIT_TAG),
                "modified": {"true": True, "false": False}.get(tags.get(MODIFIED_TAG, "")),
                "diff_sha256": tags.get(DIFF_TAG),
                "code_version": tags.get(CODE_VERSION_TAG),
                "lossbench_version": tags.get(LOSSBENCH_VERSION_TAG),
                "runs": len(members),
                "run_ids": [r.run_id for r in members],
            }
        )
    return {
        "versions": versions,
        "libraries": [{"versions": value, "runs": len(members)} for value, members in _counts(runs, libraries_of)],
        "devices": [{"device": value, "runs": len(members)} for value, members in _counts(runs, device_of)],
        "warnings": warnings(findings),
    }
