"""The tracking store: checking its URI, telling "away" from "bad request", failing fast.

A store found unreachable is remembered in this process (:func:`mark_unreachable`); every
:class:`~ssad.study.tracking.tracker.StudyTracker` on it then checks ``/health`` before a call
and raises :class:`TrackingUnavailable` at once while it fails, instead of stalling minutes in
MLflow's retries.
"""

from __future__ import annotations

import os
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException

__all__ = [
    "TRACKING_ERRORS",
    "TrackingUnavailable",
    "check_available",
    "check_tracking_uri",
    "connect",
    "mark_reachable",
    "mark_unreachable",
    "reachable",
    "unreachable",
]

# What MLflow's client raises when its store is away: MlflowException ("API request to ... failed
# with exception ... Max retries exceeded ... Connection refused", or a timeout), or an OSError
# (requests' own errors are OSErrors: an artifact upload to a stopped server).
TRACKING_ERRORS = (MlflowException, OSError)
# A fail-fast client (see StudyTracker(fail_fast=True)) gives up after about 3 s on a dead server
# instead of MLflow's default of 7 retries with exponential backoff (about 4 minutes per call).
FAIL_FAST_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
PROBE_TIMEOUT_S = 3.0
_UNREACHABLE: dict[str, float] = {}  # tracking URI -> when this process found it unreachable
_ENV_LOCK = threading.Lock()


class TrackingUnavailable(ConnectionError):
    """The tracking store was found unreachable and still is (raised at once, no retries)."""


def check_tracking_uri(uri: str) -> str:
    """Fail early, with the URI in the message, when the tracking store can't be reached.

    Relative ``sqlite:///`` paths are made absolute so Ray workers and the driver agree.
    """
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        path = path if path.is_absolute() else Path.cwd() / path
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as resp:
                if resp.status != 200:
                    raise OSError(f"HTTP {resp.status}")
        except OSError as exc:
            raise ConnectionError(
                f"mlflow.tracking_uri {uri}: tracking server not reachable ({exc})"
            ) from None
        return uri
    raise ValueError(f"mlflow.tracking_uri {uri!r}: use sqlite:///PATH or http(s)://HOST:PORT")


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (from an MLflow call) means the store is away, not that a request was bad.

    No answer, a timeout, a 5xx after MLflow's retries: the store. A 4xx answer (an unknown run,
    an invalid value): the request.
    """
    if isinstance(exc, RestException):
        return exc.get_http_status_code() >= 500
    if isinstance(exc, MlflowException):
        return True
    return isinstance(
        exc, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)
    )


def reachable(uri: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """A tracking server answers ``/health`` within ``timeout`` s (a non-HTTP store: True)."""
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def mark_unreachable(uri: str) -> None:
    """Remember (in this process) that ``uri`` is away: every :class:`StudyTracker` on it then
    checks ``/health`` before a call and raises :class:`TrackingUnavailable` at once while it
    fails, instead of stalling minutes in MLflow's retries."""
    _UNREACHABLE.setdefault(uri, time.time())


def mark_reachable(uri: str) -> None:
    _UNREACHABLE.pop(uri, None)


def check_available(uri: str) -> None:
    """Raise :class:`TrackingUnavailable` while a store this process found away still is."""
    if uri not in _UNREACHABLE:
        return
    if not reachable(uri):
        since = time.strftime("%H:%M:%S", time.localtime(_UNREACHABLE[uri]))
        raise TrackingUnavailable(
            f"mlflow.tracking_uri {uri}: tracking server unreachable "
            f"(since {since}); what it missed is kept in Tune's storage: once it is "
            "back, `ssad study sync SPEC` logs it"
        )
    mark_reachable(uri)


def connect(uri: str, *, fail_fast: bool = False) -> MlflowClient:
    """A client of the store ``uri`` (tracking and registry); ``fail_fast``: see
    :class:`_FailFastClient`."""
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    return _FailFastClient(client) if fail_fast else client  # type: ignore[return-value]


@contextmanager
def _fail_fast_http():
    """MLflow's HTTP retry settings are read from the environment at each request."""
    with _ENV_LOCK:
        saved = {k: os.environ.get(k) for k in FAIL_FAST_HTTP}
        os.environ.update(FAIL_FAST_HTTP)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


class _FailFastClient:
    """An :class:`MlflowClient` whose calls give up after a few seconds on a dead server."""

    def __init__(self, client: MlflowClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with _fail_fast_http():
                return attr(*args, **kwargs)

        return call
