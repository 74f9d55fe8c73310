"""A run's figures, drawn by a separate drawing process while the run finishes: off the critical path.

Matplotlib is pure Python for most of a drawing (~0.6 CPU-s for a run's two figures here). Drawn in a
thread of the training process, it held the interpreter lock against the training loop's many small
torch calls: one-epoch mlp jobs spent 0.84 s outside their epochs instead of 0.27 s, and the next
epoch ran 0.6 s slower. So a process draws them: :func:`drawer` starts it once per lossbench process
(a single run, a sweep worker) and reuses it for every run.

The learning curves are queued as soon as training ends (the tests, metric logging and config artifacts
proceed meanwhile); the confusion matrix follows once the test has produced it. ``record()`` is called
at the very end of the run: it waits for both and logs them as the run's artifacts (a drawing error is
raised there). In a long-lived sweep worker (:func:`finish_in_background`, lossbench.workers) ``record()``
returns at once and a logging thread (which only waits and uploads) logs the figures after the job has
returned, while the worker's next job starts; :func:`finish_pending` waits for it.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from lossbench.analysis import Curves
from lossbench.names import FIGURES_ERROR_TAG, SUMMARY_ONSET_EPOCH, SUMMARY_SELECTED_EPOCH

log = logging.getLogger("lossbench")
_background: list[bool] = []  # non-empty in a process that finishes figures after its jobs return
_pending: list[Future] = []  # figures being logged after their job returned
_drawer: list[Drawer] = []  # this process's drawing process (lossbench.run_figures.Drawer)
_logging: list[ThreadPoolExecutor] = []  # the thread logging a worker's figures after its jobs return


def finish_in_background() -> None:
    """Declare this process a sweep worker whose runs' figures may be logged after each job returns."""
    _background[:] = [True]


@contextmanager
def in_background():
    """Within: runs' figures are finished in the background, as in a sweep worker; on leaving, they are
    waited for and this process's previous mode is back (the benchmark's per-job overhead section)."""
    previous = list(_background)
    finish_in_background()
    try:
        yield
    finally:
        finish_pending()
        _background[:] = previous


def finish_pending() -> None:
    """Wait until every run's figures drawn in the background are logged (a worker's exit)."""
    while _pending:
        _pending.pop(0).result()


class Drawer:
    """A child process (``python -m lossbench.run_figures``) running lossbench.plots functions sent to it, in
    order; each call answers a Future. A fresh interpreter: no fork of a process holding torch's threads, and
    no re-run of the caller's ``__main__`` as multiprocessing's spawn would do."""

    def __init__(self, command: list[str] | None = None):  # command: the tests' stand-in for this module
        self.process = subprocess.Popen(
            command or [sys.executable, "-m", "lossbench.run_figures"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.lock = threading.Lock()
        self.waiting: deque[Future] = deque()
        threading.Thread(target=self._answers, name="lossbench-drawer", daemon=True).start()

    def alive(self) -> bool:
        return self.process.poll() is None

    def submit(self, function: str, *args, **kwargs) -> Future:
        """Queue ``lossbench.plots.<function>(*args, **kwargs)``; its Future holds what it returns or raised."""
        future: Future = Future()
        with self.lock:
            self.waiting.append(future)
            try:
                pickle.dump((function, args, kwargs), self.process.stdin)
                self.process.stdin.flush()
            except OSError as e:  # the drawing process is gone: _answers fails what is still waiting
                self.waiting.remove(future)
                future.set_exception(RuntimeError(f"the drawing process is gone: {e}"))
        return future

    def _answers(self) -> None:
        while True:
            try:
                ok, value = pickle.load(self.process.stdout)
            except Exception:  # EOF (the process ended), or an unreadable answer: nothing more can be trusted
                break
            with self.lock:
                future = self.waiting.popleft()
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        if self.alive():
            self.process.kill()
        code = self.process.wait()
        with self.lock:
            for future in self.waiting:
                future.set_exception(RuntimeError(f"the drawing process exited (code {code}) before drawing"))
            self.waiting.clear()


def drawer() -> Drawer:
    """This process's drawing process, started on first use and reused; one that died is replaced."""
    if _drawer and _drawer[0].alive():
        return _drawer[0]
    _drawer[:] = [Drawer()]
    return _drawer[0]


def _serve() -> None:
    """The drawing process: answer each pickled ``(function, args, kwargs)`` from stdin on stdout, until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group: the run decides what happens
    requests, answers = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever a library prints to stdout, in Python or C, goes to stderr, not into the answers
    sys.stdout = sys.stderr
    from lossbench import plots  # matplotlib: only the drawing process imports it, never the training one

    while True:
        try:
            function, args, kwargs = pickle.load(requests)
        except EOFError:
            return
        try:
            answer = (True, getattr(plots, function)(*args, **kwargs))
        except Exception as e:
            answer = (False, RuntimeError(f"{type(e).__name__}: {e}"))
        pickle.dump(answer, answers)
        answers.flush()


class RunFigures:
    """Learning curves now, a confusion matrix later, both drawn in this process's drawing process."""

    def __init__(self, folder: Path, title: str, history: Curves, summary: dict, selected_by: str):
        self.folder, self.title = Path(folder), title
        onset, selected = summary.get(SUMMARY_ONSET_EPOCH), summary.get(SUMMARY_SELECTED_EPOCH)
        self.futures: list[Future] = [
            drawer().submit(
                "learning_curves",
                history,
                self.folder / "learning_curves.png",
                title=title,
                onset_epoch=None if onset is None else int(onset),
                selected_epoch=None if selected is None else int(selected),
                selected_by=selected_by,
            )
        ]

    def add_confusion(self, matrix, class_names=None) -> None:
        """Queue the test's confusion matrix (selected checkpoint), labelled with the data set's class names;
        None (no test confusion) adds nothing."""
        if matrix is not None:
            self.futures.append(
                drawer().submit(
                    "confusion_matrix",
                    matrix.numpy(),
                    self.folder / "confusion_matrix.png",
                    class_names=class_names,
                    title=f"{self.title} — test, selected checkpoint",
                )
            )

    def paths(self) -> list[Path]:
        """The figures' paths once all are written; the first drawing error is raised here."""
        return [f.result() for f in self.futures]

    def record(self, tracker, run_id: str) -> None:
        """Log the figures as the run's artifacts once drawn: now, or after the job in a sweep worker."""
        if not _background:
            for figure in self.paths():
                tracker.log_artifact(run_id, figure, "figures")
            return
        if not _logging:
            _logging.append(ThreadPoolExecutor(1, thread_name_prefix="lossbench-figures"))
        _pending[:] = [f for f in _pending if not f.done()] + [_logging[0].submit(self._log_later, tracker, run_id)]

    def _log_later(self, tracker, run_id: str) -> None:
        try:
            for figure in self.paths():
                tracker.log_artifact(run_id, figure, "figures")
        except Exception as e:  # the run itself is recorded and FINISHED: say so on it, do not fail the worker
            log.warning("run %s: its figures were not recorded: %s: %s", run_id, type(e).__name__, e)
            tracker.set_tags(run_id, {FIGURES_ERROR_TAG: f"{type(e).__name__}: {e}"[:500]})


if __name__ == "__main__":
    _serve()
