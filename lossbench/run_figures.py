"""A run's figures, drawn in a background thread while the run finishes: off the critical path.

The learning curves start as soon as training ends (the tests, metric logging and config artifacts
proceed meanwhile); the confusion matrix follows once the test has produced it. ``record()`` is called
at the very end of the run: it waits for both and logs them as the run's artifacts (a drawing error is
raised there). In a long-lived sweep worker (:func:`finish_in_background`, lossbench.workers) ``record()``
returns at once and the same thread logs the figures after the job has returned, while the worker's
next job starts. The interpreter finishes that thread's work before the process exits (concurrent.futures
joins its threads); :func:`finish_pending` waits for it explicitly.
Matplotlib's object API (lossbench.plots) keeps no global state, so one drawing thread is safe.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from lossbench.analysis import Curves

log = logging.getLogger("lossbench")
FIGURES_ERROR_TAG = "lossbench.figures_error"
_background: list[bool] = []  # non-empty in a process that finishes figures after its jobs return
_pending: list[RunFigures] = []


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
        _pending.pop(0).pool.shutdown(wait=True)


class RunFigures:
    """Learning curves now, a confusion matrix later, both drawn one after the other in one thread."""

    def __init__(self, folder: Path, title: str, history: Curves, summary: dict, selected_by: str):
        from lossbench import plots  # matplotlib: imported after training, not before the first step

        self.plots, self.folder, self.title = plots, Path(folder), title
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lossbench-figures")
        self.logging: Future | None = None  # logging the figures after the job (finish_in_background)
        onset, selected = summary.get("summary/onset_epoch"), summary.get("summary/selected_epoch")
        self.futures: list[Future] = [
            self.pool.submit(
                plots.learning_curves,
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
                self.pool.submit(
                    self.plots.confusion_matrix,
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
            try:
                figures = self.paths()
            finally:
                self.pool.shutdown(wait=True)
            for figure in figures:
                tracker.log_artifact(run_id, figure, "figures")
            return
        self.logging = self.pool.submit(self._log_later, tracker, run_id)  # after both drawings: one thread, in order
        self.pool.shutdown(wait=False)
        _pending[:] = [p for p in _pending if not p.logging.done()] + [self]

    def _log_later(self, tracker, run_id: str) -> None:
        try:
            for figure in self.paths():
                tracker.log_artifact(run_id, figure, "figures")
        except Exception as e:  # the run itself is recorded and FINISHED: say so on it, do not fail the worker
            log.warning("run %s: its figures were not recorded: %s: %s", run_id, type(e).__name__, e)
            tracker.set_tags(run_id, {FIGURES_ERROR_TAG: f"{type(e).__name__}: {e}"[:500]})
