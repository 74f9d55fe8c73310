"""Every run says which code made it (commit, modified or not, the patch), with what and where, and how to make it
again; a re-run sweep reuses a FINISHED run only as ``tracking.reuse`` says. Real git repositories in tmp folders,
real runs and sweeps into real SQLite stores; expected values computed here with git, hashlib and importlib."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ENV, compose, read_runs, tiny_overrides, train_runs

from lossbench import provenance
from lossbench.config import config_hash

REPO = Path(__file__).resolve().parents[1]
GIT_USER = ["-c", "user.name=test", "-c", "user.email=test@example.org"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *GIT_USER, "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def make_checkout(root: Path) -> Path:
    """A git repository shaped like lossbench's: code in lossbench/, hydra_plugins/lossbench/, conf/; a report
    module, a README and tests beside it; one commit."""
    files = {
        "lossbench/__init__.py": "",
        "lossbench/losses.py": "def mae(x):\n    return abs(x)\n",
        "lossbench/report/content.py": "TITLE = 'report'\n",
        "hydra_plugins/lossbench/sweeper.py": "SKIP = True\n",
        "conf/config.yaml": "seed: 0\n",
        "conf/loss/mae.yaml": "name: mae\n",
        "README.md": "# lossbench\n",
        "tests/test_x.py": "def test(): pass\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "first")
    return root


def areas(root: Path) -> list[tuple[str, Path]]:
    return [
        ("lossbench", root / "lossbench"),
        ("hydra_plugins", root / "hydra_plugins/lossbench"),
        ("conf", root / "conf"),
    ]


def code(root: Path) -> provenance.Code:
    return provenance.code_of(root, areas(root), "0.1.0")


def test_a_clean_checkout_names_its_commit_and_a_docs_or_report_change_is_not_a_code_change(tmp_path: Path):
    root = make_checkout(tmp_path / "repo")
    clean = code(root)
    assert clean.commit == git(root, "rev-parse", "HEAD").strip() and len(clean.commit) == 40
    assert (
        clean.modified is False and clean.diff == "" and clean.branch == git(root, "branch", "--show-current").strip()
    )
    assert clean.tags()["lossbench.git.modified"] == "false" and "lossbench.git.diff_sha256" not in clean.tags()
    assert clean.tags()["mlflow.source.git.commit"] == clean.commit and clean.label == clean.commit[:7]

    (root / "README.md").write_text("# lossbench, reworded\n")
    (root / "lossbench/report/content.py").write_text("TITLE = 'a better report'\n")
    (root / "tests/test_y.py").write_text("def test(): pass\n")
    unchanged = code(root)
    assert unchanged.modified is False and unchanged.code_version == clean.code_version, (
        "docs, tests and the report make no run's numbers"
    )
    git(root, "commit", "-qam", "docs")
    assert code(root).commit != clean.commit and code(root).code_version == clean.code_version


def test_a_modified_tree_says_so_and_its_patch_rebuilds_the_code_from_the_commit(tmp_path: Path):
    root = make_checkout(tmp_path / "repo")
    clean = code(root)
    (root / "lossbench/losses.py").write_text("def mae(x):\n    return 2 * abs(x)\n")
    (root / "conf/loss/gce.yaml").write_text("name: gce\nq: 0.7\n")  # untracked: a new loss
    modified = code(root)
    assert modified.commit == clean.commit and modified.modified is True
    assert modified.code_version != clean.code_version
    assert modified.tags()["lossbench.git.modified"] == "true"
    assert modified.tags()["lossbench.git.diff_sha256"] == hashlib.sha256(modified.diff.encode()).hexdigest()
    assert modified.label == f"{clean.commit[:7]}+modified (diff {modified.diff_sha256[:8]})"
    assert "conf/loss/gce.yaml" in modified.diff and "lossbench/losses.py" in modified.diff

    # The commit plus the patch is the code that ran: applied to a fresh clone, it gives the same content hash.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True)
    (tmp_path / "code.diff").write_text(modified.diff)
    git(clone, "apply", str(tmp_path / "code.diff"))
    assert code(clone).code_version == modified.code_version and code(clone).diff == modified.diff

    (root / "lossbench/losses.py").write_text("def mae(x):\n    return abs(x)\n")  # back as committed
    (root / "conf/loss/gce.yaml").unlink()
    assert code(root) == clean


def test_an_installed_copy_has_no_commit_but_the_same_code_version(tmp_path: Path):
    root = make_checkout(tmp_path / "repo")
    installed = tmp_path / "site-packages"
    shutil.copytree(root / "lossbench", installed / "lossbench")
    shutil.copytree(root / "conf", installed / "lossbench" / "conf")  # a wheel puts conf inside the package
    shutil.copytree(root / "hydra_plugins", installed / "hydra_plugins")
    wheel = provenance.code_of(
        installed,
        [
            ("lossbench", installed / "lossbench"),
            ("hydra_plugins", installed / "hydra_plugins/lossbench"),
            ("conf", installed / "lossbench/conf"),
        ],
        "0.1.0",
    )
    assert wheel.commit is None and wheel.modified is None and wheel.code_version == code(root).code_version
    assert wheel.tags()["lossbench.git.commit"] == "unknown (not a git checkout)"
    assert wheel.tags()["lossbench.git.modified"] == "unknown" and "mlflow.source.git.commit" not in wheel.tags()
    plain = tmp_path / "plain"
    shutil.copytree(root, plain, ignore=shutil.ignore_patterns(".git"))  # not a git checkout at all
    assert code(plain).commit is None and code(plain).code_version == code(root).code_version


def test_the_reuse_policy_both_ways():
    newest_first = ["other", None, "this", "this"]
    assert provenance.reused(newest_first, "this", "same_code") == 2, "the newest run of this very code"
    assert provenance.reused(["other", None], "this", "same_code") is None, "other or unknown code: run again"
    assert provenance.reused(newest_first, "this", "any_code") == 0, "any code: the newest"
    assert provenance.reused([], "this", "any_code") is None


def test_a_run_records_its_code_libraries_device_and_mlflow_source(tiny_mnist: Path, tmp_path: Path):
    from lossbench.train import run

    store = tmp_path / "mlflow.db"
    run(compose(*tiny_overrides(tiny_mnist, store, "trainer.max_epochs=1")))
    (recorded,) = read_runs(store)[1]
    tags = recorded.data.tags
    assert tags["lossbench.git.commit"] == git(REPO, "rev-parse", "HEAD").strip()
    status = git(REPO, "status", "--porcelain", "-uall", "--", "lossbench", "hydra_plugins/lossbench", "conf")
    changed = [
        line[3:]
        for line in status.splitlines()
        if line[3:].endswith((".py", ".yaml")) and not line[3:].startswith("lossbench/report/")
    ]
    assert tags["lossbench.git.modified"] == ("true" if changed else "false")
    assert tags["mlflow.source.git.commit"] == tags["lossbench.git.commit"]
    assert tags["mlflow.source.name"] == "lossbench.train" and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.user"] and tags["lossbench.version"] == importlib.metadata.version("lossbench")
    for library, distribution in [("torch", "torch"), ("lightning", "pytorch-lightning"), ("mlflow", "mlflow")]:
        assert tags[f"lossbench.lib.{library}"] == importlib.metadata.version(distribution)
    assert tags["lossbench.lib.python"] == ".".join(map(str, sys.version_info[:3]))
    cpu = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    assert tags["lossbench.device.cpu"] == cpu.split(":", 1)[1].strip() and tags["lossbench.device.gpu"] == "none"
    assert tags["lossbench.command"].startswith("unknown (not started from the command line")
    if changed:  # the patch is on the run, and its hash is the tag
        client = read_runs(store)[0]
        diff = Path(client.download_artifacts(recorded.info.run_id, "code.diff", str(tmp_path)))
        assert hashlib.sha256(diff.read_bytes()).hexdigest() == tags["lossbench.git.diff_sha256"]


# ------------------------------------------------------------------------ sweeps of a copy of lossbench


def copy_of_lossbench(root: Path) -> Path:
    """lossbench's code and config in a new git repository (one commit): a checkout a test may change."""
    for folder in ("lossbench", "hydra_plugins", "conf"):
        shutil.copytree(REPO / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "lossbench as it is")
    return root


