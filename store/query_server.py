"""The projector's read-only query server: SQL in, Arrow IPC out, never blocking the writer.

DuckDB lets one process open a file read-write and then refuses every other
opener, even read-only ones. So the projector -- the one writer -- also
answers reads: ``POST /query`` with the SQL as the body (``text/plain``), or a
JSON object ``{"sql": ..., "params": [...]}``, answers an Arrow IPC stream.
Every request runs on its own ``con.cursor()``; DuckDB's MVCC shows it only
committed transactions, so a reader never sees half a projected batch.

Only reads are served (``SELECT``, ``EXPLAIN``, ``SHOW``, ``DESCRIBE``,
``SUMMARIZE`` and informational ``PRAGMA``\\s); anything else is refused with
an error the client raises as :class:`~modelog.store.errors.ReadOnlyQueryError`.
A row cap and a statement timeout keep the projector healthy.

Examples
--------
>>> read_statements("select 1; describe events")
['select 1', 'describe events']
>>> read_statements("delete from events")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
modelog.store.errors.ReadOnlyQueryError: only read statements are allowed, got DELETE ...
"""

from __future__ import annotations

import http.server
import io
import json
import logging
import re
import threading
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa

from modelog.store.errors import QueryError, ReadOnlyQueryError

__all__ = [
    "ARROW_STREAM",
    "DEFAULT_MAX_ROWS",
    "DEFAULT_TIMEOUT",
    "PROJECTOR_RUNTIME_FILE",
    "QueryServer",
    "read_statements",
    "run_read_query",
]

#: The file (in the data dir) where the projector advertises its query server.
PROJECTOR_RUNTIME_FILE = "projector.json"

log = logging.getLogger(__name__)

ARROW_STREAM = "application/vnd.apache.arrow.stream"
DEFAULT_MAX_ROWS = 1_000_000
DEFAULT_TIMEOUT = 60.0
MAX_BODY = 1 << 20

_READ_TYPES = frozenset({"SELECT", "EXPLAIN"})
_READ_PRAGMAS = frozenset({
    "table_info", "show", "show_tables", "show_tables_expanded", "database_size",
    "database_list", "storage_info", "version", "functions", "platform", "metadata_info",
    "user_agent", "collations",
})
_PRAGMA = re.compile(r"^\s*pragma\s+([A-Za-z_]+)", re.IGNORECASE)


def read_statements(sql: str) -> list[str]:
    """Split ``sql`` into statements and check that each one only reads.

    Raises
    ------
    ReadOnlyQueryError
        Naming the first statement that is not a read.
    QueryError
        When ``sql`` does not parse or holds no statement.
    """
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"the SQL does not parse: {exc}") from None
    if not statements:
        raise QueryError("no SQL statement given; try `select * from alerts`")
    out: list[str] = []
    for st in statements:
        kind = st.type.name
        # DuckDB 1.x keeps the separator with the statement, 2.x does not.
        text = st.query.strip().rstrip(";").strip()
        if kind == "PRAGMA":
            m = _PRAGMA.match(text)
            if m is None or m.group(1).lower() not in _READ_PRAGMAS:
                raise ReadOnlyQueryError("PRAGMA (changing a setting)", text)
        elif kind not in _READ_TYPES:
            raise ReadOnlyQueryError(kind, text)
        out.append(text)
    return out


