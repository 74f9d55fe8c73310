"""Team scale: the Docker files (validated, not built), an MLflow server on PostgreSQL, a sweep
tracked over HTTP, and clients that give up quickly on a dead or hung server."""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from idx import write_mnist_family

if TYPE_CHECKING:
    from servers import MlflowServer, Postgres

# Fixtures postgres and mlflow_server. Import helpers from servers inside tests, after pytest has
# registered (and assert-rewritten) it.
pytest_plugins = ["servers"]

REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- Docker files


@pytest.mark.slow
def test_check_docker_script_passes():
    """compose.yaml renders with .env.example (and not without any one of its three secrets: the PostgreSQL
    password, MLflow's admin password, its CSRF key), hadolint is clean, and the server image pins uv.lock's
    MLflow. The images are not built: CI has no Docker engine."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "check_docker.sh")], check=False, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "check_docker: OK" in result.stdout
    for secret in ("POSTGRES_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_SECRET_KEY"):
        assert f"config without {secret} must fail" in result.stdout


ENTRYPOINT_SECRETS = {
    "LOSSBENCH_AUTH_DATABASE_URI": "postgresql+psycopg://mlflow@postgres:5432/mlflow",
    "MLFLOW_AUTH_ADMIN_PASSWORD": "a-real-admin-password",
    "MLFLOW_FLASK_SERVER_SECRET_KEY": "a-real-secret-key",
}


@pytest.mark.parametrize(
    "change, named",
    [
        ({}, None),
        ({"MLFLOW_AUTH_ADMIN_PASSWORD": None}, "MLFLOW_AUTH_ADMIN_PASSWORD"),
        ({"MLFLOW_FLASK_SERVER_SECRET_KEY": None}, "MLFLOW_FLASK_SERVER_SECRET_KEY"),
        ({"LOSSBENCH_AUTH_DATABASE_URI": None}, "LOSSBENCH_AUTH_DATABASE_URI"),
        ({"MLFLOW_AUTH_ADMIN_PASSWORD": "CHANGE-ME-not-a-real-admin-password"}, "MLFLOW_ADMIN_PASSWORD"),
        ({"MLFLOW_FLASK_SERVER_SECRET_KEY": "CHANGE-ME-not-a-real-secret-key"}, "MLFLOW_SECRET_KEY"),
    ],
)
def test_mlflow_entrypoint_needs_its_secrets(tmp_path: Path, change: dict, named: str | None):
    """The server container's entrypoint runs `mlflow server --app-name basic-auth` with an ini that gives a new
    user no permission; a missing secret, or docker/.env.example's placeholder, stops it first (exit 2, named).
    (``mlflow`` here is a stand-in that records how it was called; the real server is in test_team_auth.)"""
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "mlflow"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "called"}\ncp "$MLFLOW_AUTH_CONFIG_PATH" {tmp_path / "ini"}\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), **ENTRYPOINT_SECRETS, **change}
    env = {k: v for k, v in env.items() if v is not None}
    result = subprocess.run(
        ["sh", str(REPO / "docker" / "mlflow-entrypoint.sh"), "--port=5000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if named is None:
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "called").read_text().split() == ["server", "--app-name", "basic-auth", "--port=5000"]
        ini = (tmp_path / "ini").read_text()
        assert "default_permission = NO_PERMISSIONS" in ini
        assert "auth_cache_ttl_seconds = 60" in ini  # a checked password is trusted a minute, not hashed per request
        assert "database_uri = postgresql+psycopg://mlflow@postgres:5432/mlflow" in ini
        assert "a-real-admin-password" not in ini  # the password stays in the environment
        assert ((tmp_path / "basic_auth.ini").stat().st_mode & 0o077) == 0  # the ini is its owner's alone
    else:
        assert result.returncode == 2 and named in result.stderr, result.stderr
        assert not (tmp_path / "called").exists(), "MLflow started without its secrets"


# ----------------------------------------------------------------------------- MLflow on PostgreSQL


@pytest.mark.slow
def test_mlflow_server_on_postgres_round_trip(postgres: Postgres, tmp_path: Path):
    """Experiment, run, params, per-epoch metrics and an artifact go over HTTP into PostgreSQL and
    the proxied artifact store, and come back; then the server's processes are all gone."""
    import psycopg
    from mlflow import MlflowClient
    from servers import group_members, start_mlflow_server

    with start_mlflow_server(postgres, tmp_path / "server") as server:
        client = MlflowClient(server.uri)
        experiment_id = client.create_experiment("team-smoke")
        run = client.create_run(experiment_id, run_name="smoke", tags={"loss": "mae"})
        run_id = run.info.run_id
        client.log_param(run_id, "optimizer", "adam")
        for epoch, value in enumerate([0.9, 0.5, 0.4]):
            client.log_metric(run_id, "val/loss", value, step=epoch)
        note = tmp_path / "note.txt"
        note.write_text("hello from the smoke test\n")
        client.log_artifact(run_id, str(note))
        client.set_terminated(run_id)

        fresh = MlflowClient(server.uri)
        got = fresh.get_run(run_id)
        assert got.info.status == "FINISHED"
        assert got.data.tags["loss"] == "mae" and got.data.params["optimizer"] == "adam"
        history = fresh.get_metric_history(run_id, "val/loss")
        assert [(m.step, m.value) for m in history] == [(0, 0.9), (1, 0.5), (2, 0.4)]
        assert got.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied by the server
        assert [f.path for f in fresh.list_artifacts(run_id)] == ["note.txt"]
        assert list(server.artifacts.rglob("note.txt")), "artifact not under --artifacts-destination"
        pid = server.pid

    assert not group_members(pid), f"mlflow server processes {group_members(pid)} outlived the server"
    with psycopg.connect(
        host=postgres.host, port=postgres.port, user=postgres.user, password=postgres.password, dbname=postgres.database
    ) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM experiments")]
        runs = conn.execute("SELECT count(*) FROM runs WHERE run_uuid = %s", (run_id,)).fetchone()[0]
    assert "team-smoke" in names and runs == 1


