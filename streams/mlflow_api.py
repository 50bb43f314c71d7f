"""``modelog mlflow-server``: MLflow's REST API (2.0) in front of modelog's event log.

An unmodified MLflow client (``MLFLOW_TRACKING_URI=http://127.0.0.1:5000``)
logs, searches, registers and promotes against modelog: every write becomes
modelog events (:mod:`modelog.streams.mlflow_tracking`,
:mod:`modelog.streams.mlflow_registry`, :mod:`modelog.streams.mlflow_artifacts`),
every read is answered from :class:`~modelog.streams.mlflow_state.MlflowState`
(the log folded in memory plus the server's own acknowledged writes).

This module owns the HTTP side: the Starlette application, MLflow's error
shape (``{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": ...}`` with the
HTTP status MLflow uses), request parsing (query string for ``GET``, JSON
body otherwise) and :class:`MlflowServer` (uvicorn in a thread). Beyond
loopback a bearer token is required, as for the query server
(``MODELOG_MLFLOW_TOKEN``; clients set ``MLFLOW_TRACKING_TOKEN``).

May import :mod:`modelog.models`, :mod:`modelog.store` and :mod:`modelog.streams`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from modelog.config import Settings, is_loopback, token_matches
from modelog.errors import ConfigurationError
from modelog.models.errors import EventValidationError
from modelog.streams.errors import MlflowApiError
from modelog.streams.mlflow_state import MlflowState

__all__ = ["DEFAULT_PORT", "Handler", "MlflowServer", "Request", "build_app", "error_response"]

DEFAULT_PORT = 5000
"""``mlflow server``'s port, and ours."""

Handler = Callable[[MlflowState, dict[str, Any], "Caller"], Any]
"""A route's work: state, the request's arguments, who calls -> a JSON-able answer."""

log = logging.getLogger(__name__)

_STATUS = {"RESOURCE_DOES_NOT_EXIST": 404, "ENDPOINT_NOT_FOUND": 404, "INTERNAL_ERROR": 500,
           "TEMPORARILY_UNAVAILABLE": 503, "UNAUTHENTICATED": 401}


class Caller:
    """Who sent a request: the basic-auth user (else ``mlflow``) at the client's address."""

    def __init__(self, user: str, host: str) -> None:
        self.user, self.host = user, host

    @property
    def actor(self) -> str:
        return f"{self.user}@{self.host}"

    @classmethod
    def of(cls, request: Request) -> Caller:
        import base64

        user = "mlflow"
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                user = base64.b64decode(auth[6:]).decode().split(":", 1)[0] or user
        return cls(user, request.client.host if request.client else "unknown")


def error_response(code: str, message: str, status: int | None = None) -> Response:
    """MLflow's error body with its HTTP status."""
    return JSONResponse({"error_code": code, "message": message},
                        status_code=status or _STATUS.get(code, 400))


async def _arguments(request: Request) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for key in request.query_params:
        values = request.query_params.getlist(key)
        args[key] = values if len(values) > 1 or key in _REPEATED else values[0]
    if request.method != "GET":
        body = await request.body()
        if body.strip():
            try:
                parsed = json.loads(body)
            except json.JSONDecodeError as exc:
                raise MlflowApiError("MALFORMED_REQUEST",
                                     f"the request body is not JSON: {exc}") from None
            except RecursionError:
                raise MlflowApiError("MALFORMED_REQUEST",
                                     "the request body nests too deeply to read") from None
            if not isinstance(parsed, dict):
                raise MlflowApiError("MALFORMED_REQUEST", "the request body must be a JSON object")
            args.update(parsed)
    args.update(request.path_params)
    return args


_REPEATED = frozenset({"experiment_ids", "stages", "order_by", "run_ids"})


def endpoint(state: MlflowState, handler: Handler) -> Callable[[Request], Any]:
    """A Starlette endpoint running ``handler`` in the thread pool, errors MLflow-shaped."""

    async def run(request: Request) -> Response:
        try:
            args = await _arguments(request)
            answer = await run_in_threadpool(handler, state, args, Caller.of(request))
        except MlflowApiError as exc:
            return error_response(exc.error_code, exc.message, exc.status)
        except EventValidationError as exc:  # an event built from the request broke a rule
            return error_response("INVALID_PARAMETER_VALUE", str(exc))
        except Exception as exc:
            log.exception("mlflow-server: %s %s failed", request.method, request.url.path)
            return error_response("INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")
        if isinstance(answer, Response):
            return answer
        return JSONResponse(answer if answer is not None else {})

    return run


