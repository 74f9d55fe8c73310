"""python -m lossbench.team — the team server's accounts: who may read, who may write which experiment.

For an MLflow server running its basic-auth app (docker/compose.yaml; docs/team.md). A new user has no
permission on anything until granted one::

    export MLFLOW_TRACKING_URI=http://gpu-box:5000
    export MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=...     # an admin's login
    python -m lossbench.team add-user bob --experiment team --permission READ
    python -m lossbench.team set-password bob

``add-user`` creates the user when they do not exist yet (and the experiment, tagged for model training, when
it does not), then grants the permission: READ to look (UI, report), EDIT to train into it. Run it again to
change the permission or to grant another experiment. A password never goes on the command line: it is read
from ``--password-file FILE`` (its first line), else ``$LOSSBENCH_NEW_PASSWORD``, else asked twice at the
terminal. MLflow wants at least 12 characters.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lossbench.errors import CREDENTIAL_VARS, LossbenchError, error_line, first_line
from lossbench.store_links import is_server, ui_base

PROGRAM = "lossbench.team"
PASSWORD_ENV = "LOSSBENCH_NEW_PASSWORD"
PERMISSIONS = ("READ", "EDIT")


class TeamError(LossbenchError):
    """Bad input or a server that says no: one line, exit 2."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m {PROGRAM}", description=__doc__.split("\n\n")[0])
    p.add_argument("--tracking-uri", default=None, help="the server (default: $MLFLOW_TRACKING_URI)")
    commands = p.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add-user", help="create a user (if new) and grant them one experiment")
    add.add_argument("name")
    add.add_argument("--experiment", required=True, help="the experiment's name (created if it does not exist)")
    add.add_argument("--permission", required=True, choices=PERMISSIONS, help="READ: look; EDIT: train into it")
    add.add_argument("--password-file", type=Path, help=f"the new user's password (else ${PASSWORD_ENV}, else asked)")
    rotate = commands.add_parser("set-password", help="give a user (yourself too) a new password")
    rotate.add_argument("name")
    rotate.add_argument("--password-file", type=Path, help=f"the new password (else ${PASSWORD_ENV}, else asked)")
    return p


def new_password(path: Path | None, who: str) -> str:
    """The password for ``who``: the first line of ``path``, else ``$LOSSBENCH_NEW_PASSWORD``, else typed twice."""
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise TeamError(f"--password-file {path}: {e.strerror}") from e
        password = lines[0] if lines else ""
    elif os.environ.get(PASSWORD_ENV):
        password = os.environ[PASSWORD_ENV]
    elif sys.stdin.isatty():
        password = getpass.getpass(f"new password for {who}: ")
        if getpass.getpass("again: ") != password:
            raise TeamError("the two passwords differ; nothing changed")
    else:
        raise TeamError(
            f"no password for {who}: give --password-file FILE or set {PASSWORD_ENV} (never on the command line)"
        )
    if len(password) < 12:
        raise TeamError(f"the password for {who} has {len(password)} characters; MLflow wants at least 12")
    return password


def server_uri(given: str | None) -> str:
    """The server to manage: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``; with an admin's login in the environment."""
    from lossbench.store import resolve_uri  # MLflow: once the arguments are read; it refuses a login in the URI

    uri = given or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not is_server(uri):
        raise TeamError(
            f"accounts live on a tracking server: pass --tracking-uri http://HOST:PORT or set MLFLOW_TRACKING_URI (got {uri!r})"
        )
    if not all(os.environ.get(name) for name in CREDENTIAL_VARS):
        raise TeamError(f"set {' and '.join(CREDENTIAL_VARS)} to an admin's login")
    return resolve_uri(uri)


def _refused(error: Exception, uri: str) -> TeamError | None:
    """A 401 or 403 from the accounts API as one line (403 there means: not an admin)."""
    code = getattr(error, "error_code", None)
    admin = os.environ.get(CREDENTIAL_VARS[0])
    if code in ("UNAUTHENTICATED", "CUSTOMER_UNAUTHORIZED"):
        return TeamError(f"{ui_base(uri)} refused the login {admin!r}: check {' and '.join(CREDENTIAL_VARS)}")
    if code == "PERMISSION_DENIED":
        return TeamError(
            f"{admin!r} is not an admin of {ui_base(uri)}: set {' and '.join(CREDENTIAL_VARS)} to an admin's login"
        )
    return None


def user_exists(client, name: str) -> bool:
    from mlflow.exceptions import MlflowException  # MLflow: once the arguments are read

    try:
        client.get_user(name)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def add_user(uri: str, name: str, experiment: str, permission: str, password_file: Path | None) -> str:
    """Create ``name`` if new, create ``experiment`` if missing, grant ``permission`` on it; what was done, in a line."""
    from mlflow.server import get_app_client  # MLflow: once the arguments are read

    from lossbench.store import Tracker  # MLflow too

    client = get_app_client("basic-auth", tracking_uri=uri)
    created = not user_exists(client, name)
    if created:
        client.create_user(name, new_password(password_file, name))
    tracker = Tracker.connect(uri, experiment, timeout_s=30)  # creates it, tagged for model training, if missing
    client.grant_user_permission(name, "experiment", tracker.experiment_id, permission)
    who = f"new user {name!r}" if created else f"user {name!r}"
    return f"{who} has {permission} on experiment {experiment!r} (id {tracker.experiment_id}) at {uri}"


def set_password(uri: str, name: str, password_file: Path | None) -> str:
    """Give ``name`` a new password (one's own: MLflow checks the current one, from the environment)."""
    from mlflow.server import get_app_client  # MLflow: once the arguments are read

    client = get_app_client("basic-auth", tracking_uri=uri)
    own = name == os.environ.get(CREDENTIAL_VARS[0])
    password = new_password(password_file, name)
    client.update_user_password(name, password, current_password=os.environ[CREDENTIAL_VARS[1]] if own else None)
    after = f"; set {CREDENTIAL_VARS[1]} to it from now on" if own else ""
    return f"user {name!r} has a new password at {uri}{after}"


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; 0, or 2 with one line."""
    args = _parser().parse_args(argv)
    try:
        uri = server_uri(args.tracking_uri)
        try:
            if args.command == "add-user":
                done = add_user(uri, args.name, args.experiment, args.permission, args.password_file)
            else:
                done = set_password(uri, args.name, args.password_file)
        except LossbenchError:
            raise
        except Exception as e:
            raise _refused(e, uri) or TeamError(first_line(e)) from e
    except LossbenchError as e:
        print(error_line(str(e), PROGRAM), file=sys.stderr)
        return 2
    print(done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
