"""The team server with MLflow's basic-auth app: no one in without a login, no one writes without EDIT, and no
password in anything a sweep leaves behind. One real server (PostgreSQL and ``mlflow server --app-name
basic-auth``, started through ``docker/mlflow-entrypoint.sh`` as the team's container starts it) for the whole
module, on 127.0.0.1; its users are made with ``python -m lossbench.team``, as docs/team.md says."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from idx import write_mnist_family

if TYPE_CHECKING:
    from servers import MlflowServer

pytest_plugins = ["servers"]  # fixtures postgres and auth_server

pytestmark = pytest.mark.slow

EXPERIMENT = "team-auth"
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=5"
LEGACY_ADMIN = ("admin", "password1234")  # what MLflow's first start used to create, and what the world knows
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def status_of(uri: str, path: str, login: tuple[str, str] | None = None, body: str | None = None) -> int:
    """The HTTP status a plain request gets (no MLflow client in the way), with HTTP basic auth when ``login``."""
    request = urllib.request.Request(
        uri + path, data=None if body is None else body.encode(), headers={"Content-Type": "application/json"}
    )
    if login is not None:
        request.add_header("Authorization", "Basic " + b64encode(":".join(login).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def environment(login: tuple[str, str] | None, **extra: str) -> dict[str, str]:
    """This process's environment with ``login`` as MLflow's credentials (None: no credentials at all)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    if login is not None:
        env.update(zip(CREDENTIALS, login))
    return {**env, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", **extra}


@contextlib.contextmanager
def logged_in(login: tuple[str, str]) -> Iterator[None]:
    """MLflow clients in this process send ``login`` (MLflow reads the variables at every request)."""
    saved = {name: os.environ.get(name) for name in CREDENTIALS}
    os.environ.update(zip(CREDENTIALS, login))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def lossbench(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    """``python -m <args>`` started in ``cwd``, its output piped (text)."""
    return subprocess.Popen(
        [sys.executable, "-m", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finished(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{proc.args} ran over {timeout:.0f} s:\n{out[-2000:]}\n{err[-2000:]}")
    return proc.returncode, out, err


@dataclass(frozen=True)
class Team:
    server: MlflowServer
    admin: tuple[str, str]
    editor: tuple[str, str]  # EDIT on EXPERIMENT
    reviewer: tuple[str, str]  # READ on EXPERIMENT
    stranger: tuple[str, str]  # a user with no grant on EXPERIMENT
    experiment_id: str

    @property
    def passwords(self) -> list[str]:
        return [login[1] for login in (self.admin, self.editor, self.reviewer, self.stranger)]


@pytest.fixture(scope="module")
def team(auth_server: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Team:
    """The server's admin, and three users made with ``python -m lossbench.team add-user`` as docs/team.md does it:
    the editor's password from $LOSSBENCH_NEW_PASSWORD, the reviewer's from a file, the stranger's grant elsewhere."""
    work = tmp_path_factory.mktemp("team")
    admin = (auth_server.auth.admin, auth_server.auth.admin_password)
    editor, reviewer, stranger = ((name, secrets.token_urlsafe(18)) for name in ("edith", "rene", "stan"))
    (work / "rene.password").write_text(reviewer[1] + "\n")
    as_admin = environment(admin, MLFLOW_TRACKING_URI=auth_server.uri)
    add = ["lossbench.team", "add-user"]
    started = [
        lossbench(
            [*add, "edith", "--experiment", EXPERIMENT, "--permission", "EDIT"],
            as_admin | {"LOSSBENCH_NEW_PASSWORD": editor[1]},
            work,
        ),
        lossbench(
            [*add, "stan", "--experiment", "elsewhere", "--permission", "READ"],
            as_admin | {"LOSSBENCH_NEW_PASSWORD": stranger[1]},
            work,
        ),
    ]
    answers = [finished(proc, 120) for proc in started]
    # After the editor's: the experiment exists by then (two creating it at once would race).
    answers.append(
        finished(
            lossbench(
                [*add, "rene", "--experiment", EXPERIMENT, "--permission", "READ", "--password-file", "rene.password"],
                as_admin,
                work,
            ),
            120,
        )
    )
    for code, out, err in answers:
        assert code == 0, out + err
    assert answers[0][1].startswith(f"new user 'edith' has EDIT on experiment '{EXPERIMENT}'"), answers[0][1]
    assert answers[2][1].startswith(f"new user 'rene' has READ on experiment '{EXPERIMENT}'"), answers[2][1]
    from mlflow import MlflowClient

    with logged_in(admin):
        experiment = MlflowClient(auth_server.uri).get_experiment_by_name(EXPERIMENT)
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"  # made by lossbench.store
    return Team(auth_server, admin, editor, reviewer, stranger, experiment.experiment_id)


def test_no_login_no_entry(team: Team):
    """No login, a wrong password and MLflow's once well-known admin password all get 401; a user with no grant
    gets 403 on the experiment (the default permission is none); READ gets in."""
    uri, by_name = team.server.uri, f"/api/2.0/mlflow/experiments/get-by-name?experiment_name={EXPERIMENT}"
    statuses = {
        "no login": status_of(uri, SEARCH),
        "wrong password": status_of(uri, SEARCH, (team.reviewer[0], team.reviewer[1] + "x")),
        "admin/password1234": status_of(uri, SEARCH, LEGACY_ADMIN),
        "admin": status_of(uri, SEARCH, team.admin),
        "no grant, get experiment": status_of(uri, by_name, team.stranger),
        "READ, get experiment": status_of(uri, by_name, team.reviewer),
    }
    print("\n".join(f"{who}: {code}" for who, code in statuses.items()))
    assert statuses == {
        "no login": 401,
        "wrong password": 401,
        "admin/password1234": 401,
        "admin": 200,
        "no grant, get experiment": 403,
        "READ, get experiment": 200,
    }
    assert status_of(uri, "/health") == 200  # what compose's health check reads stays open


def test_read_user_can_neither_delete_nor_write(team: Team):
    """READ: deleting a run, logging a metric or a tag is refused with 403, and the run is as it was."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(team.server.uri)
    with logged_in(team.editor):
        run_id = client.create_run(team.experiment_id, run_name="kept", tags={"loss": "mae"}).info.run_id
        client.log_metric(run_id, "val/loss", 0.5, step=1)
        client.set_terminated(run_id)
    uri, login = team.server.uri, team.reviewer
    statuses = {
        "delete run": status_of(uri, "/api/2.0/mlflow/runs/delete", login, f'{{"run_id": "{run_id}"}}'),
        "log metric": status_of(
            uri,
            "/api/2.0/mlflow/runs/log-metric",
            login,
            f'{{"run_id": "{run_id}", "key": "val/loss", "value": 9.0, "timestamp": 1, "step": 2}}',
        ),
    }
    print("\n".join(f"READ user, {what}: {code}" for what, code in statuses.items()))
    assert statuses == {"delete run": 403, "log metric": 403}
    with logged_in(team.reviewer):  # the same through MLflow's own client
        for write in (
            lambda: client.delete_run(run_id),
            lambda: client.log_metric(run_id, "val/loss", 9.0, step=2),
            lambda: client.set_tag(run_id, "loss", "ce"),
        ):
            with pytest.raises(MlflowException) as refused:
                write()
            assert refused.value.error_code == "PERMISSION_DENIED"
        run = client.get_run(run_id)
        history = client.get_metric_history(run_id, "val/loss")
    assert run.info.lifecycle_stage == "active" and run.info.status == "FINISHED"
    assert run.data.tags["loss"] == "mae"
    assert [(m.step, m.value) for m in history] == [(1, 0.5)]


def _train(root: Path, uri: str, *overrides: str) -> list[str]:
    return [
        "lossbench.train",
        *overrides,
        "trainer.max_epochs=1",
        f"data.root={root}",
        "data.val_size=100",
        "data.train_eval_size=100",
        f"tracking.uri={uri}",
        f"tracking.experiment={EXPERIMENT}",
    ]


def test_edit_users_sweep_is_read_by_read_user_and_leaks_no_password(team: Team, tmp_path: Path):
    """The editor's two-job parallel sweep finishes; the reviewer reads its runs and makes its report (logging
    it would need EDIT: one line says so); no password is in any file, artifact, tag or param it left."""
    from mlflow import MlflowClient

    root = write_mnist_family(tmp_path / "data", "MNIST", n_train=600, n_test=200)
    env = environment(team.editor, LOSSBENCH_CHECKPOINTS=str(tmp_path / "checkpoints"))
    sweep = ["-m", "loss=ce,mae", "hydra.launcher.n_jobs=2", "analysis.figures=false"]
    sweep.append(f"hydra.sweep.dir={tmp_path / 'multirun'}")
    code, out, err = finished(lossbench(_train(root, team.server.uri, *sweep), env, tmp_path))
    assert code == 0, out[-3000:] + err[-3000:]

    client = MlflowClient(team.server.uri)
    with logged_in(team.reviewer):
        runs = client.search_runs([team.experiment_id], "tags.`lossbench.kind` = 'train' and tags.loss != ''")
        jobs = [r for r in runs if r.data.tags.get("sweep_id")]
        print("\n".join(f"{r.info.run_name} {r.info.status} loss={r.data.tags['loss']}" for r in jobs))
        assert sorted((r.data.tags["loss"], r.info.status) for r in jobs) == [("ce", "FINISHED"), ("mae", "FINISHED")]
        sweep_id = jobs[0].data.tags["sweep_id"]
        assert len(client.get_metric_history(jobs[0].info.run_id, "val/loss")) == 1

    as_reviewer = environment(team.reviewer)
    report = ["lossbench.report", "--experiment", EXPERIMENT, "--sweep", sweep_id, "--tracking-uri", team.server.uri]
    both = [
        lossbench([*report, "--no-log", "--out", str(tmp_path / "report")], as_reviewer, tmp_path),
        lossbench([*report, "--out", str(tmp_path / "report-logged")], as_reviewer, tmp_path),
    ]
    looked, logged = (finished(proc) for proc in both)
    assert looked[0] == 0, looked[1][-2000:] + looked[2][-2000:]
    assert (tmp_path / "report" / "report.html").is_file()
    assert logged[0] == 2, logged[1][-2000:] + logged[2][-2000:]
    error = logged[2].strip().splitlines()
    assert len(error) == 1 and error[0].startswith("lossbench.report: error: user 'rene' lacks permission"), error
    assert "needs EDIT" in error[0] and "--no-log" in error[0]

    # Every file the sweep and the reports wrote, the server's artifacts, and what the commands printed.
    (tmp_path / "printed.txt").write_text("\n".join([out, err, *looked[1:], *logged[1:]]))
    # tmp_path: the sweep's folder (job logs, Hydra's configs, outcomes), checkpoints, the sweep's own report
    # (reports/), the reviewer's two report folders, what the commands printed.
    searched = [str(tmp_path), str(team.server.artifacts)]
    words = [arg for password in team.passwords for arg in ("-e", password)]
    grep = subprocess.run(["grep", "-rlaF", *words, *searched], capture_output=True, text=True)
    files = sum(len(files) for place in searched for _, _, files in os.walk(place))
    print(
        f"$ grep -rlaF -e <each password> {' '.join(searched)}   # {files} files\nexit {grep.returncode}: {grep.stdout!r}"
    )
    assert grep.returncode == 1 and grep.stdout == "", f"a password is in {grep.stdout}{grep.stderr}"
    # The same grep finds what is there: the run ids, in the sweep's logs and the server's artifacts.
    control = subprocess.run(["grep", "-rlaF", "-e", jobs[0].info.run_id, *searched], capture_output=True, text=True)
    assert control.returncode == 0 and str(team.server.artifacts) in control.stdout, control.stdout

    with logged_in(team.admin):
        every = client.search_runs([team.experiment_id])
    written = [f"{k}={v}" for r in every for k, v in {**r.data.tags, **r.data.params}.items()]
    assert len(every) >= 3 and len(written) > 50
    assert not [w for w in written for password in team.passwords if password in w]


def test_missing_wrong_or_misplaced_login_is_one_line_and_no_run(team: Team, tmp_path: Path):
    """No login, a wrong password (a parallel sweep's), a login inside the URI and a READ user's training: each one
    line naming what to set or ask for, exit 2, and no run in the store."""
    from mlflow import MlflowClient

    root = write_mnist_family(tmp_path / "data", "MNIST", n_train=300, n_test=100)
    uri, (user, password) = team.server.uri, team.editor
    host = uri.removeprefix("http://")
    cases = {
        "no login": (None, uri, "wants a login: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
        "wrong password, sweep": ((user, password + "x"), uri, "refused user 'edith': check MLFLOW_TRACKING_USERNAME"),
        "login in the URI": (
            None,
            f"http://{user}:{password}@{host}",
            f"tracking URI {uri} must not carry a user name or password: remove 'user:password@' from it and set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead",
        ),
        "READ user trains": (
            team.reviewer,
            uri,
            "user 'rene' lacks permission on experiment 'team-auth' at " + uri + " (/api/2.0/mlflow/runs/create: "
            "403 Permission denied): this needs EDIT",
        ),
    }
    client = MlflowClient(uri)
    with logged_in(team.admin):
        before = {r.info.run_id for r in client.search_runs([team.experiment_id])}
    started = {}
    for case, (login, where, _) in cases.items():
        folder = tmp_path / case.replace(" ", "-")
        folder.mkdir()
        sweep = ["-m", "loss=ce,mae", "hydra.launcher.n_jobs=2"] if "sweep" in case else []
        started[case] = lossbench(_train(root, where, *sweep), environment(login), folder)
    for case, proc in started.items():
        code, out, err = finished(proc)
        lines = err.strip().splitlines()
        assert code == 2, f"{case}: {out[-2000:]}{err[-2000:]}"
        assert len(lines) == 1 and lines[0].startswith("lossbench: error: "), f"{case}: {err}"
        assert cases[case][2] in lines[0], f"{case}: {lines[0]}"
        assert password not in out + err, case
        print(f"{case}: exit {code}: {lines[0]}")
    with logged_in(team.admin):
        after = {r.info.run_id for r in client.search_runs([team.experiment_id])}
    assert after == before, "a refused login left a run"


def test_a_user_rotates_their_own_password(team: Team, tmp_path: Path):
    """``python -m lossbench.team set-password`` with the user's own login: the new password gets in, the old one
    gets 401 (MLflow checks the current password, which the command takes from the environment)."""
    name, old = team.stranger
    new = secrets.token_urlsafe(18)
    env = environment(team.stranger, MLFLOW_TRACKING_URI=team.server.uri, LOSSBENCH_NEW_PASSWORD=new)
    code, out, err = finished(lossbench(["lossbench.team", "set-password", name], env, tmp_path), 120)
    assert code == 0, out + err
    assert (
        out.strip()
        == f"user 'stan' has a new password at {team.server.uri}; set MLFLOW_TRACKING_PASSWORD to it from now on"
    )
    assert new not in out + err
    assert (status_of(team.server.uri, SEARCH, (name, new)), status_of(team.server.uri, SEARCH, (name, old))) == (
        200,
        401,
    )
