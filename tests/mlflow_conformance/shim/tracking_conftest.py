"""MLflow's ``tests/tracking/conftest.py`` for the run against modelog (copied in as such).

* one broker per session (``MODELOG_TEST_BROKER`` or the embedded one), handed to
  the stand-in ``ServerThread`` that MLflow's ``client`` fixtures enter;
* ``mlflow.server`` (absent from ``mlflow-skinny``) stubbed, so MLflow's test
  files import unmodified: ``initialize_backend_stores`` does nothing and
  ``app`` is ``None`` -- no MLflow server ever starts; the ``file`` and
  ``sqlalchemy`` parameters both run against modelog.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest
from tests.tracking import integration_test_utils

from modelog.streams.broker import EmbeddedBroker


def _no_backend(*args: Any, **kwargs: Any) -> None:
    """MLflow's server stores are never used: the server is modelog."""


def _stub_mlflow_server() -> None:
    try:
        import mlflow.server.fastapi_app  # noqa: F401 -- present in full mlflow
        import mlflow.server.handlers as handlers
    except ImportError:
        server = types.ModuleType("mlflow.server")
        handlers = types.ModuleType("mlflow.server.handlers")
        fastapi_app = types.ModuleType("mlflow.server.fastapi_app")
        fastapi_app.app = None  # type: ignore[attr-defined]
        server.handlers = handlers  # type: ignore[attr-defined]
        server.fastapi_app = fastapi_app  # type: ignore[attr-defined]
        sys.modules.update({"mlflow.server": server, "mlflow.server.handlers": handlers,
                            "mlflow.server.fastapi_app": fastapi_app})
    handlers._tracking_store = None  # type: ignore[attr-defined]
    handlers._model_registry_store = None  # type: ignore[attr-defined]
    handlers.initialize_backend_stores = _no_backend  # type: ignore[attr-defined]


_stub_mlflow_server()


@pytest.fixture(scope="session", autouse=True)
def modelog_broker() -> Iterator[str]:
    """The session's broker, for every modelog deployment the tests start."""
    external = os.environ.get("MODELOG_TEST_BROKER")
    if external:
        integration_test_utils.BROKER[:] = [external]
        yield external
        return
    with EmbeddedBroker() as embedded:
        integration_test_utils.BROKER[:] = [embedded.bootstrap_servers]
        yield embedded.bootstrap_servers
