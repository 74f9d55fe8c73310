"""Reliability: faults injected for real, and what the MLflow store and the checkpoints say afterwards.

No mocks: a loss that turns NaN (tests/faults.py), real SIGINT/SIGTERM/SIGKILL sent to real
``python -m lossbench.train`` processes, four processes creating one SQLite store at once, a closed
port and a server socket that never answers, secrets on the command line. docs/reliability.md has
the table of trials and outcomes.

``LOSSBENCH_TRIALS=N`` repeats each fault of the slow tests N times inside one test (default 1).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import EPOCH_METRICS, FINAL_METRICS, compose, read_runs, tiny_overrides

TESTS = Path(__file__).resolve().parent
TRIALS = max(1, int(os.environ.get("LOSSBENCH_TRIALS", "1")))

HTTP_VARS = [
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
]

# 600 training images, 100 held out for validation, batch 64: 8 optimizer steps per epoch.
NAN_AT_CALL_12 = [
    "loss=ce",
    "loss.name=nanafter",
    "loss.criterion._target_=faults.NaNAfter",
    "+loss.criterion.after=12",
]
SLOW = [
    "loss=ce",
    "loss.name=slowce",
    "loss.criterion._target_=faults.SlowCE",
    "+loss.criterion.delay_s=0.15",  # ~1.3 s an epoch: the poll below must see epoch 2 before epoch 5 ends
    "trainer.max_epochs=5",
    "threads=1",
]


def cli_env() -> dict[str, str]:
    """The environment of a user's shell: faults importable, no tracking settings leaking in from tests."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI" and k not in HTTP_VARS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def train(*overrides: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lossbench.train", *overrides],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def default_sigint() -> None:
    """In the child before it starts: Ctrl-C at its default, as in a terminal. Lightning ignores SIGINT for good
    once it has handled one in this pytest process (an in-process interrupt test), and children inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_training(*overrides: str, cwd: Path, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "lossbench.train", *overrides],
            cwd=cwd,
            env=cli_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=default_sigint,
        )


def epochs_of(client, run_id: str, key: str = "val/loss") -> list[int]:
    """The epochs the store holds for a run: MLflow's steps, which are epoch numbers (1, 2, ...)."""
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def epochs_upto(n: int) -> list[int]:
    """Epochs 1 .. n."""
    return list(range(1, n + 1))


def assert_complete_curves(client, run_id: str, epochs: int) -> None:
    """Every per-epoch key has exactly one point per epoch 1..epochs (MLflow's step): nothing missing, nothing twice."""
    for key in EPOCH_METRICS:
        steps = epochs_of(client, run_id, key)
        assert steps == epochs_upto(epochs), f"{key}: steps {steps}"


def start_slow_trial(data_root: Path, work: Path):
    """A fresh folder with its own store, checkpoints and log, and a SlowCE run started in it."""
    work.mkdir()
    store, checkpoints, log = work / "mlflow.db", work / "checkpoints", work / "train.log"
    overrides = tiny_overrides(data_root, store, *SLOW)
    return work, store, checkpoints, log, overrides, start_training(*overrides, cwd=work, log=log)


def wait_for_epochs(
    proc: subprocess.Popen, store: Path, checkpoints: Path, log: Path, epochs: int = 2, timeout: float = 240
) -> str:
    """Poll until the run in ``store`` has ``val/loss`` for ``epochs`` epochs; return its run id.

    The store is read only once the run's checkpoint folder exists: the run exists then, so the
    schema is complete (a reader opening a half-created SQLite store would race on its schema).
    """
    from mlflow.tracking import MlflowClient  # ~2 s to import under MLflow 3: not inside the window it watches

    deadline = time.monotonic() + timeout
    client = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training exited early with {proc.returncode}:\n{log.read_text()[-3000:]}")
        runs_dirs = [d for d in checkpoints.iterdir() if d.is_dir()] if checkpoints.is_dir() else []
        if runs_dirs:
            run_id = runs_dirs[0].name
            if client is None:
                client = MlflowClient(f"sqlite:///{store}")
            if len(epochs_of(client, run_id)) >= epochs:
                return run_id
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"no {epochs} epochs within {timeout} s:\n{log.read_text()[-3000:]}")


