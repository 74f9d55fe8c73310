"""Where a person looks at a run or a sweep: MLflow UI deep links and the command that starts the UI.

No Lightning or torch import: the training run, the sweep callback and the report all print these.
Facts from MLflow 3.17's UI bundle (``mlflow/server/js/build``):

- The experiment page opens in the GenAI "Overview" unless the URL says ``workflowType=machine_learning``
  (without it the UI falls back to the browser's saved choice, ``genai`` on a fresh browser).
- The runs table reads its filter from the ``searchFilter`` query parameter of
  ``#/experiments/<id>/runs``; a run's page is ``#/experiments/<id>/runs/<run id>``.
- A "shared view" is an experiment tag ``mlflow.sharedViewState.<key>`` holding the runs page's state as
  JSON (filter, ``groupBy`` as ``tag.average.<tag>``, ``chartsSearchFilter``, a regular expression);
  ``#/experiments/<id>/runs?viewStateShareKey=<key>`` opens it, ``compareRunsMode=CHART`` as charts.
- Experiments carry the tag ``mlflow.experimentKind``; ``custom_model_development`` is the kind the UI
  labels "Machine learning" (model training). lossbench sets it on its experiments.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from lossbench.config import redact
from lossbench.names import OVERFIT_METRICS, SWEEP_TAG

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
SHARED_VIEW_TAG = "mlflow.sharedViewState."
CURVE_CHARTS = "^(" + "|".join(re.escape(name) for name in OVERFIT_METRICS) + ")$"
"""The charts a sweep's curves view shows: overfitting on one scale for every loss (lossbench.names.OVERFIT_METRICS:
smoothed val NLL above its lowest while training NLL fell, the same rise while it rose too (drift), the accuracy and
NLL gaps), so a loss whose NLL lives at 2-4 does not hide the rise of one at 0.3."""
UI_PORT = 5000
_VIEW = {"workflowType": "machine_learning"}  # MLflow UI's model-training view


DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
"""Where a run, a report and the claims look without tracking.uri / --tracking-uri / $MLFLOW_TRACKING_URI."""


def default_tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else an SQLite store ``mlflow.db`` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def is_server(uri: str) -> bool:
    """True for a tracking server (its URL is the UI), false for a store the UI must be started on."""
    return uri.startswith(("http://", "https://"))


def ui_base(uri: str, port: int = UI_PORT) -> str:
    """The UI's address: the server itself (without any ``user:password@``), or where ``mlflow ui`` listens."""
    if not is_server(uri):
        return f"http://127.0.0.1:{port}"
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])).rstrip("/")


def mlflow_executable() -> str:
    """``mlflow`` as any shell runs it: this environment's own script by its full path (a shell where the virtual
    environment is not activated, or ``uv run`` is not in front, has no ``mlflow`` on its PATH), else this
    interpreter with ``-m mlflow``."""
    script = Path(sys.executable).parent / "mlflow"
    if script.is_file() and os.access(script, os.X_OK):
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m mlflow"


def ui_command(uri: str, port: int = UI_PORT) -> str | None:
    """The exact command that serves the UI for this store, runnable as typed (passwords hidden); None for a
    tracking server."""
    if is_server(uri):
        return None
    return f"{mlflow_executable()} ui --backend-store-uri {shlex.quote(redact('uri', uri))} --port {port}"


def _hash_route(path: str, params: dict[str, str]) -> str:
    return f"#/{path}?{urlencode(params, quote_via=quote)}"


def run_url(uri: str, experiment_id: str, run_id: str, port: int = UI_PORT) -> str:
    """The UI page of one run, in the model-training view."""
    return f"{ui_base(uri, port)}/{_hash_route(f'experiments/{experiment_id}/runs/{run_id}', _VIEW)}"


def experiment_url(uri: str, experiment_id: str, port: int = UI_PORT) -> str:
    """The experiment's runs table, in the model-training view."""
    return f"{ui_base(uri, port)}/{_hash_route(f'experiments/{experiment_id}/runs', _VIEW)}"


def sweep_url(uri: str, experiment_id: str, sweep_id: str, port: int = UI_PORT) -> str:
    """The experiment's runs table filtered to one sweep (``tags.sweep_id = '<id>'``), in the model-training view."""
    params = {**_VIEW, "searchFilter": f"tags.{SWEEP_TAG} = '{sweep_id}'"}
    return f"{ui_base(uri, port)}/{_hash_route(f'experiments/{experiment_id}/runs', params)}"


def curves_view(sweep_id: str, group_by: Sequence[tuple[str, str]] = (("tag", "loss"),)) -> tuple[str, str, str]:
    """(experiment tag, its JSON value, share key) of a view of the sweep's runs grouped by ``group_by`` (``(mode,
    key)`` pairs, ``("tag", "loss")``, ``("tag", "optimizer")``: loss × optimizer, the mean of each group's runs), as
    charts of :data:`CURVE_CHARTS`. One key is written as MLflow's short form ``tag.average.loss``; several as its
    object form (``groupByKeys``, which MLflow 3.17's UI reads as is)."""
    key = "lossbench-curves-" + re.sub(r"[^A-Za-z0-9_-]+", "_", sweep_id)
    keys = [{"mode": mode, "groupByData": data} for mode, data in group_by]
    grouping: object = (
        f"{group_by[0][0]}.average.{group_by[0][1]}"
        if len(keys) == 1
        else {"aggregateFunction": "average", "groupByKeys": keys}
    )
    state = {
        "searchFilter": f"tags.{SWEEP_TAG} = '{sweep_id}'",
        "groupBy": grouping,
        "chartsSearchFilter": CURVE_CHARTS,
    }
    return SHARED_VIEW_TAG + key, json.dumps(state), key


def grouping_words(group_by: Sequence[tuple[str, str]]) -> str:
    """``loss × optimizer``: how a curves view groups, in words."""
    return " × ".join(data for _, data in group_by)


def curves_url(uri: str, experiment_id: str, share_key: str, port: int = UI_PORT) -> str:
    """The runs page opened on a shared view (:func:`curves_view`), as charts, in the model-training view."""
    params = {**_VIEW, "compareRunsMode": "CHART", "viewStateShareKey": share_key}
    return f"{ui_base(uri, port)}/{_hash_route(f'experiments/{experiment_id}/runs', params)}"


def look_lines(uri: str, url: str, port: int = UI_PORT) -> list[str]:
    """The closing lines that tell a person how to see a result: start the UI (if needed), then open the link."""
    command = ui_command(uri, port)
    if command is None:
        return [f"open:   {url}"]
    return [f"ui:     {command}", f"open:   {url}"]
