"""Read the projection from any process, while the projector runs or not.

:class:`Reader` asks the projector's query server when one is advertised in
``<data_dir>/projector.json`` (or ``MODELOG_QUERY_URL``) and answers (sending
``MODELOG_QUERY_TOKEN`` as ``Authorization: Bearer``, when set); otherwise
it opens the DuckDB file read-only for the duration of one query (so it never
keeps a lock that would stop the projector from starting), with the same
restrictions as the server (:data:`~modelog.store.readonly_sql.LOCKED_CONFIG`:
no external access, locked settings; one read statement in a read-only
transaction, see :func:`~modelog.store.readonly_sql.run_read_query`).

Examples
--------
>>> from pathlib import Path
>>> from modelog.config import Settings
>>> r = Reader(Settings(data_dir=Path("/nonexistent/modelog")))
>>> r.query("select 1")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
modelog.store.errors.NoDataError: no data yet: ... Run `modelog project` (or `modelog up`) ...
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from modelog.config import Settings
from modelog.store.as_of import SNAPSHOTS, parse_as_of
from modelog.store.errors import (
    AsOfError,
    DatabaseBusyError,
    NoDataError,
    QueryError,
    QueryRuleError,
    ReadOnlyQueryError,
)
from modelog.store.query_server import ARROW_STREAM, PROJECTOR_RUNTIME_FILE
from modelog.store.readonly_sql import LOCKED_CONFIG, read_statement, run_read_query

__all__ = ["Reader"]

Params = Sequence[Any] | dict[str, Any] | None


def _jsonable(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


class Reader:
    """Read-only SQL over the projection, returning Arrow tables or DataFrames.

    Parameters
    ----------
    settings
        Where the data directory (and so ``projector.json`` and the DuckDB file) is;
        ``settings.query_token`` is sent to the query server as a bearer token.
    timeout
        Seconds to wait for the query server's answer.
    as_of
        Answer every query as the projection stood at this time (ISO text or an
        aware datetime; event time): the same views evaluated over the ledger's
        events up to it (:mod:`modelog.store.as_of`). ``None``: the live state.
    """

    def __init__(self, settings: Settings, *, timeout: float = 120.0,
                 as_of: dt.datetime | str | None = None) -> None:
        self.settings = settings
        self.timeout = timeout
        self.as_of = None if as_of is None or as_of == "" else parse_as_of(as_of)

    def server_url(self) -> str | None:
        """The query server to use: ``settings.query_url``, else the one in projector.json."""
        if self.settings.query_url:
            return self.settings.query_url.rstrip("/")
        runtime = self.settings.data_dir / PROJECTOR_RUNTIME_FILE
        try:
            info = json.loads(runtime.read_text())
        except (OSError, ValueError):
            return None
        if isinstance(info, dict) and info.get("url"):
            return str(info["url"]).rstrip("/")
        if isinstance(info, dict) and info.get("port"):
            return f"http://127.0.0.1:{int(info['port'])}"
        return None

    def query(self, sql: str, params: Params = None) -> pa.Table:
        """Run one read statement ``sql`` (``params`` bind to its ``?``/``$1``).

        Raises
        ------
        ReadOnlyQueryError
            ``sql`` holds a statement that is not a read, or
            (:class:`~modelog.store.errors.QueryRuleError`) breaks a rule of the
            read-only path: more than one statement, a write, files, network,
            extensions, settings.
        QueryError
            The query failed, timed out or returned too many rows.
        NoDataError
            Nothing was projected yet.
        DatabaseBusyError
            The file is locked by a writer that serves no queries.
        """
        read_statement(sql)  # refuse non-reads before touching the server or the file
        url = self.server_url()
        if url is not None:
            table = self._query_server(url, sql, params)
            if table is not None:
                return table
        return self._query_file(sql, params)

    def query_df(self, sql: str, params: Params = None) -> Any:
        """Like :meth:`query`, as a ``pandas.DataFrame``."""
        return self.query(sql, params).to_pandas()

    # -- paths ----------------------------------------------------------------
    def _query_server(self, url: str, sql: str, params: Params) -> pa.Table | None:
        """Ask the server; ``None`` when it does not answer (stale projector.json)."""
        if params is None and self.as_of is None:
            body, ctype = sql.encode(), "text/plain; charset=utf-8"
        else:
            plain = (None if params is None else
                     {k: _jsonable(v) for k, v in params.items()} if isinstance(params, dict)
                     else [_jsonable(v) for v in params])
            request_body: dict[str, Any] = {"sql": sql, "params": plain}
            if self.as_of is not None:
                request_body["as_of"] = self.as_of.isoformat()
            body = json.dumps(request_body).encode()
            ctype = "application/json"
        headers = {"Content-Type": ctype}
        if self.settings.query_token:
            headers["Authorization"] = f"Bearer {self.settings.query_token}"
        request = urllib.request.Request(f"{url}/query", data=body, method="POST",
                                         headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                payload = resp.read()
                if not resp.headers.get("Content-Type", "").startswith(ARROW_STREAM):
                    raise QueryError(f"the query server at {url} answered something else "
                                     "than Arrow; is MODELOG_QUERY_URL right?")
        except urllib.error.HTTPError as exc:
            raise self._server_error(url, exc) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None
        return pa.ipc.open_stream(payload).read_all()

    @staticmethod
    def _server_error(url: str, exc: urllib.error.HTTPError) -> QueryError:
        try:
            info = json.loads(exc.read())
        except ValueError:
            info = {}
        message = str(info.get("message") or f"HTTP {exc.code} from {url}")
        if exc.code == 401:
            return QueryError(f"the query server at {url} refused the request: {message}")
        if info.get("error") == "as_of":
            return AsOfError(message)
        if info.get("error") == "read_only" and info.get("reason"):
            return QueryRuleError(str(info.get("statement_type", "?")),
                                  str(info.get("statement", "")), str(info["reason"]))
        if info.get("error") == "read_only":
            return ReadOnlyQueryError(str(info.get("statement_type", "?")),
                                      str(info.get("statement", "")))
        return QueryError(message)

    def scan(self, sql: str, params: Params = None, *,
             batch_rows: int = 100_000) -> Iterator[pa.RecordBatch]:
        """Stream the rows of one read statement straight from the DuckDB file, in batches.

        One query, no row cap, nothing held but the batch in hand: for bulk reads
        by modelog itself (a restore refilling a broker) while no projector holds
        the file. Not for time travel (``as_of`` must be ``None``).

        Raises
        ------
        DatabaseBusyError
            A writer (a running projector) holds the file: page through :meth:`query`.
        NoDataError
            Nothing was projected yet.
        """
        if self.as_of is not None:
            raise QueryError("Reader.scan reads the live ledger; use query() with as_of")
        read_statement(sql)
        con = self._open_file()
        try:
            rel = con.sql(sql, params=params)
            if rel is None:
                raise QueryError(f"the scan returned no rows: {sql}")
            yield from rel.to_arrow_reader(batch_rows)
        except duckdb.Error as exc:
            raise QueryError(f"the scan of {self.settings.duckdb_path} failed: {exc}") from None
        finally:
            with contextlib.suppress(duckdb.Error):
                con.close()

    def _open_file(self) -> duckdb.DuckDBPyConnection:
        path = self.settings.duckdb_path
        if not path.exists():
            raise NoDataError(
                f"no data yet: {path} does not exist. Run `modelog project` (or `modelog up`) "
                "to project the event log into it, or point MODELOG_DATA_DIR at the right "
                "directory."
            )
        try:
            con = duckdb.connect(str(path), read_only=True, config=LOCKED_CONFIG)
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            raise DatabaseBusyError(
                f"{path} is locked by a process that serves no queries ({exc}). If a "
                "projector runs, make sure its projector.json is in this data directory (or "
                "set MODELOG_QUERY_URL); otherwise stop the process holding the file."
            ) from None
        return con

    def _query_file(self, sql: str, params: Params) -> pa.Table:
        path = self.settings.duckdb_path
        con = self._open_file()
        try:
            target = con if self.as_of is None else SNAPSHOTS.get(
                con, self.as_of, source=str(path.resolve()))
            return run_read_query(target, sql, params)
        finally:
            with contextlib.suppress(duckdb.Error):
                con.close()