def checkpoint(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def assert_finite_weights(ckpt: dict) -> None:
    import torch

    for name, tensor in ckpt["state_dict"].items():
        assert torch.isfinite(tensor).all(), f"non-finite weights in {name}"


# ----------------------------------------------------------------------------- divergence


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_loss_stops_at_once_fails_the_run_and_keeps_the_last_good_checkpoint(
    tiny_mnist: Path, tmp_path: Path, value: str
):
    from lossbench.module import DivergenceError
    from lossbench.train import run

    store = tmp_path / "mlflow.db"
    cfg = compose(
        *tiny_overrides(tiny_mnist, store, *NAN_AT_CALL_12, f"+loss.criterion.value={value}", "trainer.max_epochs=5")
    )
    with pytest.raises(DivergenceError) as raised:
        run(cfg)
    # The 12th training call is the 4th step of epoch 2 (epochs count from 1); global_step counts steps from 0.
    expected = f"diverged: non-finite loss ({value}) at epoch 2 step 11"
    assert str(raised.value) == expected

    client, runs = read_runs(store)
    assert len(runs) == 1
    r = runs[0]
    assert r.info.status == "FAILED", "a diverged run must never look like a success"
    assert r.data.tags["lossbench.failure"] == f"DivergenceError: {expected}"
    assert_complete_curves(client, r.info.run_id, 1)  # epoch 0 only: stopped at once, not epochs later
    assert not any(k.startswith("test") for k in r.data.metrics), "a diverged run must not be tested"

    last = tmp_path / "checkpoints" / r.info.run_id / "last.ckpt"
    assert Path(r.data.tags["lossbench.checkpoint_dir"]) == last.parent
    saved = checkpoint(last)
    assert saved["epoch"] == 0 and saved["global_step"] == 8
    assert [h["epoch"] for h in saved["lossbench_history"]] == [0]
    assert_finite_weights(saved)
    assert saved["lossbench_history"][0]["val/loss"] == pytest.approx(
        client.get_metric_history(r.info.run_id, "val/loss")[0].value
    )


@pytest.mark.slow
def test_cli_divergence_exits_1_with_one_line(tiny_mnist: Path, tmp_path: Path):
    store = tmp_path / "mlflow.db"
    done = train(*tiny_overrides(tiny_mnist, store, *NAN_AT_CALL_12, "trainer.max_epochs=5"), cwd=tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("lossbench: error:")]
    assert errors == ["lossbench: error: diverged: non-finite loss (nan) at epoch 2 step 11"], done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    _, runs = read_runs(store)
    assert [r.info.status for r in runs] == ["FAILED"]


# ----------------------------------------------------------------------------- SIGINT / SIGTERM


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig, resume",
    [(signal.SIGINT, "true"), (signal.SIGTERM, "true"), (signal.SIGTERM, "path")],
    ids=["sigint-resume-true", "sigterm-resume-true", "sigterm-resume-path"],
)
def test_interrupted_run_ends_killed_and_resumes_in_the_same_run(
    tiny_mnist: Path, tmp_path: Path, sig: signal.Signals, resume: str
):
    for trial in range(TRIALS):
        work, store, checkpoints, log, overrides, proc = start_slow_trial(tiny_mnist, tmp_path / f"trial{trial}")
        try:
            run_id = wait_for_epochs(proc, store, checkpoints, log)
            time.sleep(
                0.25
            )  # into epoch 2's training steps; the windows around store writes and checkpoint saves have their own tests below
            proc.send_signal(sig)
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert code != 0, "an interrupted run must not exit 0"

        client, runs = read_runs(store)
        assert [(r.info.run_id, r.info.status) for r in runs] == [(run_id, "KILLED")], log.read_text()[-3000:]
        assert "resume" in runs[0].data.tags["lossbench.failure"]
        last = checkpoints / run_id / "last.ckpt"
        saved = checkpoint(last)
        assert saved["epoch"] >= 1 and saved["epoch"] < 4
        assert_finite_weights(saved)
        # Nothing the checkpoint holds is missing from the store, and no epoch is there twice. (The store
        # may hold one epoch more when the signal lands between best.ckpt and last.ckpt being written:
        # test_interrupt_while_a_checkpoint_is_written_keeps_store_and_last_ckpt_in_step.)
        logged = epochs_of(client, run_id)
        # last.ckpt's "epoch" is Lightning's 0-based index: it holds epochs 1 .. index + 1 (MLflow's steps).
        assert logged in (epochs_upto(saved["epoch"] + 1), epochs_upto(saved["epoch"] + 2)), (logged, saved["epoch"])
        assert_complete_curves(client, run_id, len(logged))

        again = train(*overrides, f"resume={last if resume == 'path' else 'true'}", cwd=work)
        assert again.returncode == 0, again.stderr[-3000:]
        client, runs = read_runs(store)
        assert [(r.info.run_id, r.info.status) for r in runs] == [(run_id, "FINISHED")]
        assert runs[0].data.tags.get("lossbench.failure", "") == ""
        assert_complete_curves(client, run_id, 5)
        for key in FINAL_METRICS:
            assert key in runs[0].data.metrics, key


def signal_on_save(epoch: int):
    """A Lightning callback that sends SIGTERM to its own process while epoch ``epoch``'s first checkpoint is being saved."""
    import pytorch_lightning as pl

    class SignalOnSave(pl.Callback):
        def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
            if trainer.current_epoch == epoch:
                os.kill(os.getpid(), signal.SIGTERM)

    return SignalOnSave()


def test_interrupt_while_a_checkpoint_is_written_keeps_store_and_last_ckpt_in_step(tiny_mnist: Path, tmp_path: Path):
    from lossbench.train import run

    store = tmp_path / "mlflow.db"
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises((KeyboardInterrupt, SystemExit)):
            run(
                compose(*tiny_overrides(tiny_mnist, store, "trainer.max_epochs=3")),
                extra_callbacks=[signal_on_save(epoch=1)],
            )
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    client, [r] = read_runs(store)
    assert r.info.status == "KILLED"
    saved = checkpoint(tmp_path / "checkpoints" / r.info.run_id / "last.ckpt")
    assert saved["epoch"] == 0  # Lightning's index: the checkpoint holds epoch 1
    assert epochs_of(client, r.info.run_id) == [1], "the store holds an epoch that last.ckpt does not"


