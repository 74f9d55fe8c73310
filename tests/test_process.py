"""The process-level machinery behind a job's speed: the drawing process (lossbench.run_figures) and imports with
the collector paused (lossbench.process). Each test checks what a user would see go wrong without it."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_plots import assert_png, curves

from lossbench import run_figures
from lossbench.process import import_heavy


def test_the_drawing_process_draws_in_order_and_reports_errors(tmp_path: Path) -> None:
    drawer = run_figures.drawer()
    assert drawer.process.pid != os.getpid() and drawer.alive()
    first = drawer.submit("learning_curves", curves(), tmp_path / "curves.png", title="ce / adam")
    bad = drawer.submit("confusion_matrix", np.ones((2, 3)), tmp_path / "bad.png")
    last = drawer.submit("confusion_matrix", np.eye(3) * 5, tmp_path / "cm.png", class_names=["a", "b", "c"])
    assert first.result(timeout=60) == tmp_path / "curves.png"
    assert_png(tmp_path / "curves.png", min_width=1000)
    with pytest.raises(RuntimeError, match="ValueError: a confusion matrix must be square"):
        bad.result(timeout=60)
    assert last.result(timeout=60) == tmp_path / "cm.png"  # one failed drawing does not stop the next
    assert_png(tmp_path / "cm.png")
    assert run_figures.drawer() is drawer  # one drawing process per lossbench process, reused


def test_a_dead_drawing_process_fails_what_waits_and_is_replaced(tmp_path: Path) -> None:
    drawer = run_figures.drawer()
    drawer.process.kill()
    drawer.process.wait(timeout=30)
    waiting = drawer.submit("learning_curves", curves(), tmp_path / "never.png")
    with pytest.raises(RuntimeError, match="drawing process"):
        waiting.result(timeout=60)
    assert not (tmp_path / "never.png").exists()
    fresh = run_figures.drawer()
    assert fresh is not drawer and fresh.alive()
    assert fresh.submit("learning_curves", curves(), tmp_path / "again.png").result(timeout=60).is_file()


def test_run_figures_are_drawn_outside_the_run_process_and_logged(tmp_path: Path) -> None:
    """RunFigures -> PNGs written by the drawer; a sweep worker's mode logs them after the job (record returns first)."""

    class Tracker:
        def __init__(self):
            self.logged: list[tuple[str, Path, str]] = []

        def log_artifact(self, run_id, path, artifact_path=None):
            self.logged.append((run_id, Path(path), artifact_path))

    history = curves()
    summary = {"summary/selected_epoch": 2, "summary/onset_epoch": 3}
    tracker = Tracker()
    with run_figures.in_background():
        figures = run_figures.RunFigures(tmp_path, "mae / sgd", history, summary, "val/acc")
        figures.add_confusion(torch.eye(10, dtype=torch.long) * 7, [str(i) for i in range(10)])
        figures.record(tracker, "run-1")
    assert sorted(p.name for _, p, _ in tracker.logged) == ["confusion_matrix.png", "learning_curves.png"]
    assert {(r, a) for r, _, a in tracker.logged} == {("run-1", "figures")}
    for _, path, _ in tracker.logged:
        assert_png(path)


def test_import_heavy_restores_the_collector_and_freezes_what_it_imported() -> None:
    """A process that imports torch & co. this way keeps collecting garbage afterwards; the imported objects are
    frozen (out of every later full collection). Checked in a fresh interpreter, where nothing is imported yet."""
    code = (
        "import gc, sys\n"
        "from lossbench.process import import_heavy\n"
        "before = gc.get_freeze_count()\n"
        "import_heavy('json', 'email.message')\n"
        "assert 'email.message' in sys.modules\n"
        "assert gc.isenabled()\n"
        "assert gc.get_freeze_count() > before, (before, gc.get_freeze_count())\n"
        "frozen = gc.get_freeze_count()\n"
        "import_heavy('email.message')  # nothing left to import: nothing more is frozen\n"
        "assert gc.get_freeze_count() == frozen\n"
        "gc.disable(); import_heavy('decimal'); assert not gc.isenabled()  # a paused collector stays paused\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_import_heavy_restores_the_collector_when_an_import_fails() -> None:
    assert gc.isenabled()
    with pytest.raises(ModuleNotFoundError):
        import_heavy("lossbench_no_such_module")
    assert gc.isenabled()


@pytest.mark.parametrize("uri", ["sqlite:///runs.db", "postgresql://u@localhost/db", "http://127.0.0.1:5000"])
def test_every_module_a_job_imports_first_exists(uri: str) -> None:
    """import_heavy(*job_modules(uri)) runs before every job: a module renamed by a library upgrade would stop
    every run, so each named module must import (the store's one matches the URI's kind)."""
    import importlib

    from lossbench.job import job_modules

    modules = job_modules(uri)
    assert modules[-1].endswith("rest_store" if uri.startswith("http") else "sqlalchemy_store")
    for module in modules:
        importlib.import_module(module)


def test_the_drawing_process_keeps_its_answers_apart_from_what_libraries_print(tmp_path: Path, capfd) -> None:
    """A C library writing to file descriptor 1 would corrupt the pickled answers and leave the run waiting:
    the drawing process sends whatever is printed, from Python or C, to stderr."""
    script = (
        "import os, runpy\n"
        "import lossbench.plots as plots\n"
        "def noisy(path):\n"
        "    os.write(1, b'written by C code\\n')\n"
        "    print('printed by Python', flush=True)\n"
        "    return path\n"
        "plots.noisy = noisy\n"
        "runpy.run_module('lossbench.run_figures', run_name='__main__')\n"
    )
    drawer = run_figures.Drawer([sys.executable, "-c", script])
    assert drawer.submit("noisy", tmp_path / "a.png").result(timeout=60) == tmp_path / "a.png"
    assert drawer.submit("noisy", tmp_path / "b.png").result(timeout=60) == tmp_path / "b.png"
    drawer.process.stdin.close()
    drawer.process.wait(timeout=30)
    printed = capfd.readouterr().err
    assert printed.count("written by C code") == 2 and printed.count("printed by Python") == 2
