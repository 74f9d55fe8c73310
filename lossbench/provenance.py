"""Which code made a run, with which libraries, on which device, and the command that makes it again.

Every run and every sweep's parent run carries these tags (names in :mod:`lossbench.names`):

- **code**: lossbench's version, the commit of its own source tree (the folder holding this package, not the folder
  a user launched from), whether its code differed from that commit (and then the sha256 of the patch, logged on
  the run as ``code.diff``), and :attr:`Code.code_version`: a hash of the *content* of the code that makes a run's
  numbers (:data:`CODE_AREAS`), equal for equal code whether committed, modified or installed as a wheel;
- **libraries**: Python, torch, torchvision, Lightning, Hydra, MLflow, numpy (from the installed distributions:
  nothing is imported to read them);
- **device**: the CPU's model, and on a GPU run the GPU's name, how many the process sees, the driver's and
  CUDA's versions (the torch threads are the run's ``threads`` tag);
- **command**: ``python -m lossbench.train <the job's overrides>``, which composes the same config (the same
  ``config_hash``) outside a sweep too;
- MLflow's own source tags, so its run list fills its "Source", "Version" and "User" columns.

The code is read once per process (:func:`code`, ~10 ms: one ``git status``, a ``git diff`` only when modified, and
~70 small files hashed), before torch is imported; a sweep worker's jobs share it. :func:`reused` is the one
place that decides whether a FINISHED run of the same config makes a job unnecessary (``tracking.reuse``).
"""

from __future__ import annotations

import functools
import getpass
import hashlib
import importlib.metadata
import platform
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossbench.config import ANY_CODE, redact_override
from lossbench.names import (
    CODE_VERSION_TAG,
    COMMAND_TAG,
    COMMIT_TAG,
    CPU_TAG,
    CUDA_TAG,
    DIFF_TAG,
    DRIVER_TAG,
    GIT_BRANCH_TAG,
    GIT_COMMIT_TAG,
    GPU_COUNT_TAG,
    GPU_TAG,
    LIBRARIES,
    LIBRARY_TAGS,
    LOSSBENCH_VERSION_TAG,
    MODIFIED_TAG,
    SOURCE_NAME_TAG,
    SOURCE_TYPE_TAG,
    USER_TAG,
)
from lossbench.paths import conf_dir

PACKAGE = Path(__file__).resolve().parent
NOT_A_CHECKOUT = "unknown (not a git checkout)"
UNKNOWN = "unknown"
TRAIN_COMMAND = "python -m lossbench.train"
SOURCE = "lossbench.train"
"""MLflow's "Source" of a run (``mlflow.source.name``): short, since its run list shows it in a narrow column."""
NO_COMMAND = "unknown (not started from the command line: run() called from Python)"

CODE_AREAS: tuple[tuple[str, str], ...] = (("lossbench", "lossbench"), ("hydra_plugins", "hydra_plugins/lossbench"))
"""The code that makes a run's numbers: (area, its folder relative to the checkout), plus the config folder
(``conf``). The report (``lossbench/report``) only reads what runs recorded, so a change there changes no run's
code; tests, docs and benchmarks are outside. A wheel holds the same files (conf inside the package)."""
NOT_CODE = (
    "lossbench/report",
    "lossbench/claims",
    "lossbench/conf",
    "lossbench/stats.py",
    "lossbench/decisions.py",
)
"""Inside the areas but not a run's code: the report, the claims' verdicts (lossbench.claims: they read what runs
recorded and launch sweeps the ordinary way) and the statistics only they use, and the config folder as a wheel
places it (hashed as conf)."""
SUFFIXES = (".py", ".yaml")


@dataclass(frozen=True)
class Code:
    """The code this process runs: lossbench's version, its commit (None outside a git checkout), branch, whether
    the code differs from the commit (None: unknown), the patch from the commit to it, and its content hash."""

    version: str
    commit: str | None
    branch: str | None
    modified: bool | None
    diff: str
    code_version: str

    @property
    def diff_sha256(self) -> str:
        return hashlib.sha256(self.diff.encode()).hexdigest() if self.modified else ""

    @property
    def label(self) -> str:
        return label(self.tags())

    def tags(self) -> dict[str, str]:
        """The code's tags, MLflow's source tags included."""
        tags = {
            LOSSBENCH_VERSION_TAG: self.version,
            COMMIT_TAG: self.commit or NOT_A_CHECKOUT,
            MODIFIED_TAG: UNKNOWN if self.modified is None else str(self.modified).lower(),
            CODE_VERSION_TAG: self.code_version,
            SOURCE_TYPE_TAG: "LOCAL",
            USER_TAG: user(),
        }
        if self.modified:
            tags[DIFF_TAG] = self.diff_sha256
        if self.commit:
            tags[GIT_COMMIT_TAG] = self.commit
        if self.branch:
            tags[GIT_BRANCH_TAG] = self.branch
        return tags


