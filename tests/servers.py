"""Real servers for integration tests: PostgreSQL from the system's packages, and an MLflow tracking
server on it, each started on 127.0.0.1 and a free port, and stopped by PID, whatever happens.

The MLflow server is started the way ``docker/compose.yaml`` starts it: the backend-store URI names
user, host, port and database but no password; the password reaches libpq through ``PGPASSWORD``.
So this also checks the compose file's way of keeping the password off the command line.

Use the context managers directly, or the session-scoped fixtures ``postgres`` and ``mlflow_server``::

    pytest_plugins = ["servers"]

    def test_it(mlflow_server):
        client = MlflowClient(mlflow_server.uri)

Linux only (it reads ``/proc``). PostgreSQL refuses to run as root, so under root the cluster runs
as the ``postgres`` system user (``runuser``) in a temporary directory owned by it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
PG_USER = "lossbench"
PG_DB = "mlflow"
ENTRYPOINT = Path(__file__).resolve().parent.parent / "docker" / "mlflow-entrypoint.sh"


# ----------------------------------------------------------------------------- processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of a live PID from /proc, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return fields[0], int(fields[2])


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) PIDs in process group ``pgid``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] == pgid and stat[0] != "Z":
                pids.append(int(entry))
    return pids


def _wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group led by ``proc`` (started with ``start_new_session=True``), SIGKILL
    what is left after ``grace`` seconds, reap the leader, and raise if any member still runs."""
    pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not group_members(pgid) and proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
        if _wait_until(lambda: not group_members(pgid), timeout=wait):
            break
    if proc.poll() is None:
        proc.wait(timeout=5)
    left = group_members(pgid)
    if left:
        raise RuntimeError(f"processes {left} of group {pgid} survived SIGKILL")


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return "(no log)"


# ----------------------------------------------------------------------------- PostgreSQL


def pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding initdb and pg_ctl, or None."""
    found = [
        Path(p) for p in glob.glob(PG_BIN_GLOB) if (Path(p) / "initdb").is_file() and (Path(p) / "pg_ctl").is_file()
    ]
    return max(found, key=lambda p: int(p.parent.name)) if found else None


def _run_as(user: str | None, cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run ``cmd`` as ``user`` (via runuser, when we are root), failing loudly with its output."""
    full = ["runuser", "-u", user, "--", *cmd] if user else cmd
    result = subprocess.run(full, check=False, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@dataclass
class Postgres:
    """A running PostgreSQL cluster: ``database`` owned by ``user`` with ``password``, on 127.0.0.1:``port``."""

    bin: Path
    datadir: Path
    host: str
    port: int
    user: str
    password: str
    database: str
    pid: int
    run_as: str | None = field(repr=False, default=None)

    def sqlalchemy_uri(self, with_password: bool = False) -> str:
        """``postgresql+psycopg://user[:password]@host:port/database`` (psycopg 3's SQLAlchemy dialect)."""
        auth = f"{self.user}:{self.password}" if with_password else self.user
        return f"postgresql+psycopg://{auth}@{self.host}:{self.port}/{self.database}"

    def stop(self) -> None:
        """Fast shutdown with pg_ctl; SIGKILL the postmaster if that fails. Raises if it still runs."""
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            _run_as(
                self.run_as,
                [str(self.bin / "pg_ctl"), "stop", "-D", str(self.datadir), "-m", "fast", "-w", "-t", "30"],
                timeout=40,
            )
        if not _wait_until(lambda: not is_running(self.pid), timeout=10):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            _wait_until(lambda: not is_running(self.pid), timeout=10)
        if is_running(self.pid):
            raise RuntimeError(f"postgres (pid {self.pid}) is still running")


@contextlib.contextmanager
def start_postgres(database: str = PG_DB, user: str = PG_USER) -> Iterator[Postgres]:
    """Start a throwaway PostgreSQL cluster with password (scram) auth on 127.0.0.1, create
    ``database`` owned by ``user``, yield it, then stop it and delete its files."""
    import psycopg

    bin_dir = pg_bin()
    if bin_dir is None:
        raise RuntimeError(f"PostgreSQL is not installed (no initdb/pg_ctl in {PG_BIN_GLOB})")
    run_as = "postgres" if os.geteuid() == 0 else None
    # Not under pytest's tmp_path: its parents are mode 0700 for root, so `postgres` could not enter.
    base = Path(tempfile.mkdtemp(prefix="lossbench-pg-"))
    if run_as:
        entry = pwd.getpwnam(run_as)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    datadir, sockets, log = base / "data", base / "sockets", base / "postgres.log"
    password = secrets.token_hex(16)
    port = free_port()
    pid = None
    try:
        try:
            pwfile = base / "pwfile"
            pwfile.write_text(password + "\n")
            sockets.mkdir()
            if run_as:
                for path in (pwfile, sockets):
                    os.chown(path, entry.pw_uid, entry.pw_gid)
            _run_as(
                run_as,
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(datadir),
                    "-U",
                    user,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                timeout=120,
            )
            options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={sockets} -c fsync=off"
            _run_as(
                run_as,
                [str(bin_dir / "pg_ctl"), "start", "-D", str(datadir), "-l", str(log), "-o", options, "-w", "-t", "60"],
                timeout=90,
            )
            pid = int((datadir / "postmaster.pid").read_text().split()[0])
            with psycopg.connect(
                host="127.0.0.1",
                port=port,
                user=user,
                password=password,
                dbname="postgres",
                autocommit=True,
                connect_timeout=10,
            ) as conn:
                conn.execute(f'CREATE DATABASE "{database}" OWNER "{user}"')
        except Exception as exc:
            raise RuntimeError(f"PostgreSQL did not start: {exc}\n--- postgres log ---\n{_tail(log)}") from exc
        yield Postgres(bin_dir, datadir, "127.0.0.1", port, user, password, database, pid, run_as)
    finally:
        if pid is None and (datadir / "postmaster.pid").is_file():  # started, but pg_ctl gave up waiting
            with contextlib.suppress(ValueError, IndexError, OSError):
                pid = int((datadir / "postmaster.pid").read_text().split()[0])
        if pid is not None:
            Postgres(bin_dir, datadir, "127.0.0.1", port, user, password, database, pid, run_as).stop()
        shutil.rmtree(base, ignore_errors=True)


# ----------------------------------------------------------------------------- MLflow server


@dataclass(frozen=True)
class Auth:
    """What MLflow's basic-auth app starts with: its admin's name and password, and the CSRF secret."""

    admin: str
    admin_password: str
    secret_key: str

    @classmethod
    def fresh(cls) -> Auth:
        return cls("admin", secrets.token_urlsafe(18), secrets.token_hex(32))


@dataclass
class MlflowServer:
    """A running ``mlflow server``: clients use ``uri``; ``pid`` leads its process group; ``auth``: how its
    basic-auth app was set up (None: no authentication)."""

    uri: str
    port: int
    pid: int
    artifacts: Path
    log: Path
    backend: Postgres
    auth: Auth | None = None


def wait_for_health(uri: str, proc: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    """Poll ``<uri>/health`` until it answers 200 OK; fail early if the server process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not answer {uri}/health within {timeout:.0f} s:\n{_tail(log)}")


@contextlib.contextmanager
def start_mlflow_server(
    backend: Postgres,
    workdir: Path,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    python: str = sys.executable,
    auth: Auth | None = None,
) -> Iterator[MlflowServer]:
    """Run ``mlflow server`` (from ``python``'s environment) on ``backend`` with proxied artifacts
    under ``workdir``; stop its whole process group afterwards and check that none of it survives.

    With ``auth``: MLflow's basic-auth app, started as the team's container starts it (through
    ``docker/mlflow-entrypoint.sh``): users and permissions in ``backend``'s database, no permission for a
    new user, the admin's password and the CSRF secret from the environment."""
    workdir.mkdir(parents=True, exist_ok=True)
    artifacts, log = workdir / "mlartifacts", workdir / "mlflow-server.log"
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        # Like docker/compose.yaml: the password goes to libpq, not onto the command line.
        "PGPASSWORD": backend.password,
        # The GenAI job runner (huey) is not needed for tracking; it adds a process and /dev/shm files.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        **(extra_env or {}),
    }
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(name, None)
    server = [python, "-m", "mlflow", "server"]
    if auth is not None:
        env.update(
            {
                "PATH": f"{Path(python).parent}{os.pathsep}{env.get('PATH', '')}",  # the entrypoint runs `mlflow`
                "LOSSBENCH_AUTH_DATABASE_URI": backend.sqlalchemy_uri(),
                "MLFLOW_AUTH_ADMIN_USERNAME": auth.admin,
                "MLFLOW_AUTH_ADMIN_PASSWORD": auth.admin_password,
                "MLFLOW_FLASK_SERVER_SECRET_KEY": auth.secret_key,
                "MLFLOW_AUTH_CONFIG_PATH": str(workdir / "basic_auth.ini"),
            }
        )
        server = ["sh", str(ENTRYPOINT)]
    cmd = [
        *server,
        "--backend-store-uri",
        backend.sqlalchemy_uri(),
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True
        )
    try:
        wait_for_health(uri, proc, log)
        yield MlflowServer(uri, port, proc.pid, artifacts, log, backend, auth)
    finally:
        stop_group(proc)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server for the whole session; skipped where PostgreSQL is not installed."""
    if pg_bin() is None:
        pytest.skip(f"PostgreSQL is not installed (no initdb/pg_ctl in {PG_BIN_GLOB}; apt-get install postgresql)")
    with start_postgres() as server:
        yield server
    assert not is_running(server.pid), f"postgres pid {server.pid} leaked"


@pytest.fixture(scope="session")
def mlflow_server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """An MLflow tracking server on the session's PostgreSQL, reachable over HTTP at ``.uri``."""
    with start_mlflow_server(postgres, tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server
    assert not group_members(server.pid), f"mlflow server processes {group_members(server.pid)} leaked"


def create_database(server: Postgres, name: str) -> Postgres:
    """A new database ``name`` on ``server``, owned by its user: ``server`` as seen by a client of that database."""
    import psycopg

    with psycopg.connect(
        host=server.host,
        port=server.port,
        user=server.user,
        password=server.password,
        dbname=server.database,
        autocommit=True,
        connect_timeout=10,
    ) as conn:
        conn.execute(f'CREATE DATABASE "{name}" OWNER "{server.user}"')
    return dataclasses.replace(server, database=name)


@pytest.fixture(scope="module")
def auth_server(postgres: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """MLflow's basic-auth app for one test module, in a database of its own on the session's PostgreSQL
    (tracking store and users side by side, as in docker/compose.yaml); its admin's credentials are in ``.auth``."""
    backend = create_database(postgres, f"team_{secrets.token_hex(4)}")
    with start_mlflow_server(backend, tmp_path_factory.mktemp("auth-server"), auth=Auth.fresh()) as server:
        yield server
    assert not group_members(server.pid), f"mlflow server processes {group_members(server.pid)} leaked"


@dataclass
class MlflowUi:
    """A running ``mlflow ui`` on a store: the browser opens ``base``; ``pid`` leads its process group."""

    base: str
    port: int
    pid: int
    log: Path


@contextlib.contextmanager
def start_mlflow_ui(
    store_uri: str, workdir: Path, python: str = sys.executable, timeout: float = 150.0
) -> Iterator[MlflowUi]:
    """Run ``mlflow ui --backend-store-uri <store_uri>`` on 127.0.0.1 and a free port, as a person would
    (one worker: the default four take half a minute more to start on two cores); stop its group afterwards."""
    workdir.mkdir(parents=True, exist_ok=True)
    log, port = workdir / "mlflow-ui.log", free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [
        python,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        store_uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=workdir, start_new_session=True
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_health(base, proc, log, timeout=timeout)
        yield MlflowUi(base, port, proc.pid, log)
    finally:
        stop_group(proc)
