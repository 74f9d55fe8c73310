"""A run's figures, drawn in a background thread while the run finishes: off the critical path.

The learning curves start as soon as training ends (the tests, metric logging and config artifacts
proceed meanwhile); the confusion matrix follows once the test has produced it. ``wait()`` is called
at the very end of the run and returns the PNG paths to record, or raises what drawing raised.
Matplotlib's object API (lossbench.plots) keeps no global state, so one drawing thread is safe.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from lossbench.analysis import Curves


class RunFigures:
    """Learning curves now, a confusion matrix later, both drawn one after the other in one thread."""

    def __init__(self, folder: Path, title: str, history: Curves, summary: dict, selected_by: str):
        from lossbench import plots  # matplotlib: imported after training, not before the first step

        self.plots, self.folder, self.title = plots, Path(folder), title
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lossbench-figures")
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

    def wait(self) -> list[Path]:
        """The figures' paths once all are written; the first drawing error is raised here."""
        try:
            return [f.result() for f in self.futures]
        finally:
            self.pool.shutdown(wait=True)
