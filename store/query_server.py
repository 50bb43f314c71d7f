"""The projector's read-only query server: SQL in, Arrow IPC out, never blocking the writer.

DuckDB lets one process open a file read-write and then refuses every other
opener, even read-only ones. So the projector -- the one writer -- also
answers reads: ``POST /query`` with the SQL as the body (``text/plain``), or a
JSON object ``{"sql": ..., "params": [...]}``, answers an Arrow IPC stream.
Every request runs on its own ``con.cursor()``; DuckDB's MVCC shows it only
committed transactions, so a reader never sees half a projected batch.

What may be asked is :mod:`modelog.store.readonly_sql`'s business: one read
statement, run so that it cannot write or reach outside the database. With
``"as_of": "<ISO time>"`` in the JSON body the statement runs on the projection
as it stood then (:mod:`modelog.store.as_of`: the same views over the ledger's
events up to that time, in a private in-memory database).

Who may ask: :class:`QueryServer` (Starlette, served by uvicorn) binds loopback
unless given a token (``MODELOG_QUERY_TOKEN``); with one, every request must
send ``Authorization: Bearer <token>`` (constant-time compare) or gets ``401``.

May import ``modelog.config``, ``modelog.errors``, ``modelog.store.errors``,
``modelog.store.as_of`` (and DuckDB, pyarrow, Starlette, uvicorn).

"""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from typing import Any

import duckdb
import pyarrow as pa
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from modelog.config import is_loopback, token_matches
from modelog.errors import ConfigurationError
from modelog.store.as_of import SNAPSHOTS
from modelog.store.errors import AsOfError, QueryError, QueryRuleError, ReadOnlyQueryError
from modelog.store.readonly_sql import (
    DEFAULT_MAX_ROWS,
    DEFAULT_TIMEOUT,
    lock_down,
    read_statement,
    run_read_query,
)

__all__ = ["ARROW_STREAM", "PROJECTOR_RUNTIME_FILE", "QueryServer"]

#: The file (in the data dir) where the projector advertises its query server.
PROJECTOR_RUNTIME_FILE = "projector.json"

log = logging.getLogger(__name__)

ARROW_STREAM = "application/vnd.apache.arrow.stream"
MAX_BODY = 1 << 20


def _error(status: int, kind: str, message: str, **extra: str) -> Response:
    return JSONResponse({"error": kind, "message": message, **extra}, status_code=status)


class _BearerAuth:
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scheme, _, given = (Headers(scope=scope).get("authorization") or "").partition(" ")
            if scheme.lower() != "bearer" or not given.strip():
                refusal = ("this query server requires a token: send the header "
                           "`Authorization: Bearer <token>` (modelog clients send "
                           "MODELOG_QUERY_TOKEN)")
            elif not token_matches(given.strip(), self.token):
                refusal = ("wrong query token: set MODELOG_QUERY_TOKEN to the projector's "
                           "token")
            else:
                refusal = ""
            if refusal:
                response = _error(401, "unauthorized", refusal)
                response.headers["WWW-Authenticate"] = 'Bearer realm="modelog"'
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _Endpoints:
    """The routes: ``GET /`` or ``/health``, ``POST /query``."""

    def __init__(self, con: duckdb.DuckDBPyConnection, max_rows: int, timeout: float,
                 info: dict[str, Any]) -> None:
        self.con = con
        self.max_rows = max_rows
        self.timeout = timeout
        self.info = info

    async def health(self, request: Request) -> Response:
        return JSONResponse({"ok": True, **self.info})

    async def not_found(self, request: Request, exc: Exception) -> Response:
        return _error(404, "not_found", "use POST /query with the SQL as the body, or GET "
                                        "/health")

    async def query(self, request: Request) -> Response:
        if int(request.headers.get("content-length") or 0) > MAX_BODY:
            return _error(413, "query", f"the SQL is longer than {MAX_BODY} bytes")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                return _error(413, "query", f"the SQL is longer than {MAX_BODY} bytes")
        params: Any = None
        as_of: str | None = None
        try:
            if (request.headers.get("content-type") or "").startswith("application/json"):
                body = json.loads(raw)
                sql, params = str(body["sql"]), body.get("params")
                as_of = None if body.get("as_of") in (None, "") else str(body["as_of"])
            else:
                sql = raw.decode()
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return _error(400, "query", f"bad request body: {exc}")
        except RecursionError:
            return _error(400, "query", "bad request body: JSON nested too deeply to read")
        return await run_in_threadpool(self._answer, sql, params, as_of)

    def _answer(self, sql: str, params: Any, as_of: str | None = None) -> Response:
        try:
            read_statement(sql)  # refuse non-reads before building a snapshot
            con = self.con if as_of is None else SNAPSHOTS.get(self.con, as_of)
            table = run_read_query(con, sql, params, max_rows=self.max_rows,
                                   timeout=self.timeout)
        except ReadOnlyQueryError as exc:
            extra = {"reason": exc.reason} if isinstance(exc, QueryRuleError) else {}
            return _error(403, "read_only", str(exc), statement_type=exc.statement_type,
                          statement=exc.statement, **extra)
        except AsOfError as exc:
            return _error(400, "as_of", str(exc))
        except QueryError as exc:
            return _error(400, "query", str(exc))
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return Response(sink.getvalue(), media_type=ARROW_STREAM)

    def app(self, token: str | None) -> Starlette:
        """The ASGI application (behind :class:`_BearerAuth` when ``token`` is set)."""
        return Starlette(
            routes=[Route("/", self.health, methods=["GET"]),
                    Route("/health", self.health, methods=["GET"]),
                    Route("/query", self.query, methods=["POST"])],
            middleware=[Middleware(_BearerAuth, token=token)] if token else [],
            exception_handlers={404: self.not_found, 405: self.not_found},
        )


