"""The MLflow store: connecting, run names, tags, params, metrics, artifacts, paging, run status.

One ``Tracker`` per job talks to the store through ``MlflowClient``. A run always ends FINISHED,
FAILED (with the reason in the ``lossbench.failure`` tag) or KILLED, never stays RUNNING. No
Lightning import: the report and the sweep use this module too; the Lightning callback that writes
each epoch lives in :mod:`lossbench.callbacks`.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import re
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.tracking import MlflowClient

from lossbench.config import redact, sqlite_problem
from lossbench.errors import CREDENTIAL_VARS, LossbenchError, access_refused, first_line
from lossbench.names import (
    CONFIG_HASH_TAG,
    FAILURE_TAG,
    HOST_TAG,
    KIND_SWEEP,
    KIND_TAG,
    KIND_TRAIN,
    PID_STARTED_TAG,
    PID_TAG,
    SWEEP_TAG,
    VAL_LOSS,
)
from lossbench.store_links import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, is_server, ui_base

_BATCH = 100  # params per log_batch call (MLflow's limit is 100 params, 1000 metrics)


def quoted(value: str) -> str:
    """``value`` as a string literal of MLflow's search syntax."""
    if "'" in value and '"' in value:
        raise ValueError(f"cannot search MLflow for {value!r}: it holds both kinds of quote")
    return f'"{value}"' if "'" in value else f"'{value}'"


def tag_filter(kind: str | None = None, tags: Mapping[str, str] | None = None) -> str:
    """The MLflow search filter for runs of one :data:`~lossbench.names.KIND_TAG` kind with these tag values."""
    wanted = {**({KIND_TAG: kind} if kind is not None else {}), **(tags or {})}
    return " and ".join(f"tags.{_identifier(name)} = {quoted(str(value))}" for name, value in wanted.items())


def _identifier(name: str) -> str:
    """A tag name as MLflow's search syntax reads it: in backticks when it holds more than letters, digits, ``_``."""
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) else f"`{name}`"


def sweep_filter(sweep_id: str) -> str:
    """The filter that finds a sweep's parent run (the run holding its report)."""
    return tag_filter(KIND_SWEEP, {SWEEP_TAG: sweep_id})


class TrackingError(LossbenchError):
    """The tracking store cannot be reached or written."""


def resolve_uri(uri: str, base: Path | None = None) -> str:
    """Make a relative ``sqlite:///file.db`` absolute, so every job of a project shares one store; refuse a tracking
    server's URI that carries a login (it would end up in logs, params and printed links)."""
    if is_server(uri) and "@" in urlsplit(uri).netloc:
        raise TrackingError(
            f"tracking URI {ui_base(uri)} must not carry a user name or password: remove 'user:password@' from it "
            f"and set {' and '.join(CREDENTIAL_VARS)} instead"
        )
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri[len("sqlite:///") :])
        return f"sqlite:///{((base or Path.cwd()) / path).resolve()}"
    if "://" not in uri:  # a bare path to an SQLite file
        return f"sqlite:///{((base or Path.cwd()) / uri).resolve()}"
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI (query string dropped); ``None`` for other stores."""
    return Path(uri[len("sqlite:///") :].split("?", 1)[0]) if uri.startswith("sqlite:///") else None


def bound_store_waits(timeout_s: float) -> None:
    """Make MLflow give up on a database it cannot open after about ``timeout_s``, not after its ~100 s of retries
    (0.1 s x (2^k - 1) between attempts): as many attempts as fit in ``timeout_s``."""
    from mlflow.store.db import utils as mlflow_db_utils  # SQLAlchemy: imported when a database store is opened

    most = _MLFLOW_RETRIES.setdefault("attempts", mlflow_db_utils.MAX_RETRY_COUNT)  # its own, never more
    attempts, waited = 1, 0.0
    while waited + 0.1 * (2**attempts - 1) <= timeout_s and attempts < most:
        waited += 0.1 * (2**attempts - 1)
        attempts += 1
    mlflow_db_utils.MAX_RETRY_COUNT = attempts


_MLFLOW_RETRIES: dict[str, int] = {}  # MLflow's own number of attempts, before bound_store_waits set it


_HTTP_VARS_SET_HERE: set[str] = set()


def bound_http_waits(timeout_s: float) -> None:
    """Make MLflow give up on an unreachable server after about ``timeout_s`` instead of ~4 minutes.

    Two retries with a 1 s backoff; each request may take a third of what is left. MLflow reads
    these variables at every request. Variables the user set themselves are kept.
    """
    wanted = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, int((timeout_s - 3) / 3))),
    }
    for name, value in wanted.items():
        if name not in os.environ or name in _HTTP_VARS_SET_HERE:
            os.environ[name] = value
            _HTTP_VARS_SET_HERE.add(name)


_HOLDING: list[bool] = []  # non-empty while a write holds interrupts


@contextmanager
def deferred_interrupts():
    """Hold SIGINT/SIGTERM until a store write is done, then raise KeyboardInterrupt.

    An interrupt inside an SQLite write leaves its connection holding the write lock, so the run
    could not be marked KILLED afterwards. Only the main thread can hold signals; elsewhere this is
    a no-op.
    """
    if threading.current_thread() is not threading.main_thread() or _HOLDING:
        yield  # not ours to hold, or an outer write already holds them
        return
    caught: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    _HOLDING.append(True)
    try:
        yield
    finally:
        _HOLDING.pop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if caught:
            raise KeyboardInterrupt(f"signal {caught[0]} (held during a tracking write)")


@contextmanager
def _store_lock(db: Path):
    """Serialise SQLite store creation across processes: MLflow's schema set-up races otherwise."""
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def process_started(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), or None when there is no such process."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def process_tags(pid: int | None = None) -> dict[str, str]:
    """The tags that name a run's owner: this host, the process ``pid`` (this one by default) and its start time."""
    pid = os.getpid() if pid is None else pid
    started = process_started(pid)
    return {
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(pid),
        PID_STARTED_TAG: "" if started is None else f"{started:.2f}",
    }


