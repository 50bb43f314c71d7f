"""Stand-in for MLflow's ``tests/tracking/integration_test_utils.py``: modelog, not MLflow.

``ServerThread(app, port)`` is where MLflow's tests start their tracking server;
here it starts ``modelog mlflow-server`` (:class:`MlflowServer`) on ``port`` with
the registry worker (:class:`RegistryService`) in this process, on the session's
broker (``BROKER``, set by the shim's conftest) under a fresh topic prefix and
data directory, so every test sees an empty deployment, as MLflow's fixture
gives it an empty store. ``app`` (MLflow's own server) is ignored.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from modelog.config import Settings
from modelog.streams.mlflow_api import MlflowServer
from modelog.streams.registry_agent import RegistryService
from modelog.streams.topics import ensure_topics

BROKER: list[str] = []
"""The session broker's bootstrap servers (one entry), filled by the conftest."""


class ServerThread:
    """Context manager: a fresh modelog deployment behind MLflow's REST API; yields its URL."""

    def __init__(self, app: Any, port: int) -> None:
        self.port = port
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> str:
        if not BROKER:
            raise RuntimeError("no broker: the modelog shim's conftest.py did not run")
        data = Path(tempfile.mkdtemp(prefix="modelog-mlflow-"))
        self._stack.callback(shutil.rmtree, data, True)
        settings = Settings(broker=BROKER[0], data_dir=data,
                            topic_prefix=f"t{uuid.uuid4().hex[:10]}.", partitions=2,
                            producer_name="mlflow-tests")
        ensure_topics(settings)
        self._stack.enter_context(RegistryService(settings))
        server = self._stack.enter_context(MlflowServer(settings, port=self.port))
        return str(server.url)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # Stopping takes seconds (uvicorn, the registry's consumers): in the background,
        # so the next test's fresh deployment starts meanwhile.
        threading.Thread(target=self._stack.close, name="modelog-mlflow-stop").start()