class SignalAfterWrite:
    """While active, sends SIGTERM to this process the moment EpochLogger's ``n``-th store write returns.

    A profile hook on the main thread only watches for that return (nothing is replaced or mocked):
    it pins the signal to the instant between the store having an epoch and the logger knowing it.
    """

    def __init__(self, n: int):
        self.n, self.seen = n, 0

    def _profile(self, frame, event, arg) -> None:
        if (
            event == "return"
            and frame.f_code.co_name == "log_batch"
            and frame.f_back is not None
            and frame.f_back.f_code.co_name == "flush"
            and frame.f_back.f_globals.get("__name__") == "lossbench.callbacks"
        ):
            self.seen += 1
            if self.seen == self.n:
                os.kill(os.getpid(), signal.SIGTERM)

    def __enter__(self):
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc) -> None:
        sys.setprofile(None)


def test_interrupt_right_after_an_epoch_is_written_logs_it_once(tiny_mnist: Path, tmp_path: Path):
    from lossbench.train import run

    store = tmp_path / "mlflow.db"
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises((KeyboardInterrupt, SystemExit)), SignalAfterWrite(n=2) as trigger:
            run(compose(*tiny_overrides(tiny_mnist, store, "trainer.max_epochs=4")))
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    assert trigger.seen >= 2, "the trigger never fired"
    client, [r] = read_runs(store)
    assert r.info.status == "KILLED"
    saved = checkpoint(tmp_path / "checkpoints" / r.info.run_id / "last.ckpt")
    assert_complete_curves(client, r.info.run_id, saved["epoch"] + 1)


@pytest.mark.slow
def test_interrupt_while_another_writer_holds_the_store_still_ends_killed(tiny_mnist: Path, tmp_path: Path):
    """A parallel job holding SQLite's write lock makes the next per-epoch write wait; SIGTERM arrives then."""
    import sqlite3

    store, checkpoints, log = tmp_path / "mlflow.db", tmp_path / "checkpoints", tmp_path / "train.log"
    proc = start_training(*tiny_overrides(tiny_mnist, store, *SLOW), cwd=tmp_path, log=log)
    try:
        run_id = wait_for_epochs(proc, store, checkpoints, log, epochs=1)
        last = checkpoints / run_id / "last.ckpt"
        other = sqlite3.connect(store, isolation_level=None, timeout=30)
        try:
            other.execute("BEGIN IMMEDIATE")  # another writer's transaction
            saved_at = last.stat().st_mtime_ns
            deadline = time.monotonic() + 60
            while last.stat().st_mtime_ns == saved_at:  # the epoch ends; its metrics are written next
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-3000:]
                time.sleep(0.02)
            time.sleep(1.0)  # the job now waits for the lock inside its write
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
        finally:
            other.execute("ROLLBACK")
            other.close()
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            code = None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    client, [r] = read_runs(store)
    assert code is not None, f"still running 20 s after the lock was released; run {r.info.status}"
    assert r.info.status == "KILLED"
    assert epochs_of(client, run_id) == epochs_upto(checkpoint(last)["epoch"] + 1)


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("LOSSBENCH_STORM"), reason="opt-in: LOSSBENCH_STORM=N sends N signals at random moments"
)
def test_signal_storm_at_random_moments(tiny_mnist: Path, tmp_path: Path):
    """SIGINT or SIGTERM at a random moment (0-3 s after epoch 0 is recorded); whatever the moment, the run
    ends KILLED (or FINISHED, when the signal came after it ended) and the store holds exactly the epochs
    last.ckpt holds. Random, so opt-in: ``LOSSBENCH_STORM=20 pytest tests/test_reliability.py -k storm``."""
    import random

    rng = random.Random(int(os.environ.get("LOSSBENCH_STORM_SEED", "0")))
    outcomes = []
    for trial in range(int(os.environ["LOSSBENCH_STORM"])):
        work = tmp_path / f"trial{trial}"
        work.mkdir()
        store, checkpoints, log = work / "mlflow.db", work / "checkpoints", work / "train.log"
        proc = start_training(*tiny_overrides(tiny_mnist, store, *SLOW), cwd=work, log=log)
        try:
            run_id = wait_for_epochs(proc, store, checkpoints, log, epochs=1)
            delay, sig = rng.uniform(0, 3), rng.choice([signal.SIGINT, signal.SIGTERM])
            time.sleep(delay)
            proc.send_signal(sig)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        client, [r] = read_runs(store)
        last = checkpoints / run_id / "last.ckpt"
        ckpt_epoch = checkpoint(last)["epoch"] if last.is_file() else -1
        logged = {key: epochs_of(client, run_id, key) for key in EPOCH_METRICS}
        ok = r.info.status in ("KILLED", "FINISHED") and all(v == epochs_upto(ckpt_epoch + 1) for v in logged.values())
        outcomes.append(
            f"{sig.name} +{delay:.2f}s: {r.info.status}, last.ckpt epoch {ckpt_epoch}, store {logged['val/loss']}"
            + ("" if ok else "  <-- BAD")
        )
    print("\n".join(outcomes))
    assert not [o for o in outcomes if o.endswith("BAD")], "\n".join(outcomes)