def owner_gone(tags: Mapping[str, str]) -> str | None:
    """Why the process a run's tags name as its owner no longer exists on this host, or None: it exists, it lives
    on another host (nothing here can tell), or the run names none. A zombie, or a later process given the same
    pid (its start time differs from the recorded one), is not the owner."""
    host, pid = tags.get(HOST_TAG), int(tags.get(PID_TAG, "0") or 0)
    if host != socket.gethostname() or not pid:
        return None
    gone = f"process {pid} on host {host} no longer exists"
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return gone
        recorded = tags.get(PID_STARTED_TAG)
        if recorded and abs(process.create_time() - float(recorded)) > 1.0:
            return f"{gone} (pid {pid} is now another process)"
    except psutil.NoSuchProcess:
        return gone
    except psutil.Error:  # not ours to inspect: it exists
        return None
    return None


def _held(method):
    """Run a Tracker write with interrupts held (see :func:`deferred_interrupts`)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with deferred_interrupts(), self.refusals():
            return method(self, *args, **kwargs)

    return wrapper


@dataclass
class Tracker:
    """A connection to one experiment in one tracking store."""

    client: MlflowClient
    uri: str
    experiment_id: str
    experiment: str = ""  # its name, for messages

    @contextmanager
    def refusals(self):
        """A server's refusal (401: the login, 403: the permission) as one :class:`TrackingError` line."""
        try:
            yield
        except LossbenchError:
            raise
        except Exception as e:
            refused = access_refused(e, ui_base(self.uri), self.experiment)
            if refused is None:
                raise
            raise TrackingError(refused) from e

    @classmethod
    def connect(cls, uri: str, experiment: str, timeout_s: float = 30) -> Tracker:
        """Open (creating if needed) the store and the experiment; fail clearly before any training."""
        uri = resolve_uri(uri)
        db = sqlite_path(uri)
        if db is not None:
            problem = sqlite_problem(db)
            if problem is None and db.exists() and not os.access(db, os.W_OK):
                problem = f"{db} is not writable; fix its permissions"
            if problem is not None:
                raise TrackingError(f"tracking store {uri}: {problem} (or set tracking.uri=)")
        if uri.startswith(("http://", "https://")):
            bound_http_waits(timeout_s)
        else:
            bound_store_waits(timeout_s)
        started = time.monotonic()
        try:
            with (
                _store_lock(db) if db is not None else nullcontext()
            ):  # MLflow creates the schema in the client's constructor
                # "Creating initial MLflow database tables...", "Updating database tables": nothing for a user to do
                logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
                client = MlflowClient(tracking_uri=uri)
                found = client.get_experiment_by_name(experiment)
                if found is None:
                    found = cls._create_experiment(client, uri, experiment)
                elif (
                    found.lifecycle_stage != "deleted" and EXPERIMENT_KIND_TAG not in found.tags
                ):  # made before lossbench tagged them
                    client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        except LossbenchError:
            raise
        except Exception as e:
            refused = access_refused(e, ui_base(uri), experiment)
            if refused is not None:
                raise TrackingError(refused) from e
            waited = time.monotonic() - started
            raise TrackingError(
                f"tracking store {redact('uri', uri)} is unreachable or unusable after {waited:.0f} s: "
                f"{first_line(e) or type(e).__name__}"
            ) from e
        if found.lifecycle_stage == "deleted":
            raise TrackingError(
                f"experiment {experiment!r} is deleted in {uri}: restore it in the MLflow UI or pick another tracking.experiment="
            )
        return cls(client, uri, found.experiment_id, experiment)

    @staticmethod
    def _create_experiment(client: MlflowClient, uri: str, name: str):
        """A new experiment, marked as model training so MLflow's UI lists its runs, not a GenAI overview."""
        db = sqlite_path(uri)
        location = (db.parent / "mlartifacts" / uuid.uuid4().hex[:12]).as_uri() if db is not None else None
        try:
            client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
        except Exception:  # another job created it first: fine
            pass
        found = client.get_experiment_by_name(name)
        if found is None:
            raise TrackingError(f"could not create experiment {name!r} in {uri}")
        return found

    # ------------------------------------------------------------------ finding runs

    def runs(self, filter_string: str = "", statuses: Iterable[str] | None = None) -> list:
        """All runs of the experiment matching a filter (every page), newest first."""
        found, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string,
                ViewType.ACTIVE_ONLY,
                max_results=1000,
                order_by=["attributes.start_time DESC"],
                page_token=token,
            )
            found.extend(page)
            token = page.token
            if not token:
                break
        if statuses is not None:
            wanted = set(statuses)
            found = [r for r in found if r.info.status in wanted]
        return found

    def runs_of_config(self, config_hash: str, statuses: Iterable[str] | None = None) -> list:
        return self.runs(tag_filter(KIND_TRAIN, {CONFIG_HASH_TAG: config_hash}), statuses)

    def end_orphaned_runs(self, filter_string: str = "") -> list[str]:
        """End KILLED, with the reason, every RUNNING run (matching ``filter_string``) whose owner on this host no
        longer exists (:func:`owner_gone`: a kill -9, the out-of-memory killer, a machine that lost power), so
        that resume continues it from its checkpoint and nothing counts it as running; their ids."""
        ended = []
        for run in self.runs(filter_string, ["RUNNING"]):
            gone = owner_gone(run.data.tags)
            if gone is not None:
                self.end(run.info.run_id, "KILLED", f"{gone}; the same command (a sweep) or resume=true continues it")
                ended.append(run.info.run_id)
        return ended

    # ------------------------------------------------------------------ one run

    @_held
    def create_run(self, name: str, tags: Mapping[str, str], params: Mapping[str, Any]) -> str:
        tags = {**tags, KIND_TAG: KIND_TRAIN, **process_tags()}
        run = self.client.create_run(self.experiment_id, run_name=name, tags={k: str(v) for k, v in tags.items()})
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    @_held
    def reopen(self, run_id: str, pid: int | None = None) -> None:
        """Continue an ended run (resume): RUNNING again, owned by this process (or process ``pid`` of this host)."""
        self.client.update_run(run_id, status="RUNNING")
        self.set_tags(run_id, {**process_tags(pid), FAILURE_TAG: ""})

    @_held
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        items = [Param(k, str(redact(k, v))[:6000]) for k, v in params.items()]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(run_id, params=items[i : i + _BATCH])

    @_held
    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        if tags:
            self.client.log_batch(run_id, tags=[RunTag(k, str(redact(k, v))) for k, v in tags.items()])

    @_held
    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[i : i + 1000])

    def logged_epochs(self, run_id: str, key: str = VAL_LOSS) -> set[int]:
        return {m.step for m in self.client.get_metric_history(run_id, key)}

    @_held
    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    @_held
    def end(self, run_id: str, status: str, reason: str | None = None) -> None:
        if reason:
            self.set_tags(run_id, {FAILURE_TAG: reason[:5000]})
        self.client.set_terminated(run_id, status=status)