@functools.cache
def code() -> Code:
    """The code of this process's lossbench, read once (a worker's jobs run the code it imported)."""
    checkout = PACKAGE.parent
    areas = [(name, checkout / folder) for name, folder in CODE_AREAS] + [("conf", conf_dir())]
    return code_of(checkout, areas, package_version())


def code_of(checkout: Path, areas: Sequence[tuple[str, Path]], version: str) -> Code:
    """:class:`Code` of the files under ``areas`` ((name, folder) pairs) in the git checkout ``checkout``; an
    installed package (under site-packages, or no git) has no commit."""
    content = content_hash(areas)
    installed = "site-packages" in checkout.parts or "dist-packages" in checkout.parts
    folders = [str(Path(folder).resolve()) for _, folder in areas]
    status = None if installed else _git(checkout, "status", "--porcelain=v2", "--branch", "-uall", "--", *folders)
    head = dict(line[2:].split(" ", 1) for line in (status or "").splitlines() if line.startswith("# "))
    commit = head.get("branch.oid")
    if status is None or commit in (None, "(initial)"):
        return Code(version, None, None, None, "", content)
    changed = [_status_path(line) for line in status.splitlines() if not line.startswith("#")]
    changed = [path for path in changed if _in_areas(checkout / path, areas)]
    diff = patch(checkout, changed) if changed else ""
    branch = head.get("branch.head")
    return Code(version, commit, None if branch == "(detached)" else branch, bool(changed), diff, content)


def content_hash(areas: Sequence[tuple[str, Path]]) -> str:
    """sha256 (16 hex digits) of every code file's path (relative to its area) and bytes, in a stable order."""
    digest = hashlib.sha256()
    for name, folder in areas:
        for path in sorted(p for p in Path(folder).rglob("*") if p.suffix in SUFFIXES and p.is_file()):
            if _in_areas(path, [(name, folder)]):
                digest.update(f"{name}/{path.relative_to(folder).as_posix()}\0".encode())
                digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _in_areas(path: Path, areas: Sequence[tuple[str, Path]]) -> bool:
    """Whether ``path`` is one of the code files of ``areas`` (a code suffix, not under :data:`NOT_CODE`)."""
    if path.suffix not in SUFFIXES:
        return False
    full = path.resolve()
    for name, folder in areas:
        folder = Path(folder).resolve()
        if full.is_relative_to(folder):
            relative = f"{name}/{full.relative_to(folder).as_posix()}"
            return not any(relative == n or relative.startswith(n + "/") for n in NOT_CODE)
    return False


