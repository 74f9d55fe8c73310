"""How lossbench says something went wrong: one line, one format, one exit code per kind.

The bottom floor (no lossbench import). Bad input is a :class:`ConfigError` (exit 2) raised before anything
is trained or recorded; a run that failed is a :class:`LossbenchError` with ``exit_code = 1``. Whatever the
cause, a person reads one line: :func:`error_line` (``lossbench: error: ...``), built from :func:`one_line`.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import NoReturn
from urllib.parse import urlsplit

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

COMPOSITION_ERRORS = (ConfigCompositionException, MissingConfigException, OverrideParseException)
"""What Hydra raises for a command line it cannot compose: an unknown option, experiment or key."""

LINE_LIMIT = 400
"""Characters of an error's own text kept in one line (the rest is in the job's log)."""


class LossbenchError(Exception):
    """An error reported as one line, with no traceback: 2 for bad input, 1 for a run that failed."""

    exit_code = 2


class ConfigError(LossbenchError, ValueError):
    """A config value that lossbench cannot train with."""


def one_line(text: object, limit: int = LINE_LIMIT) -> str:
    """``text`` with every run of whitespace (newlines too) made one space, cut at ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def first_line(text: object, limit: int = LINE_LIMIT) -> str:
    """The first non-empty line of ``text`` (a library's multi-line message often says it all there)."""
    lines = [line for line in str(text).strip().splitlines() if line.strip()]
    return one_line(lines[0] if lines else "", limit)


def describe(error: BaseException, limit: int = LINE_LIMIT) -> str:
    """``Type: message`` of the error that caused ``error`` (Hydra and Lightning wrap the original one)."""
    cause = error.__cause__ or error
    return f"{type(cause).__name__}: {one_line(cause, limit) or 'no message'}"


def error_line(message: str, program: str = "lossbench") -> str:
    """The one line a command prints to stderr before it exits non-zero."""
    return f"{program}: error: {message}"


def composition_message(error: Exception) -> str:
    """One line for a command line Hydra cannot compose (``COMPOSITION_ERRORS``): which override, and what it
    accepts. Said the same way by every lossbench command that takes Hydra overrides."""
    if isinstance(error, MissingConfigException) and error.options is not None:
        group, _, choice = str(error.missing_cfg_file).rpartition("/")
        listing = ", ".join(sorted(error.options))
        return f"{group}={choice}: no such option in conf/{group}/; choose one of {listing}"
    text = first_line(error)
    key = re.match(r"Could not override '([^']+)'", text)
    if key:
        return (
            f"{key[1]}: no such key in the config (python -m lossbench.train --help lists the groups and keys; "
            f"+{key[1]}=VALUE adds a new one)"
        )
    return one_line(error) + " (python -m lossbench.train --help lists the groups and keys)"


CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
"""Where a tracking server's credentials come from: the environment, never a URI, a command line or a config."""

_READS = ("/get", "/search", "/get-by-name", "/get-history", "/list")  # endpoint endings that need READ only


def access_refused(error: BaseException, server: str = "", experiment: str = "") -> str | None:
    """One line for a tracking server that refused the credentials (HTTP 401) or the permission (403) of
    ``$MLFLOW_TRACKING_USERNAME``, naming what to set or to ask for; None for any other error.

    ``server``: its address (no credentials in it); ``experiment``: the experiment the command works in.
    MLflow's exception carries ``error_code`` and names the endpoint it called, which tells READ from EDIT."""
    code = getattr(error, "error_code", None)  # MLflow's REST client; its artifact uploads raise requests' HTTPError
    response, request = getattr(error, "response", None), getattr(error, "request", None)
    code = {401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED"}.get(getattr(response, "status_code", None), code)
    user = os.environ.get(CREDENTIAL_VARS[0])
    at = f" at {server}" if server else ""
    if code in ("UNAUTHENTICATED", "CUSTOMER_UNAUTHORIZED"):
        if not (user and os.environ.get(CREDENTIAL_VARS[1])):
            return f"the tracking server{at} wants a login: set {' and '.join(CREDENTIAL_VARS)} (401 Unauthorized)"
        return (
            f"the tracking server{at} refused user {user!r}: check {' and '.join(CREDENTIAL_VARS)} (401 Unauthorized)"
        )
    if code != "PERMISSION_DENIED":
        return None
    named = re.search(r"endpoint (\S+)", str(error))
    endpoint = named[1] if named else urlsplit(getattr(response, "url", "") or "").path or "request"
    read = endpoint.endswith(_READS) or getattr(request, "method", None) == "GET"
    needed = "READ" if read else "EDIT"
    on = f"experiment {experiment!r}" if experiment else "this experiment"
    grant = (
        f"python -m lossbench.team add-user {user or 'NAME'} --experiment {experiment or 'NAME'} --permission {needed}"
    )
    return (
        f"user {user!r} lacks permission on {on}{at} ({endpoint}: 403 Permission "
        f"denied): this needs {needed}; an admin grants it with `{grant}`"
    )


def usage_error(prog: str, message: str, program: str | None = None) -> NoReturn:
    """A command line argparse cannot read: one line (what was wrong, and where the usage is), exit 2."""
    print(error_line(f"{message} (see {prog} --help)", program or prog.removeprefix("python -m ")), file=sys.stderr)
    sys.exit(2)


class OneLineParser(argparse.ArgumentParser):
    """argparse's parser whose usage mistakes are one ``error:`` line, not its usage text (:func:`usage_error`)."""

    def error(self, message: str) -> NoReturn:
        usage_error(self.prog, message)