def run_read_query(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    params: Sequence[Any] | dict[str, Any] | None = None,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    timeout: float = DEFAULT_TIMEOUT,
) -> pa.Table:
    """Run read-only ``sql`` on a fresh cursor of ``con``; return the last statement's rows.

    Parameters
    ----------
    con
        A DuckDB connection; a cursor of it runs the query (safe from any thread).
    sql
        One or more read statements; ``params`` bind to the last one.
    max_rows
        Refuse results larger than this (add a ``LIMIT`` or aggregate).
    timeout
        Interrupt the query after this many seconds.

    Examples
    --------
    >>> import duckdb
    >>> run_read_query(duckdb.connect(), "select 40 + ? as x", [2]).to_pylist()
    [{'x': 42}]
    """
    statements = read_statements(sql)
    cur = con.cursor()
    timer = threading.Timer(timeout, cur.interrupt)
    timer.daemon = True
    timer.start()
    try:
        for text in statements[:-1]:
            cur.execute(text).fetchall()
        rel = cur.sql(statements[-1], params=params)
        if rel is None:  # pragma: no cover - reads always return a relation
            return pa.table({})
        reader = rel.to_arrow_reader(65_536)
        batches: list[pa.RecordBatch] = []
        rows = 0
        for batch in reader:
            rows += batch.num_rows
            if rows > max_rows:
                raise QueryError(
                    f"the result has more than {max_rows:,} rows; add a LIMIT or aggregate "
                    "(e.g. `select count(*) ...`)"
                )
            batches.append(batch)
        return pa.Table.from_batches(batches, schema=reader.schema)
    except duckdb.InterruptException:
        raise QueryError(
            f"the query ran longer than {timeout:g} s and was stopped; narrow it down "
            "(filter on time or model) or aggregate"
        ) from None
    except duckdb.Error as exc:
        raise QueryError(f"the query failed: {exc}") from None
    finally:
        timer.cancel()
        cur.close()


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("query server: " + format, *args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, kind: str, message: str, **extra: str) -> None:
        body = json.dumps({"error": kind, "message": message, **extra}).encode()
        self._send(status, body, "application/json")

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("", "/health"):
            info = {"ok": True, **self.server.info}
            self._send(200, json.dumps(info).encode(), "application/json")
        else:
            self._error(404, "not_found", "use POST /query or GET /health")

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/query":
            self._error(404, "not_found", "use POST /query with the SQL as the body")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._error(413, "query", f"the SQL is longer than {MAX_BODY} bytes")
            return
        raw = self.rfile.read(length)
        params: Any = None
        try:
            if (self.headers.get("Content-Type") or "").startswith("application/json"):
                request = json.loads(raw)
                sql, params = str(request["sql"]), request.get("params")
            else:
                sql = raw.decode()
        except (ValueError, KeyError, TypeError) as exc:
            self._error(400, "query", f"bad request body: {exc}")
            return
        try:
            table = run_read_query(
                self.server.con, sql, params,
                max_rows=self.server.max_rows, timeout=self.server.query_timeout,
            )
        except ReadOnlyQueryError as exc:
            self._error(403, "read_only", str(exc), statement_type=exc.statement_type,
                        statement=exc.statement)
            return
        except QueryError as exc:
            self._error(400, "query", str(exc))
            return
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        self._send(200, sink.getvalue(), ARROW_STREAM)


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], con: duckdb.DuckDBPyConnection, max_rows: int,
        timeout: float, info: dict[str, Any],
    ) -> None:
        super().__init__(address, _Handler)
        self.con = con
        self.max_rows = max_rows
        self.query_timeout = timeout
        self.info = info


class QueryServer:
    """Serve read-only SQL over a DuckDB connection, on loopback, in a background thread.

    Parameters
    ----------
    con
        The writer's connection; each request uses its own cursor.
    bind
        ``host:port`` to listen on; port ``0`` picks a free one. Only loopback
        addresses are accepted: the server has no authentication.
    max_rows
        Largest result served.
    timeout
        Seconds before a query is interrupted.
    info
        Extra fields reported by ``GET /health``.

    Examples
    --------
    >>> import duckdb, urllib.request
    >>> with QueryServer(duckdb.connect()) as srv:
    ...     req = urllib.request.Request(srv.url + "/query", data=b"select 42 as x")
    ...     body = urllib.request.urlopen(req).read()
    >>> pa.ipc.open_stream(body).read_all().to_pylist()
    [{'x': 42}]
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        bind: str = "127.0.0.1:0",
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        timeout: float = DEFAULT_TIMEOUT,
        info: dict[str, Any] | None = None,
    ) -> None:
        host, _, port = bind.rpartition(":")
        host = host or "127.0.0.1"
        if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
            raise QueryError(
                f"the query server only binds loopback (it has no authentication); got "
                f"{bind!r}. Set MODELOG_QUERY_BIND=127.0.0.1:<port>."
            )
        try:
            port_no = int(port or 0)
        except ValueError:
            raise QueryError(f"MODELOG_QUERY_BIND={bind!r} needs a numeric port") from None
        self._address = (host.strip("[]"), port_no)
        self._con = con
        self._max_rows = max_rows
        self._timeout = timeout
        self._info = dict(info or {})
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on (after :meth:`start`)."""
        if self._server is None:
            raise QueryError("the query server is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL of the server, e.g. ``http://127.0.0.1:41234``."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> QueryServer:
        """Bind and serve in a daemon thread."""
        if self._server is None:
            try:
                self._server = _HTTPServer(
                    self._address, self._con, self._max_rows, self._timeout, self._info
                )
            except OSError as exc:
                raise QueryError(
                    f"cannot bind the query server to {self._address[0]}:{self._address[1]}"
                    f" ({exc}); choose another MODELOG_QUERY_BIND port"
                ) from None
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                name="modelog-query-server", daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> QueryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