def sweep_with(src: Path, work: Path, data: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python -m lossbench.train -m`` of the copy in ``src`` (first on the path), jobs in turn, from ``work``."""
    env = {**ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(src), ENV.get("PYTHONPATH")]))}
    store = work / "mlflow.db"
    args = [sys.executable, "-m", "lossbench.train", "-m", *tiny_overrides(data, store, "trainer.max_epochs=1")]
    args += ["hydra/launcher=basic", "loss=ce,mae", *overrides]
    done = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_a_rerun_sweep_reuses_runs_of_the_same_code_only_unless_told(tiny_mnist: Path, tmp_path: Path):
    src, work = copy_of_lossbench(tmp_path / "src"), tmp_path / "work"
    work.mkdir()
    store = work / "mlflow.db"
    first = sweep_with(src, work, tiny_mnist)
    assert "2 finished, 0 failed, 0 killed, 0 skipped" in first.stdout
    _, runs = train_runs(store)
    commit = git(src, "rev-parse", "HEAD").strip()
    assert {(r.data.tags["lossbench.git.commit"], r.data.tags["lossbench.git.modified"]) for r in runs} == {
        (commit, "false")
    }
    for r in runs:  # the command of a sweep's job composes the very config of the run, outside the sweep
        words = shlex.split(r.data.tags["lossbench.command"])
        assert words[:3] == ["python", "-m", "lossbench.train"] and "-m" not in words[3:]
        assert config_hash(compose(*words[3:])) == r.data.tags["config_hash"]
    parent = [r for r in read_runs(store)[1] if r.data.tags.get("lossbench.kind") == "sweep"][0]
    assert parent.data.tags["lossbench.git.commit"] == commit
    assert parent.data.tags["lossbench.command"].startswith("python -m lossbench.train -m ")

    same = sweep_with(src, work, tiny_mnist)
    assert "0 finished, 0 failed, 0 killed, 2 skipped" in same.stdout, "same code: the finished runs stand"

    losses = src / "lossbench" / "losses.py"
    losses.write_text(losses.read_text() + "\n# a change to the code of the losses, not to their config\n")
    changed = sweep_with(src, work, tiny_mnist)
    assert "2 finished, 0 failed, 0 killed, 0 skipped" in changed.stdout, "other code: trained again"
    assert "0 reused (tracking.reuse=any_code), 2 run again" in changed.stdout + changed.stderr
    _, runs = train_runs(store)
    new = [r for r in runs if r.data.tags["lossbench.git.modified"] == "true"]
    assert len(runs) == 4 and len(new) == 2 and {r.data.tags["lossbench.git.commit"] for r in new} == {commit}

    losses.write_text(losses.read_text() + "# and another\n")
    relaxed = sweep_with(src, work, tiny_mnist, "tracking.reuse=any_code")
    assert "0 finished, 0 failed, 0 killed, 2 skipped" in relaxed.stdout, "any_code: whatever code made them"
    assert "2 reused (tracking.reuse=any_code), 0 run again" in relaxed.stdout + relaxed.stderr
    assert len(train_runs(store)[1]) == 4


def test_a_single_run_reuses_a_finished_run_only_of_its_own_code_unless_told(tiny_mnist: Path, tmp_path: Path):
    """The same decision outside a sweep (``tracking.skip_finished=true``): lossbench.phases.open_run, given the
    identity of this config made by this code, or by other code (the code is an input of open_run)."""
    from dataclasses import replace

    from omegaconf import open_dict

    from lossbench import phases
    from lossbench.train import run

    store = tmp_path / "mlflow.db"
    cfg = compose(*tiny_overrides(tiny_mnist, store, "trainer.max_epochs=1", "tracking.skip_finished=true"))
    run(cfg)
    (finished,) = read_runs(store)[1]
    who = phases.identity(cfg)
    assert phases.open_run(cfg.tracking, False, who).run_id == finished.info.run_id, "same code: skipped"

    other = replace(who, code=replace(who.code, code_version="0" * 16))
    fresh = phases.open_run(cfg.tracking, False, other)
    assert not fresh.skipped and fresh.run_id != finished.info.run_id, "other code: a new run"
    fresh.tracker.end(fresh.run_id, "KILLED")
    with open_dict(cfg):
        cfg.tracking.reuse = "any_code"
    reused = phases.open_run(cfg.tracking, False, other)
    assert reused.skipped and reused.run_id == finished.info.run_id, "any_code: the FINISHED run stands"