# ----------------------------------------------------------------------------- SIGKILL


@pytest.mark.slow
def test_sigkilled_run_is_ended_killed_never_skipped_and_can_be_resumed(tiny_mnist: Path, tmp_path: Path):
    for trial in range(TRIALS):
        work, store, checkpoints, log, overrides, proc = start_slow_trial(tiny_mnist, tmp_path / f"trial{trial}")
        try:
            killed = wait_for_epochs(proc, store, checkpoints, log)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        _, runs = read_runs(store)
        assert [(r.info.run_id, r.info.status) for r in runs] == [(killed, "RUNNING")]  # nobody could end it

        # A later run of the same config, even one told to skip finished configs, ends the orphaned run KILLED
        # (its process no longer exists) and trains afresh.
        fresh = train(*overrides, "tracking.skip_finished=true", cwd=work)
        assert fresh.returncode == 0, fresh.stderr[-3000:]
        client, runs = read_runs(store)
        status = {r.info.run_id: r.info.status for r in runs}
        assert len(status) == 2 and status[killed] == "KILLED", status
        reason = client.get_run(killed).data.tags["lossbench.failure"]
        assert reason.startswith(f"process {proc.pid} on host {socket.gethostname()} no longer exists"), reason
        [new] = [i for i in status if i != killed]
        assert status[new] == "FINISHED"
        assert_complete_curves(client, new, 5)

        # resume=true continues the killed run itself, from its last checkpoint.
        saved = checkpoint(checkpoints / killed / "last.ckpt")
        assert saved["epoch"] >= 1
        resumed = train(*overrides, "resume=true", cwd=work)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"resuming run {killed}" in resumed.stdout + resumed.stderr
        client, runs = read_runs(store)
        assert {r.info.run_id: r.info.status for r in runs} == {killed: "FINISHED", new: "FINISHED"}
        assert_complete_curves(client, killed, 5)


def test_a_runs_owner_is_known_by_host_pid_and_start_time():
    """What lossbench.store.owner_gone reads from a run's tags: gone, a zombie, a reused pid, another host."""
    from lossbench.store import owner_gone, process_tags

    host, mine = socket.gethostname(), process_tags()
    assert owner_gone(mine) is None
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    assert owner_gone({**process_tags(), "lossbench.pid": str(ended.pid)}) == (
        f"process {ended.pid} on host {host} no longer exists"
    )
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while not Path(f"/proc/{zombie.pid}/stat").read_text().split(")")[1].split()[0] == "Z":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert owner_gone({**process_tags(zombie.pid)}) == f"process {zombie.pid} on host {host} no longer exists"
    zombie.wait()
    earlier = {**mine, "lossbench.pid_started": f"{float(mine['lossbench.pid_started']) - 3600:.2f}"}
    assert owner_gone(earlier) == (
        f"process {os.getpid()} on host {host} no longer exists (pid {os.getpid()} is now another process)"
    )
    assert owner_gone({**mine, "lossbench.host": "another-host"}) is None and owner_gone({}) is None


# ----------------------------------------------------------------------------- a parallel sweep's worker or sweep killed

FOUR_SLOW_JOBS = [*SLOW, "seed=0,1,2,3", "hydra.launcher.n_jobs=2"]