class _BearerAuth:
    """Every request must carry ``Authorization: Bearer <token>`` (``MLFLOW_TRACKING_TOKEN``)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = Headers(scope=scope).get("authorization", "")
            if not given.lower().startswith("bearer ") or not token_matches(
                    given[7:].strip(), self.token):
                await error_response(
                    "UNAUTHENTICATED", "this modelog MLflow endpoint requires a token: set "
                    "MLFLOW_TRACKING_TOKEN to the server's MODELOG_MLFLOW_TOKEN", 401,
                )(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_app(state: MlflowState, token: str | None = None) -> Starlette:
    """The ASGI application: every MLflow route modelog speaks, under ``/api/2.0`` (and 3.0)."""
    from modelog.streams import mlflow_artifacts, mlflow_models, mlflow_registry, mlflow_tracking

    routes: list[Route] = [Route("/health", lambda r: Response("OK"), methods=["GET"]),
                           Route("/version", lambda r: Response("modelog"), methods=["GET"])]
    for method, path, handler in (*mlflow_tracking.ROUTES, *mlflow_models.ROUTES,
                                 *mlflow_registry.ROUTES):
        for prefix in ("/api/2.0/mlflow", "/api/3.0/mlflow", "/ajax-api/2.0/mlflow"):
            routes.append(Route(prefix + path, endpoint(state, handler), methods=[method]))
    routes += mlflow_artifacts.routes(state)

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response("ENDPOINT_NOT_FOUND",
                              f"modelog's MLflow endpoint does not implement {request.method} "
                              f"{request.url.path} (see the README's MLflow section)", 404)

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return error_response("ENDPOINT_NOT_FOUND",
                              f"{request.method} is not allowed on {request.url.path}", 405)

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed},
                     middleware=[Middleware(_BearerAuth, token=token)] if token else [])


class MlflowServer:
    """The MLflow endpoint: fold the log, then serve MLflow's REST API with uvicorn in a thread.

    Parameters
    ----------
    settings
        Broker, topics, data directory.
    host, port
        Where to listen (``port=0``: any free port, see :attr:`port`).
    token
        Required beyond loopback: clients send ``Authorization: Bearer <token>``.

    Raises
    ------
    ConfigurationError
        ``host`` is beyond loopback and there is no ``token``.
    """

    def __init__(self, settings: Settings, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 *, token: str | None = None) -> None:
        if not token and not is_loopback(host):
            raise ConfigurationError(
                f"the MLflow endpoint would listen on {host}, beyond loopback, without a token: "
                "set MODELOG_MLFLOW_TOKEN (clients then set MLFLOW_TRACKING_TOKEN to the same "
                "value), or listen on 127.0.0.1")
        self.settings, self.host, self._port, self.token = settings, host, port, token or None
        self.state: MlflowState | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        return self._socket.getsockname()[1] if self._socket is not None else self._port

    @property
    def url(self) -> str:
        """What to set ``MLFLOW_TRACKING_URI`` to."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> MlflowServer:
        """Fold the log, bind, serve in a background thread; returns once it answers."""
        self.state = MlflowState(self.settings).start()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._port))
        except OSError as exc:
            sock.close()
            self.state.stop()
            raise ConfigurationError(f"cannot listen on {self.host}:{self._port} ({exc}); "
                                     "choose another --port") from None
        self._socket = sock
        config = uvicorn.Config(build_app(self.state, self.token), log_config=None,
                                log_level="warning", access_log=False, timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [sock]}, daemon=True,
                                        name="mlflow-server")
        self._thread.start()
        deadline = time.monotonic() + 10.0
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop serving and following the log (idempotent)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        if self._socket is not None:
            self._socket.close()
        if self.state is not None:
            self.state.stop()
        self._server = self._thread = self._socket = self.state = None

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