@pytest.mark.slow
def test_sweep_tracked_on_team_server(mlflow_server: MlflowServer, tmp_path: Path):
    """A 2-job Hydra multirun of the training CLI, pointed at the team server with tracking.uri=,
    records one FINISHED run per loss with its tags and per-epoch curves."""
    from mlflow import MlflowClient

    root = write_mnist_family(tmp_path / "data", "MNIST", n_train=600, n_test=200)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["LOSSBENCH_CHECKPOINTS"] = str(tmp_path / "checkpoints")
    cmd = [
        sys.executable,
        "-m",
        "lossbench.train",
        "-m",
        "loss=ce,mae",
        "trainer.max_epochs=1",
        f"data.root={root}",
        "data.val_size=100",
        "data.train_eval_size=100",
        f"tracking.uri={mlflow_server.uri}",
        "tracking.experiment=team-test",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]
    result = subprocess.run(cmd, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert not (tmp_path / "mlflow.db").exists(), "a job fell back to a local SQLite store"

    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("team-test")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert all(r.info.status == "FINISHED" for r in runs), [(r.info.run_name, r.info.status) for r in runs]
    jobs = [r for r in runs if r.data.tags.get("loss")]  # the rest: at most the sweep's parent run
    assert len(runs) - len(jobs) <= 1, [r.info.run_name for r in runs]
    assert sorted(r.data.tags["loss"] for r in jobs) == ["ce", "mae"]
    for run in jobs:
        assert run.data.tags.get("optimizer"), run.data.tags
        for key in ("train/loss", "val/loss"):
            history = client.get_metric_history(run.info.run_id, key)
            assert len(history) == 1, f"{key}: {history}"  # one epoch, one point
            assert math.isfinite(history[0].value)
    assert len({r.data.tags.get("sweep_id") for r in jobs}) == 1 and jobs[0].data.tags.get("sweep_id")


# ----------------------------------------------------------------------------- failing fast


@pytest.fixture
def impatient_client(monkeypatch: pytest.MonkeyPatch):
    """MLflow's HTTP settings for failing fast; read on every request, so setting them works in-process.
    Defaults (7 retries, backoff factor 2, 120 s timeout per attempt) wait ~4 min on a dead server."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")  # seconds per attempt; an int
    from mlflow import MlflowClient

    return MlflowClient


def _elapsed_failing(call) -> float:
    from mlflow.exceptions import MlflowException

    start = time.monotonic()
    with pytest.raises(MlflowException):
        call()
    return time.monotonic() - start


def test_client_fails_fast_when_server_is_down(impatient_client):
    from servers import free_port

    client = impatient_client(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    assert _elapsed_failing(lambda: client.search_experiments(max_results=1)) < 5


def test_client_fails_fast_when_server_hangs(impatient_client):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hung:  # accepts connections, never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        client = impatient_client(f"http://127.0.0.1:{hung.getsockname()[1]}")
        elapsed = _elapsed_failing(lambda: client.search_experiments(max_results=1))
    assert 1.5 < elapsed < 6


# ----------------------------------------------------------------------------- logins


def test_a_login_inside_a_server_uri_is_refused_without_echoing_it():
    """Credentials come from the environment only: a server URI carrying one is refused in a line that names the
    variables and not the password; a database URI keeps its own (its password is redacted where it is shown)."""
    from lossbench.store import TrackingError, resolve_uri

    for uri in ("http://alice:s3cret@mlflow.example.org:5000", "https://alice@mlflow.example.org"):
        with pytest.raises(TrackingError) as refused:
            resolve_uri(uri)
        message = str(refused.value)
        assert "s3cret" not in message and "alice" not in message
        assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in message
    assert resolve_uri("http://mlflow.example.org:5000") == "http://mlflow.example.org:5000"
    assert resolve_uri("postgresql://u:p@db/x") == "postgresql://u:p@db/x"
