"""Losses that misbehave on purpose, for fault-injection tests (tests/test_reliability.py).

Chosen purely by ``_target_``, like any user's loss, e.g.::

    python -m lossbench.train loss=ce loss.name=nanafter \
        loss.criterion._target_=faults.NaNAfter +loss.criterion.after=12

Subprocesses need ``PYTHONPATH=<repo>/tests`` to import this module.

Both are cross-entropy on raw logits and class indices; they differ from it only in training mode
(``self.training``), so validation and test passes stay finite and fast.
"""

from __future__ import annotations

import faulthandler
import math
import os
import signal
import time

import torch
from torch import Tensor, nn

if os.environ.get("LOSSBENCH_FAULTS_STACKS"):  # debugging a hung run: kill -USR1 <pid> prints every thread's stack
    faulthandler.register(signal.SIGUSR1, all_threads=True)


class NaNAfter(nn.Module):
    r"""Cross-entropy that returns NaN (or ``value``) from its ``after``-th training call on.

    .. math::
        \ell(z, y) = \begin{cases} -\log \mathrm{softmax}(z)_y & \text{call} < \text{after} \\
                                   \text{value} & \text{otherwise} \end{cases}

    The non-finite value is ``loss * 0 + value``: it keeps a gradient path back to the weights, so it
    flows into backward as a real divergence would.

    Shape:
        - logits: :math:`(N, C)`
        - target: :math:`(N)` class indices
        - output: scalar
    """

    def __init__(self, after: int = 12, value: float = math.nan):
        super().__init__()
        self.after, self.value = int(after), float(value)
        self.calls = 0  # training-mode calls so far

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        loss = nn.functional.cross_entropy(logits, target)
        if not self.training:
            return loss
        self.calls += 1
        if self.calls >= self.after:
            return loss * 0 + self.value  # NaN/inf with a gradient path back to the weights
        return loss


class SlowCE(nn.Module):
    r"""Cross-entropy that sleeps ``delay_s`` seconds per training call: a run long enough to interrupt.

    .. math::
        \ell(z, y) = -\log \mathrm{softmax}(z)_y

    Shape:
        - logits: :math:`(N, C)`
        - target: :math:`(N)` class indices
        - output: scalar
    """

    def __init__(self, delay_s: float = 0.1):
        super().__init__()
        self.delay_s = float(delay_s)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.training:
            time.sleep(self.delay_s)
        return nn.functional.cross_entropy(logits, target)


class MemoryHog(SlowCE):
    r"""Slow cross-entropy (:class:`SlowCE`) that keeps ``mb_per_call`` more MiB of memory each training call,
    written to so that it is resident: a job whose memory grows until something stops it.

    .. math::
        \ell(z, y) = -\log \mathrm{softmax}(z)_y

    Shape:
        - logits: :math:`(N, C)`
        - target: :math:`(N)` class indices
        - output: scalar
    """

    def __init__(self, delay_s: float = 0.1, mb_per_call: int = 50):
        super().__init__(delay_s)
        self.mb_per_call = int(mb_per_call)
        self.kept: list[Tensor] = []

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        if self.training and self.mb_per_call:
            self.kept.append(torch.ones(self.mb_per_call * 2**20, dtype=torch.uint8))
        return super().forward(logits, target)


# ----------------------------------------------------------------------------- start together


def train_at_signal(ready: str, go: str, overrides: list[str], timeout_s: float = 300) -> None:
    """Import everything, say so in ``ready``, wait until ``go`` exists, then run ``python -m lossbench.train``.

    Several processes started this way reach the tracking store within milliseconds of each other
    (plain ``Popen`` spreads them over the seconds their imports take), so a race on a new store
    shows every time instead of now and then.
    """
    import runpy
    import sys
    from pathlib import Path

    import mlflow.tracking  # noqa: F401  the imports lossbench.train.run would do, done before the barrier
    import pytorch_lightning  # noqa: F401
    import torch  # noqa: F401

    import lossbench.callbacks  # noqa: F401
    import lossbench.data  # noqa: F401
    import lossbench.store  # noqa: F401
    import lossbench.train  # noqa: F401

    Path(ready).write_text("ready\n")
    deadline = time.monotonic() + timeout_s
    while not Path(go).exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"faults: {go} did not appear within {timeout_s} s")
        time.sleep(0.005)
    sys.argv = ["lossbench.train", *overrides]
    runpy.run_module("lossbench.train", run_name="__main__", alter_sys=True)


if __name__ == "__main__":  # python -m faults READY_FILE GO_FILE override...
    import sys

    train_at_signal(sys.argv[1], sys.argv[2], sys.argv[3:])