def sweep_args(data_root: Path, store: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lossbench.train", "-m", *tiny_overrides(data_root, store, *extra)]


def start_sweep(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """A sweep in a process group of its own (its workers in it too), output to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            args,
            cwd=cwd,
            env=cli_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=default_sigint,
            start_new_session=True,
        )


def stop_group(proc: subprocess.Popen) -> None:
    """Whatever is left of a sweep started by :func:`start_sweep` (the test failed): gone."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def running_train_runs(
    proc: subprocess.Popen,
    store: Path,
    log: Path,
    count: int,
    epochs: int,
    before: dict[str, int] | None = None,
    timeout: float = 300,
) -> list:
    """Wait until ``count`` training runs are RUNNING with at least ``epochs`` epochs recorded (beyond the
    ``before`` {run id: epochs} they had); those runs."""
    from mlflow.tracking import MlflowClient

    deadline, client = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the sweep exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        checkpoints = store.parent / "checkpoints"
        if checkpoints.is_dir() and any(checkpoints.iterdir()):  # a run exists: the store's schema is complete
            client = client or MlflowClient(f"sqlite:///{store}")
            runs = [r for r in read_runs(store)[1] if r.data.tags.get("lossbench.kind") == "train"]
            ready = [
                r
                for r in runs
                if r.info.status == "RUNNING"
                and len(epochs_of(client, r.info.run_id)) >= epochs + (before or {}).get(r.info.run_id, 0)
            ]
            if len(ready) >= count:
                return ready[:count]
        time.sleep(0.2)
    raise AssertionError(f"no {count} runs with {epochs} epochs within {timeout} s:\n{log.read_text()[-3000:]}")


def wait_until_gone(pids: list[int], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while any(pid_exists(pid) for pid in pids):
        assert time.monotonic() < deadline, f"processes {pids} still exist after {timeout} s"
        time.sleep(0.2)


def pid_exists(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def by_kind(store: Path) -> tuple:
    """(client, training runs, the sweep's parent runs) of the store."""
    client, runs = read_runs(store)
    kind = lambda k: [r for r in runs if r.data.tags.get("lossbench.kind") == k]  # noqa: E731
    return client, kind("train"), kind("sweep")


@pytest.mark.slow
def test_a_worker_killed_mid_epoch_costs_its_job_only_and_the_same_sweep_resumes_it(tiny_mnist: Path, tmp_path: Path):
    """The issue's scenario: 4 jobs on 2 workers; SIGKILL the worker that one RUNNING run names as its process,
    mid-epoch. That run ends KILLED with the reason, a new worker takes the rest, the 3 others FINISH, the sweep
    exits 1 with one line for the lost job. The same command then resumes the killed run to FINISHED."""
    store, log = tmp_path / "mlflow.db", tmp_path / "sweep.log"
    args = sweep_args(tiny_mnist, store, *FOUR_SLOW_JOBS)
    proc = start_sweep(args, tmp_path, log)
    try:
        [victim] = running_train_runs(proc, store, log, count=1, epochs=2)  # killed in its third epoch
        pid = int(victim.data.tags["lossbench.pid"])
        assert pid != proc.pid
        os.kill(pid, signal.SIGKILL)
        code = proc.wait(timeout=300)
    finally:
        stop_group(proc)
    text = log.read_text()
    assert code == 1, text[-3000:]
    client, runs, [parent] = by_kind(store)
    status = {r.info.run_id: r.info.status for r in runs}
    assert len(runs) == 4 and status[victim.info.run_id] == "KILLED", status
    others = [run_id for run_id in status if run_id != victim.info.run_id]
    assert [status[i] for i in others] == ["FINISHED"] * 3, "the other worker's jobs, and the rest, are not killed"
    reason = client.get_run(victim.info.run_id).data.tags["lossbench.failure"]
    assert reason.startswith(f"worker {pid} killed by SIGKILL"), reason
    for run_id in others:
        assert_complete_curves(client, run_id, 5)
    assert parent.info.status == "KILLED" and parent.data.tags["lossbench.failure"] == "0 failed and 1 killed of 4 jobs"
    lost = [line for line in text.splitlines() if line.startswith("KILLED ")]
    assert len(lost) == 1 and lost[0].endswith(f": {reason}"), lost
    assert f"seed={victim.data.tags['seed']}" in lost[0]
    assert "3 finished, 0 failed, 1 killed, 0 skipped" in text
    for noise in ("Traceback", "TerminatedWorkerError", "resource_tracker", "leaked"):
        assert noise not in text, f"{noise} on the terminal:\n{text[-3000:]}"
    saved = checkpoint(tmp_path / "checkpoints" / victim.info.run_id / "last.ckpt")
    assert saved["epoch"] >= 1 and epochs_of(client, victim.info.run_id) == epochs_upto(saved["epoch"] + 1)

    again = subprocess.run(args, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 finished, 0 failed, 0 killed, 3 skipped (already finished); 1 of them resumed from a checkpoint" in (
        again.stdout
    ), again.stdout[-2000:]
    assert f"resuming run {victim.info.run_id}" in again.stdout + again.stderr
    assert "no interrupted run" not in again.stdout + again.stderr, "a sweep's default resume: nothing to say per job"
    client, runs, [parent] = by_kind(store)
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == 4 and parent.info.status == "FINISHED"
    assert_complete_curves(client, victim.info.run_id, 5)


@pytest.mark.slow
def test_a_killed_sweep_leaves_no_run_that_the_next_sweep_or_report_counts_as_running(tiny_mnist: Path, tmp_path: Path):
    """kill -9 of a sweep's whole process group: its runs stay RUNNING (no process is left to end them); the
    report marks them KILLED, naming host and pid. kill -9 of the sweep's process alone: its workers stop their
    jobs, whose runs end KILLED. Either way the next sweep resumes every run to FINISHED, each epoch once."""
    store, log = tmp_path / "mlflow.db", tmp_path / "sweep.log"
    args = sweep_args(tiny_mnist, store, *FOUR_SLOW_JOBS)
    proc = start_sweep(args, tmp_path, log)
    try:
        cut = running_train_runs(proc, store, log, count=2, epochs=1)
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep, its workers, their drawing processes: a power cut
        proc.wait(timeout=60)
    finally:
        stop_group(proc)
    owners = {r.info.run_id: int(r.data.tags["lossbench.pid"]) for r in cut}
    wait_until_gone(list(owners.values()))
    client, runs, [parent] = by_kind(store)
    assert {r.info.run_id for r in runs if r.info.status == "RUNNING"} == set(
        owners
    ) and parent.info.status == "RUNNING"

    report = subprocess.run(
        [sys.executable, "-m", "lossbench.report", "--experiment", "lossbench", "--tracking-uri", f"sqlite:///{store}"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    client, runs, [parent] = by_kind(store)
    host = socket.gethostname()
    for r in runs:
        if r.info.run_id in owners:
            assert r.info.status == "KILLED", report.stderr[-2000:]
            expected = f"process {owners[r.info.run_id]} on host {host} no longer exists"
            assert r.data.tags["lossbench.failure"].startswith(expected), r.data.tags["lossbench.failure"]
    assert (
        parent.info.status == "KILLED" and f"process {proc.pid} on host {host}" in parent.data.tags["lossbench.failure"]
    )

    recorded = {run_id: len(epochs_of(client, run_id)) for run_id in owners}
    second = start_sweep(args, tmp_path, log)
    try:  # one more epoch of each resumed run: each is well inside its job (lossbench.train's recorded)
        resumed = running_train_runs(second, store, log, count=2, epochs=1, before=recorded)
        assert {r.info.run_id for r in resumed} == set(owners)
        os.kill(second.pid, signal.SIGKILL)  # the sweep's process alone: its workers see their requests end
        second.wait(timeout=60)
        wait_until_gone([int(r.data.tags["lossbench.pid"]) for r in resumed])
    finally:
        stop_group(second)
    client, runs, [parent] = by_kind(store)
    assert [r.info.status for r in runs if r.info.status == "RUNNING"] == [], "a worker trained on for a dead sweep"
    for r in runs:
        if r.info.run_id in {r.info.run_id for r in resumed}:
            assert r.info.status == "KILLED" and "SIGTERM" in r.data.tags["lossbench.failure"], r.data.tags
    assert parent.info.status == "RUNNING"  # its owner, the sweep's process, is gone: the next sweep sees it

    third = subprocess.run(args, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=400)
    assert third.returncode == 0, third.stderr[-3000:]
    said = [line for line in (third.stdout + third.stderr).splitlines() if "left RUNNING by a process" in line]
    assert len(said) == 1 and parent.info.run_id in said[0], said
    client, runs, parents = by_kind(store)
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    assert [p.info.status for p in parents] == ["FINISHED"]
    for r in runs:
        assert_complete_curves(client, r.info.run_id, 5)


@pytest.fixture
def memory_cgroup(tmp_path: Path):
    """A function putting a process into a new memory cgroup capped at ``mb`` MiB (v1 or v2), or a skip where
    this machine cannot make one (not root, no memory controller); the cgroup is removed afterwards."""
    made: list[Path] = []

    def cap(pid: int, mb: int) -> Path:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        v1 = [line.split(":", 2)[2] for line in lines if "memory" in line.split(":")[1].split(",")]
        if v1:
            parent, limit = Path(f"/sys/fs/cgroup/memory{v1[0].rstrip('/')}"), "memory.limit_in_bytes"
        else:
            v2 = [line.split(":", 2)[2] for line in lines if line.startswith("0::")]
            parent, limit = Path(f"/sys/fs/cgroup{v2[0].rstrip('/')}") if v2 else Path("/nonexistent"), "memory.max"
        group = parent / f"lossbench-test-{os.getpid()}-{len(made)}"
        try:
            group.mkdir()
            made.append(group)
            (group / limit).write_text(str(mb * 2**20))
            (group / "cgroup.procs").write_text(str(pid))
        except OSError as e:
            pytest.skip(f"no memory cgroup can be made here ({group}: {e.strerror}), so no real out-of-memory kill")
        return group

    yield cap
    for group in made:
        deadline = time.monotonic() + 30
        while group.exists():
            try:
                group.rmdir()
            except OSError:  # its process is still exiting
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


@pytest.mark.slow
def test_a_worker_killed_by_the_out_of_memory_killer_says_so(tiny_mnist: Path, tmp_path: Path, memory_cgroup):
    """A real out-of-memory kill: the job whose memory grows 40 MiB a training call is put in a cgroup capped at
    192 MiB (over what it holds then), and the kernel's out-of-memory killer kills it. Its run ends KILLED
    saying SIGKILL, out of memory, and that its peak went over ``launch.job_memory_gb``; the other job FINISHES."""
    store, log = tmp_path / "mlflow.db", tmp_path / "sweep.log"
    hog = ["loss=ce", "loss.name=hog", "loss.criterion._target_=faults.MemoryHog", "+loss.criterion.delay_s=0.15"]
    args = sweep_args(
        tiny_mnist,
        store,
        *hog,
        "+loss.criterion.mb_per_call=0,40",
        "trainer.max_epochs=5",
        "threads=1",
        "hydra.launcher.n_jobs=2",
        "launch.job_memory_gb=0.5",
    )
    proc = start_sweep(args, tmp_path, log)
    try:
        ready = running_train_runs(proc, store, log, count=2, epochs=0)
        [victim] = [r for r in ready if r.data.params["loss.criterion.mb_per_call"] == "40"]
        pid = int(victim.data.tags["lossbench.pid"])
        memory_cgroup(pid, 192)
        code = proc.wait(timeout=300)
    finally:
        stop_group(proc)
    text = log.read_text()
    assert code == 1, text[-3000:]
    client, runs, [parent] = by_kind(store)
    status = {r.info.run_id: r.info.status for r in runs}
    assert sorted(status.values()) == ["FINISHED", "KILLED"] and status[victim.info.run_id] == "KILLED", text[-3000:]
    reason = client.get_run(victim.info.run_id).data.tags["lossbench.failure"]
    assert reason.startswith(f"worker {pid} killed by SIGKILL (out of memory; peak "), reason
    assert "GB > launch.job_memory_gb=0.5: raise it or lower launch.max_jobs" in reason, reason
    assert [line for line in text.splitlines() if line.startswith("KILLED ")][0].endswith(f": {reason}")


# ----------------------------------------------------------------------------- parallel writers


@pytest.mark.slow
def test_four_processes_create_one_new_store_at_once_and_lose_no_metric(tiny_mnist: Path, tmp_path: Path):
    """Four ``python -m lossbench.train`` processes released together (after their imports, see
    faults.train_at_signal) into a store that does not exist yet: no crash, no metric point lost."""
    for trial in range(TRIALS):
        work = tmp_path / f"trial{trial}"
        work.mkdir()
        store, go = work / "mlflow.db", work / "go"
        assert not store.exists()
        procs = []
        try:
            for seed in range(4):
                overrides = tiny_overrides(tiny_mnist, store, f"seed={seed}", "threads=1")
                with open(work / f"job{seed}.log", "wb") as out:
                    procs.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "faults", str(work / f"ready{seed}"), str(go), *overrides],
                            cwd=work,
                            env=cli_env(),
                            stdout=out,
                            stderr=subprocess.STDOUT,
                        )
                    )
            deadline = time.monotonic() + 240
            while not all((work / f"ready{seed}").exists() for seed in range(4)):
                assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "jobs did not get ready"
                time.sleep(0.05)
            go.touch()
            codes = [p.wait(timeout=400) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        assert codes == [0, 0, 0, 0], "\n".join(
            f"job {s}:\n" + (work / f"job{s}.log").read_text()[-1500:] for s in range(4)
        )
        client, runs = read_runs(store)
        assert sorted(r.data.tags["seed"] for r in runs) == ["0", "1", "2", "3"]
        assert {r.info.status for r in runs} == {"FINISHED"}
        points = 0
        for r in runs:
            assert_complete_curves(client, r.info.run_id, 2)
            points += sum(len(client.get_metric_history(r.info.run_id, k)) for k in EPOCH_METRICS)
            for key in FINAL_METRICS:
                assert key in r.data.metrics, key
        assert points == 4 * len(EPOCH_METRICS) * 2


# ----------------------------------------------------------------------------- tracking server down or hung


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HungServer:
    """Accepts TCP connections on 127.0.0.1 and never answers a byte, until closed."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.held.append(conn)  # read nothing, answer nothing

    def __enter__(self) -> HungServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        for conn in self.held:
            conn.close()
        self.sock.close()


@pytest.mark.slow
def test_cli_fails_fast_naming_the_uri_when_the_server_is_down(tiny_mnist: Path, tmp_path: Path):
    uri = f"http://127.0.0.1:{closed_port()}"
    overrides = [o for o in tiny_overrides(tiny_mnist, tmp_path / "unused.db") if not o.startswith("tracking.uri=")]
    started = time.monotonic()
    done = train(*overrides, f"tracking.uri={uri}", cwd=tmp_path, timeout=300)
    wall = time.monotonic() - started
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("lossbench: error:")]
    assert len(errors) == 1 and uri in errors[0], done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == errors, "stderr must be that one line"
    waited = float(errors[0].split("unusable after ")[1].split(" s")[0])
    assert waited <= 30, errors[0]
    assert wall < 30 + 40, f"{wall:.0f} s including imports"  # imports take 6-16 s on a loaded 2-core machine
    assert "Epoch" not in done.stdout + done.stderr and not (tmp_path / "checkpoints").exists(), (
        "training must not have started"
    )


def test_run_gives_up_on_a_hung_server_within_tracking_timeout(
    tiny_mnist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import pytorch_lightning  # noqa: F401  (imports are not what is timed)
    import torch  # noqa: F401
    from mlflow.tracking import MlflowClient  # noqa: F401

    from lossbench import callbacks, data, losses, module, store  # noqa: F401
    from lossbench.train import run

    for name in HTTP_VARS:  # whatever an earlier in-process run set, and restore it afterwards
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    with HungServer() as server:
        uri = f"http://127.0.0.1:{server.port}"
        cfg = compose(
            *[o for o in tiny_overrides(tiny_mnist, tmp_path / "unused.db") if not o.startswith("tracking.uri=")],
            f"tracking.uri={uri}",
            "tracking.timeout_s=6",
        )
        started = time.monotonic()
        with pytest.raises(store.TrackingError) as raised:
            run(cfg)
        elapsed = time.monotonic() - started
        assert server.held, "the client never reached the hung server"
    assert uri in str(raised.value)
    assert elapsed <= 6 + 4, f"gave up after {elapsed:.1f} s with tracking.timeout_s=6"
    assert not (tmp_path / "checkpoints").exists()


# ----------------------------------------------------------------------------- bad config, bad store


def test_store_whose_parent_is_a_file_fails_before_training(tiny_mnist: Path, tmp_path: Path):
    from lossbench.errors import ConfigError
    from lossbench.train import run

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file\n")
    with pytest.raises(ConfigError) as raised:  # judged with the config, before torch (issue 36)
        run(compose(*tiny_overrides(tiny_mnist, blocker / "mlflow.db")))
    assert str(blocker) in str(raised.value) and "tracking.uri=" in str(raised.value)
    assert blocker.read_text() == "a regular file\n"
    assert not (tmp_path / "checkpoints").exists()


def test_resume_path_of_another_config_is_refused(tiny_mnist: Path, tmp_path: Path):
    from lossbench.errors import ConfigError
    from lossbench.module import DivergenceError
    from lossbench.train import run

    store = tmp_path / "mlflow.db"
    with pytest.raises(DivergenceError):
        run(compose(*tiny_overrides(tiny_mnist, store, *NAN_AT_CALL_12, "trainer.max_epochs=3")))
    client, [diverged] = read_runs(store)
    last = tmp_path / "checkpoints" / diverged.info.run_id / "last.ckpt"
    try:
        with pytest.raises(ConfigError, match="resume="):
            run(compose(*tiny_overrides(tiny_mnist, store, "loss=mae", "trainer.max_epochs=3", f"resume={last}")))
    finally:  # whatever happened, the diverged run's record must be as it was
        client, [after] = read_runs(store)
        assert after.info.status == "FAILED" and after.data.params["loss.name"] == "nanafter"
    assert epochs_of(client, diverged.info.run_id) == [1], "epochs trained with another loss were added to the run"


# ----------------------------------------------------------------------------- secrets


SECRETS = ["+db.password=hunter2", "+api_token=abc", "+service.url=postgresql://alice:s3cret@db.example/x"]


@pytest.fixture(scope="module")
def secret_run(tmp_path_factory: pytest.TempPathFactory):
    """One real run (in process) with secrets among its overrides; returns (client, run, tmp folder)."""
    from idx import write_mnist_family

    from lossbench.train import run

    tmp = tmp_path_factory.mktemp("secrets")
    root = write_mnist_family(tmp / "data", "MNIST", n_train=600, n_test=200)
    store = tmp / "mlflow.db"
    run(compose(*tiny_overrides(root, store, "trainer.max_epochs=1", *SECRETS)))
    client, runs = read_runs(store)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    return client, runs[0], tmp


def assert_no_secret(text: str, where: str) -> None:
    for secret in ("hunter2", "s3cret"):
        assert secret not in text, f"{secret!r} leaked into {where}"


def test_params_and_tags_never_hold_secrets(secret_run):
    _, r, _ = secret_run
    assert r.data.params["db.password"] == "***"
    assert r.data.params["api_token"] == "***"
    assert r.data.params["service.url"] == "postgresql://alice:***@db.example/x"
    for kind, values in (("params", r.data.params), ("tags", r.data.tags)):
        for key, value in values.items():
            assert_no_secret(value, f"{kind}[{key}]")
            assert_no_secret(key, f"{kind} key {key}")


def test_checkpoints_load_with_weights_only_and_hold_no_secret(secret_run):
    _, r, _ = secret_run
    folder = Path(r.data.tags["lossbench.checkpoint_dir"])
    for name in ("last.ckpt", "best.ckpt"):
        saved = checkpoint(folder / name)  # raises on any pickled object
        assert saved["epoch"] == 0
        assert_finite_weights(saved)
        raw = (folder / name).read_bytes()
        assert b"hunter2" not in raw and b"s3cret" not in raw


def test_resolved_config_artifact_holds_no_secret(secret_run):
    client, r, _ = secret_run
    artifacts = Path(r.info.artifact_uri.removeprefix("file://"))
    text = (artifacts / "config.resolved.yaml").read_text()
    assert "api_token" in text  # the key is there, its value is not
    assert_no_secret(text, "config.resolved.yaml")
    assert "abc" not in text.split("api_token:")[1].splitlines()[0]


@pytest.mark.slow
def test_cli_run_artifacts_hold_no_secret(tiny_mnist: Path, tmp_path: Path):
    store = tmp_path / "mlflow.db"
    done = train(*tiny_overrides(tiny_mnist, store, "trainer.max_epochs=1", *SECRETS), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    _, runs = read_runs(store)
    r = runs[0]
    for kind, values in (("params", r.data.params), ("tags", r.data.tags)):
        for key, value in values.items():
            assert_no_secret(value, f"{kind}[{key}]")
    artifacts = Path(r.info.artifact_uri.removeprefix("file://"))
    files = [p for p in artifacts.rglob("*") if p.is_file() and p.suffix in (".yaml", ".yml", ".json", ".txt")]
    assert files, "no text artifacts were logged"
    for path in files:
        assert_no_secret(path.read_text(), f"artifact {path.relative_to(artifacts)}")