class QueryServer:
    """Serve read-only SQL over a DuckDB connection, in a background thread.

    HTTP is Starlette's, served by uvicorn on the server's own event loop.

    Parameters
    ----------
    con
        The writer's connection; each request uses its own cursor. :meth:`start`
        applies :func:`lock_down` to its database instance (no external access,
        locked settings -- for the writer too, which keeps writing its file).
    bind
        ``host:port`` to listen on; port ``0`` picks a free one. A host beyond
        loopback (e.g. ``0.0.0.0`` in a container) needs a ``token``.
    token
        When set, every request must send ``Authorization: Bearer <token>``
        (compared in constant time); others get ``401`` and nothing else.
        Required unless ``bind`` is a loopback address (``MODELOG_QUERY_TOKEN``).
    max_rows
        Largest result served.
    timeout
        Seconds before a query is interrupted.
    info
        Extra fields reported by ``GET /health``.

    Raises
    ------
    ConfigurationError
        ``bind`` is beyond loopback and there is no ``token``.

    Examples
    --------
    >>> import duckdb, urllib.request
    >>> with QueryServer(duckdb.connect(), token="s3cret") as srv:
    ...     req = urllib.request.Request(srv.url + "/query", data=b"select 42 as x",
    ...                                  headers={"Authorization": "Bearer s3cret"})
    ...     body = urllib.request.urlopen(req).read()
    >>> pa.ipc.open_stream(body).read_all().to_pylist()
    [{'x': 42}]
    >>> QueryServer(duckdb.connect(), "0.0.0.0:8765")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    modelog.errors.ConfigurationError: the query server would bind 0.0.0.0:8765, beyond ...
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        bind: str = "127.0.0.1:0",
        *,
        token: str | None = None,
        max_rows: int = DEFAULT_MAX_ROWS,
        timeout: float = DEFAULT_TIMEOUT,
        info: dict[str, Any] | None = None,
    ) -> None:
        host, _, port = bind.rpartition(":")
        host = host.strip().strip("[]") or "127.0.0.1"
        if not token and not is_loopback(host):
            raise ConfigurationError(
                f"the query server would bind {bind}, beyond loopback, without a token: set "
                "MODELOG_QUERY_TOKEN to a long random string (e.g. `openssl rand -hex 32`) "
                "and give its readers the same value, or bind loopback "
                "(MODELOG_QUERY_BIND=127.0.0.1:<port>)."
            )
        try:
            port_no = int(port or 0)
        except ValueError:
            raise QueryError(f"MODELOG_QUERY_BIND={bind!r} needs a numeric port") from None
        self._address = (host, port_no)
        self._token = token or None
        self._endpoints = _Endpoints(con, max_rows, timeout, dict(info or {}))
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on (after :meth:`start`)."""
        if self._socket is None:
            raise QueryError("the query server is not started")
        return int(self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        """Base URL of the server, e.g. ``http://127.0.0.1:41234``.

        The bound host, or loopback when it binds every interface (``0.0.0.0``).
        """
        host = self._address[0]
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    def _bind(self) -> socket.socket:
        host, port = self._address
        sock: socket.socket | None = None
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM)[0]
            sock = socket.socket(family, kind, proto)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128)
        except OSError as exc:
            if sock is not None:
                sock.close()
            raise QueryError(f"cannot bind the query server to {host}:{port} ({exc}); "
                             "choose another MODELOG_QUERY_BIND") from None
        return sock

    def start(self) -> QueryServer:
        """Lock the database instance down (:func:`lock_down`), bind and serve in a thread."""
        if self._server is not None:
            return self
        lock_down(self._endpoints.con)
        sock = self._bind()
        config = uvicorn.Config(
            self._endpoints.app(self._token), log_config=None, log_level="warning",
            access_log=False, lifespan="off", loop="asyncio", timeout_graceful_shutdown=2,
            server_header=False,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                  name="modelog-query-server", daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not server.started:
            server.should_exit = True
            thread.join(5)
            sock.close()
            raise QueryError("the query server did not start (see the log above)")
        self._server, self._thread, self._socket = server, thread, sock
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        server, self._server = self._server, None
        if server is not None:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()

    def __enter__(self) -> QueryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
