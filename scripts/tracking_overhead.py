#!/usr/bin/env python
"""What share of a run's wall time goes to tracking calls over HTTP?

Starts PostgreSQL and an MLflow server on loopback (tests/servers.py, as the integration test does),
runs one real training job against it through ``tracking.uri=http://...``, and times every
MlflowClient call the job makes (outermost calls only). Prints the share; the target is <= 10%.

    python scripts/tracking_overhead.py [--epochs 5] [--model linear] [--root data] [--data fashion_mnist]
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def instrument_client() -> dict[str, float]:
    """Wrap MlflowClient's public methods to add up their wall time (outermost calls only)."""
    from mlflow.tracking import MlflowClient

    spent = {"seconds": 0.0, "calls": 0, "depth": 0}

    def timed(method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            if spent["depth"]:
                return method(*args, **kwargs)
            spent["depth"] += 1
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent["seconds"] += time.perf_counter() - start
                spent["calls"] += 1
                spent["depth"] -= 1

        return wrapper

    for name in dir(MlflowClient):
        if not name.startswith("_") and callable(getattr(MlflowClient, name)):
            setattr(MlflowClient, name, timed(getattr(MlflowClient, name)))
    return spent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--model", default="linear")
    parser.add_argument("--data", default="fashion_mnist")
    parser.add_argument("--root", default=str(REPO / "data"))
    args = parser.parse_args(argv)

    from conftest import compose
    from servers import start_mlflow_server, start_postgres

    from lossbench.train import run

    with tempfile.TemporaryDirectory() as tmp, start_postgres() as pg, start_mlflow_server(pg, Path(tmp)) as server:
        spent = instrument_client()
        cfg = compose(
            f"data={args.data}",
            f"data.root={args.root}",
            f"model={args.model}",
            f"trainer.max_epochs={args.epochs}",
            f"tracking.uri={server.uri}",
            "tracking.experiment=overhead",
            f"tracking.checkpoint_dir={tmp}/ckpt",
            "trainer.enable_progress_bar=false",
        )
        start = time.perf_counter()
        run(cfg)
        wall = time.perf_counter() - start
    share = spent["seconds"] / wall
    print(
        f"tracking over HTTP: {spent['calls']} client calls took {spent['seconds']:.2f} s of a {wall:.2f} s run "
        f"({args.model}, {args.epochs} epochs) = {share:.1%} (target <= 10%)"
    )
    return 0 if share <= 0.10 else 1


if __name__ == "__main__":
    sys.exit(main())
