"""Errors raised by the store package (artifacts, DuckDB projections)."""

from __future__ import annotations

from modelog.errors import ModelogError

__all__ = [
    "ArtifactNotFoundError",
    "ArtifactPathError",
    "BacktestError",
    "DatabaseBusyError",
    "DeliveryLedgerError",
    "FilterSyntaxError",
    "NoDataError",
    "NotFoundError",
    "ProjectorError",
    "QueryError",
    "QueryRuleError",
    "ReadOnlyQueryError",
    "StoreError",
]


class StoreError(ModelogError):
    """Base class of errors from :mod:`modelog.store`."""


class ArtifactNotFoundError(StoreError, FileNotFoundError):
    """No artifact with the requested digest or URI exists in the store."""


class ArtifactPathError(StoreError, ValueError):
    """A name, suffix or URI would escape the artifact store's root."""


# -- projection and queries (modelog.streams.projector / reader / query_server) --
class ProjectorError(StoreError):
    """The projector could not consume, dead-letter or write a batch."""


class QueryError(StoreError):
    """A query against the DuckDB views failed (bad SQL, too many rows, timeout)."""


class ReadOnlyQueryError(QueryError):
    """A statement other than a read (SELECT, EXPLAIN, SHOW, DESCRIBE...) was sent.

    Attributes
    ----------
    statement_type
        The refused statement's type, e.g. ``INSERT``.
    statement
        The refused statement's text.
    """

    def __init__(self, statement_type: str, statement: str = "") -> None:
        self.statement_type = statement_type
        self.statement = statement
        shown = statement.strip()
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(
            f"only read statements are allowed, got {statement_type}"
            + (f" ({shown!r})" if shown else "")
            + "; the views are derived from the event log -- change them by producing events."
        )


class DatabaseBusyError(StoreError):
    """The DuckDB file is locked by a writer that does not serve queries."""


class NoDataError(StoreError):
    """There is no DuckDB file yet (nothing was projected)."""


class FilterSyntaxError(StoreError, ValueError):
    """A run filter or order-by string could not be parsed (see :mod:`modelog.store.filters`).

    Attributes
    ----------
    text
        The filter as given.
    position
        0-based offset of the offending token in ``text``.
    column
        1-based column of the offending token (``position + 1``).
    found
        What was there (``'AND'``, ``end of filter``...).
    expected
        What the parser wanted instead.
    """

    def __init__(self, text: str, position: int, found: str, expected: str) -> None:
        self.text = text
        self.position = position
        self.column = position + 1
        self.found = found
        self.expected = expected
        shown = text.replace("\n", " ").replace("\t", " ").replace("\r", " ")
        super().__init__(
            f"unexpected {found} at column {self.column}: expected {expected}\n"
            f"  {shown}\n  {' ' * position}^"
        )


class NotFoundError(StoreError, LookupError):
    """A run, dataset, version or model named in a query does not exist or is ambiguous
    (:mod:`modelog.store.queries`); the message names what exists."""


class DeliveryLedgerError(StoreError):
    """The alert delivery ledger (:mod:`modelog.store.outbox`) cannot be opened or written."""


class BacktestError(StoreError):
    """A backtest (:mod:`modelog.store.backtest`) cannot run; the message says what to fix."""


class QueryRuleError(ReadOnlyQueryError):
    """A query broke a rule of the read-only query path (:mod:`modelog.store.query_server`).

    Besides its statement type: more than one statement, a write (even inside
    ``EXPLAIN ANALYZE`` or a ``WITH``), access outside the database (files,
    network, extensions, ``ATTACH``), a setting change, or a table function that
    is not a read of the projection.

    Attributes
    ----------
    statement_type
        The rule broken, e.g. ``EXTERNAL ACCESS``, ``WRITE``, ``SETTING``,
        ``MULTIPLE STATEMENTS`` or ``TABLE FUNCTION read_text``.
    statement
        The refused statement's text.
    reason
        Why it was refused, in words.
    """

    def __init__(self, rule: str, statement: str = "", reason: str = "") -> None:
        self.statement_type = rule
        self.statement = statement
        self.reason = reason or rule.lower()
        shown = " ".join(statement.split())
        if len(shown) > 80:
            shown = shown[:77] + "..."
        QueryError.__init__(
            self,
            f"refused: {self.reason}" + (f" ({shown!r})" if shown else "")
            + ". Allowed: exactly one SELECT (or WITH/FROM ... SELECT), DESCRIBE, SHOW, "
            "SUMMARIZE, EXPLAIN [ANALYZE] of one of those, or an informational PRAGMA, over "
            "the projection's tables and views; it runs in a read-only transaction without "
            "files, network, extensions, ATTACH, COPY or setting changes.",
        )


class WorkerKeyError(StoreError):
    """The worker key file (``<data_dir>/worker.key``) is unusable; the message says what to do."""


__all__ += ["WorkerKeyError"]


class AsOfError(QueryError):
    """An "as of" time the ledger cannot answer: in the future, or before its first event."""


class ArchiveError(StoreError):
    """The Parquet archive cannot be written, read or restored (the message names the file)."""


__all__ += ["ArchiveError", "AsOfError"]
