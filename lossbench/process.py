"""What a lossbench process does about the interpreter's cyclic garbage collector: three measured costs.

Importing torch, Lightning, MLflow and torchvision builds ~600k long-lived objects, and CPython's
collector keeps walking all of them:

- **during the imports** it runs full collections over everything imported so far: the modules a job
  needs took 10.7 s to import with the collector on and 7.4 s with it paused (:func:`import_heavy`);
- **after them**, every full collection walks them again. joblib's loky workers (the parallel sweeps' before
  lossbench.pool) ran one after every job (``gc.collect()`` when psutil is absent): 0.40-0.47 s per job over
  the imported objects, 0.10 s once they are frozen (:func:`gc.freeze` moves them out of the collector's
  sight; they live as long as the process anyway);
- **at exit** the interpreter's final collection walks them once more (~2.5 s per process):
  :func:`_leave_quickly`, registered when this module is imported (lossbench.train imports it before
  any heavy library, so it runs after their own exit handlers).

Figures from ``/tmp``-style scripts on this 2-core machine; ``python -m benchmarks`` measures their effect
on start-up, per-job overhead and the sweep.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import os
import sys


def import_heavy(*modules: str) -> None:
    """Import ``modules`` (those not imported yet) with the cyclic collector paused, then freeze what exists.

    Imports build long-lived objects and little garbage, so nothing of note is kept by pausing; a process
    that has them all already (a warm worker, a test session) changes nothing.
    """
    missing = [m for m in modules if m not in sys.modules]
    if not missing:
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        for module in missing:
            importlib.import_module(module)
    finally:
        if enabled:
            gc.enable()
    gc.freeze()


def _leave_quickly() -> None:
    """The process's last exit handler (registered first, so it runs after every library's own): skip the
    interpreter's final full garbage collection over everything torch, Lightning and MLflow built (~2.5 s
    per process here, for each run and each sweep worker) by freezing it, and keep the teardown quiet
    (objects left to the OS make triton's bindings list "leaks" on stderr). The exit code is untouched."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    gc.freeze()
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stderr.fileno())


atexit.register(_leave_quickly)
