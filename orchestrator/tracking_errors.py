"""Which MLflow errors mean "the tracking server did not answer", and why, in a few words.

MLflow wraps a failed request in one long ``MlflowException`` line naming the request; the cause
(a refused or reset connection, a timeout, a 5xx after MLflow's own retries) is in the chain of
exceptions it was raised from. The driver's writer waits out such errors
(:mod:`orchestrator.tracking_writer`); a command meets one when its server goes away mid-way,
and says so in one line (exit 2) instead of a traceback.
"""

from __future__ import annotations

import re
import sys
import urllib.error
from typing import Any


def is_transient(err: BaseException) -> bool:
    """Whether a failed call may go through if sent again: no answer at all (refused, reset,
    closed, timed out) or a 5xx; False for an answer that refuses the call (a 4xx)."""
    for cause in causes(err):
        status = http_status(cause)
        if status is not None:
            return status >= 500
        if isinstance(cause, OSError):
            return True
    return False


def http_status(err: BaseException) -> int | None:
    """The HTTP status of an error that carries a server's answer (MLflow's RestException,
    requests' and urllib's HTTPError), else None."""
    from mlflow.exceptions import RestException

    if isinstance(err, RestException):
        return err.get_http_status_code()
    if isinstance(err, urllib.error.HTTPError):
        return err.code
    status = getattr(getattr(err, "response", None), "status_code", None)
    return status if isinstance(status, int) else None


def causes(err: BaseException) -> list[BaseException]:
    """The error and what it was raised from or during, outermost first; urllib3 also keeps
    the socket error as an argument (``ProtocolError('Connection aborted.', OSError(...))``)."""
    chain: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in chain:
        chain.append(current)
        wrapped = [a for a in current.args if isinstance(a, BaseException)]
        current = current.__cause__ or current.__context__ or (wrapped[0] if wrapped else None)
    return chain


def reason(err: BaseException) -> str:
    """The cause in a few words: the innermost socket error (MLflow wraps it in a long line
    naming the request), else the message's first line, cut short."""
    for cause in reversed(causes(err)):
        if not isinstance(cause, OSError):
            continue
        if cause.strerror:
            return cause.strerror  # e.g. 'Connection refused'
        text = str(cause).strip()
        if text and len(text) <= 120:
            return text  # e.g. 'Remote end closed connection without response'
    text = str(err)
    return text.splitlines()[0][:160] if text else type(err).__name__


def lost_server_message(err: BaseException) -> str | None:
    """The one-line error of an MLflow request that got no answer, or None for other errors."""
    mlflow_exceptions = sys.modules.get("mlflow.exceptions")  # not loaded: not an MLflow error
    if mlflow_exceptions is None or not isinstance(err, mlflow_exceptions.MlflowException):
        return None
    if not is_transient(err):
        return None
    found = re.search(r"API request to (\S+?)(/api/\S+|/ajax-api/\S+) failed", str(err))
    where = f"at {found.group(1)} " if found else ""
    return (
        f"the MLflow tracking server {where}stopped answering ({reason(err)}); start it again "
        "(or check --tracking-uri / MLFLOW_TRACKING_URI) and rerun the command"
    )


def read_only_store_message(err: BaseException) -> str | None:
    """The one-line error of a write to an SQLite store the user may not write (the file or
    its folder read-only), or None for other errors."""
    if not any("attempt to write a readonly database" in str(c) for c in causes(err)):
        return None
    return (
        "the MLflow store (its SQLite file) is read-only here, and this command writes to it "
        "(tags, metrics, artifacts): run it where the file and its folder are writable, or on "
        "a copy of them"
    )


def restore_command(client: Any, run_id: str) -> str:
    """The shell command that takes ``run_id`` out of MLflow's trash in the store ``client``
    reads (``mlflow runs restore`` reads the store from the environment, not the folder)."""
    import shlex

    store = shlex.quote(client.tracking_uri)
    return f"`MLFLOW_TRACKING_URI={store} mlflow runs restore --run-id {run_id}`"


def no_parent_message(client: Any, sweep: str, experiment_id: str) -> str:
    """Why experiment ``sweep`` yields no sweep: its parent run deleted (named, with the way
    back), or never created (a sweep stopped before it started)."""
    from mlflow.entities import ViewType

    query = "tags.`ablate.kind` = 'sweep'"
    deleted = client.search_runs([experiment_id], query, run_view_type=ViewType.DELETED_ONLY)
    if deleted:
        run_id = deleted[0].info.run_id
        return (
            f"sweep {sweep!r}: its parent run {run_id} was deleted in MLflow; restore it with "
            f"{restore_command(client, run_id)} to read the sweep again"
        )
    return f"sweep {sweep!r}: MLflow experiment {sweep!r} holds no sweep (no parent run)"