def _git(checkout: Path, *args: str) -> str | None:
    """git's answer in ``checkout`` (settings that change its output switched off); None when git fails."""
    settings = ["-c", "core.quotepath=off", "-c", "diff.noprefix=false", "-c", "diff.mnemonicPrefix=false"]
    try:
        done = subprocess.run(
            ["git", *settings, "-C", str(checkout), *args], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _status_path(line: str) -> str:
    """The path of one ``git status --porcelain=v2`` entry, relative to ``checkout`` (git was asked from there
    with absolute pathspecs, so it names paths relative to it); a rename's new path."""
    fields = {"1": 8, "2": 9, "u": 10}.get(line[0])
    path = line[2:] if fields is None else line.split(" ", fields)[fields]  # "? path": untracked
    return path.split("\t")[0] if line[0] == "2" else path


def patch(checkout: Path, changed: Sequence[str]) -> str:
    """The patch from the commit to the changed code files (paths relative to ``checkout``, as in the patch): git's
    diff of the tracked ones, then each untracked one as a new file (``git apply`` in ``checkout`` takes it whole)."""
    tracked = _git(checkout, "diff", "--no-color", "--no-ext-diff", "--binary", "--relative", "HEAD", "--", *changed)
    known = set((_git(checkout, "ls-files", "--", *changed) or "").splitlines())
    parts = [tracked or ""]
    for path in changed:
        if path not in known and (checkout / path).is_file():
            lines = (checkout / path).read_text(errors="replace").splitlines()
            parts.append(
                f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n"
                f"@@ -0,0 +1,{len(lines)} @@\n" + "".join(f"+{text}\n" for text in lines)
            )
    return "".join(parts)


# ----------------------------------------------------------------------------------- the rest


def package_version() -> str:
    try:
        return importlib.metadata.version("lossbench")
    except importlib.metadata.PackageNotFoundError:
        return UNKNOWN


@functools.cache
def libraries() -> dict[str, str]:
    """``lossbench.lib.<library>`` tags: the installed versions (read from the distributions, nothing imported)."""
    found = {}
    for name, distribution in LIBRARIES.items():
        try:
            found[LIBRARY_TAGS[name]] = (
                importlib.metadata.version(distribution) if distribution else platform.python_version()
            )
        except importlib.metadata.PackageNotFoundError:
            found[LIBRARY_TAGS[name]] = "not installed"
    return found


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or UNKNOWN


def user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container's user without a passwd entry
        return UNKNOWN


def device_tags(device: Any = None) -> dict[str, str]:
    """The device of this attempt: the CPU's model always; the GPU's name, count, driver and CUDA versions when
    ``device`` (the torch.device a run trains on) is a GPU. torch is read from ``sys.modules``, never imported."""
    tags = {CPU_TAG: cpu_model()}
    torch = sys.modules.get("torch")
    if torch is None:
        return tags
    tags[CUDA_TAG] = str(torch.version.cuda or "none")
    if device is None or getattr(device, "type", "cpu") != "cuda":
        tags[GPU_TAG] = "none"
        return tags
    tags[GPU_TAG] = torch.cuda.get_device_name(device)
    tags[GPU_COUNT_TAG] = str(torch.cuda.device_count())
    tags[DRIVER_TAG] = nvidia_driver()
    return tags


@functools.cache
def nvidia_driver() -> str:
    """The NVIDIA driver's version (``nvidia-smi``); ``unknown`` where nvidia-smi is missing or fails (a container)."""
    try:
        answer = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    return answer.stdout.splitlines()[0].strip() if answer.returncode == 0 and answer.stdout.strip() else UNKNOWN


def command(overrides: Sequence[str] | None, sweep: bool = False) -> str:
    """``python -m lossbench.train [-m] <overrides>``, each override redacted like a param and quoted for a shell;
    a job's own overrides make the same config (the same ``config_hash``) outside its sweep."""
    if overrides is None:
        return NO_COMMAND
    words = [redact_override(o) for o in overrides]
    return " ".join([TRAIN_COMMAND, *(["-m"] if sweep else []), *(shlex.quote(w) for w in words)])


def job_overrides() -> list[str] | None:
    """This job's command-line overrides (Hydra's, a sweep job's own included); None outside Hydra."""
    from hydra.core.hydra_config import HydraConfig  # Hydra: a run started from Python has no Hydra runtime

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else None


def run_tags(made_by: Code, command_line: str) -> dict[str, str]:
    """What a new run (or a sweep's parent run) records about how it was made: its code, libraries and command
    (a run's device comes per attempt: :func:`device_tags`)."""
    return {**made_by.tags(), **libraries(), COMMAND_TAG: command_line, SOURCE_NAME_TAG: SOURCE}


def label(tags: Mapping[str, str]) -> str:
    """Which code made a run, from its tags, in a few words: ``445f8af``, ``445f8af+modified (diff 1a2b3c4d)``,
    ``lossbench 0.1.0, not a git checkout (code 1cad0a17)``, or ``unknown`` for runs recorded before these tags."""
    commit, modified = tags.get(COMMIT_TAG), tags.get(MODIFIED_TAG)
    if not commit:
        return "unknown (recorded before lossbench tagged its code)"
    if commit == NOT_A_CHECKOUT:
        return f"lossbench {tags.get(LOSSBENCH_VERSION_TAG, UNKNOWN)}, not a git checkout (code {tags.get(CODE_VERSION_TAG, UNKNOWN)[:8]})"
    return f"{commit[:7]}+modified (diff {tags.get(DIFF_TAG, '')[:8]})" if modified == "true" else commit[:7]


# --------------------------------------------------------------------------------- reuse policy


def reused(made_by: Sequence[str | None], current: str, policy: str) -> int | None:
    """Which FINISHED run of a job's config makes the job unnecessary: the index in ``made_by`` (the runs' code
    versions, newest first) of the run to reuse, or None to run the job.

    ``same_code`` (the default): the newest run made by this very code (``current``); runs of other or unknown
    code (recorded before lossbench tagged its code) are trained again. ``any_code``: the newest run, whatever
    code made it (the caller says so when it was other code).
    """
    if policy == ANY_CODE:
        return 0 if made_by else None
    return next((i for i, version in enumerate(made_by) if version == current), None)


def code_version_of(tags: Mapping[str, str]) -> str | None:
    """The code version a run recorded (None for runs recorded before lossbench tagged it)."""
    return tags.get(CODE_VERSION_TAG) or None
