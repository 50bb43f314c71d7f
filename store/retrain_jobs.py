"""The retrain runner's durable job table: one row per request, positions and an outbox.

A SQLite file in the data directory (``<data_dir>/retrain.sqlite``). The
runner (:mod:`modelog.streams.retrainer`) records, in one transaction, the
``RetrainRequested`` events it read (``INSERT OR IGNORE`` keyed by the request
id, so a redelivered request is no second job) with its consumer positions;
marks a job ``running`` (attempts + 1, the run id) before it starts it; and
ends it (``candidate``, ``rejected`` or ``failed``) together with the
``RetrainJobEnded`` report to produce (a transactional outbox). A job found
``running`` when the runner starts was interrupted: it is resumed.

Built on :class:`~modelog.store.sqlite_ledger.SqliteLedger`. Imports the
standard library, :mod:`modelog.models` and :mod:`modelog.store`.

Examples
--------
>>> import tempfile, pathlib, datetime as dt
>>> from modelog.models.events import RetrainRequested
>>> t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
>>> req = RetrainRequested(id="r-1", time=t, aggregate="churn", model="churn", reason="drift")
>>> with JobTable(pathlib.Path(tempfile.mkdtemp()) / "retrain.sqlite") as jobs:
...     jobs.enqueue([req, req], {("m.monitoring", 0): 7}, "c1")
...     [j.status for j in jobs.jobs()], jobs.queued() == [req]
(['queued'], True)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modelog.models import codec
from modelog.models.events import RetrainJobEnded, RetrainRequested
from modelog.store.errors import StoreError
from modelog.store.sqlite_ledger import SqliteLedger

__all__ = ["JOB_TABLE_FILE", "Job", "JobTable"]

JOB_TABLE_FILE = "retrain.sqlite"
"""The job table's file name in ``settings.data_dir``."""

_DDL = """
CREATE TABLE IF NOT EXISTS jobs (
    request_id TEXT PRIMARY KEY, model TEXT NOT NULL, request BLOB NOT NULL,
    status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    run_ids TEXT NOT NULL DEFAULT '[]', reason TEXT, model_version INTEGER,
    received_at TEXT NOT NULL, started_at TEXT, ended_at TEXT);
"""
_COLUMNS = "request_id, model, status, attempts, run_ids, reason, model_version, started_at"


@dataclasses.dataclass(frozen=True)
class Job:
    """A row of the job table."""

    request_id: str
    model: str
    status: str
    attempts: int
    run_ids: list[str]
    reason: str | None
    model_version: int | None
    started_at: dt.datetime | None = None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class JobTable(SqliteLedger):
    """The runner's SQLite job table, positions and outbox (thread-safe).

    Raises
    ------
    StoreError
        The file cannot be opened or a write fails (nothing of it is kept).
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path, _DDL, "the retrain job table", restart="the retrain runner")

    def enqueue(self, requests: Sequence[RetrainRequested],
                positions: dict[tuple[str, int], int], cluster_id: str | None) -> None:
        """In one transaction: new jobs (a known request id is ignored) and positions."""
        self._tx([
            *(("INSERT OR IGNORE INTO jobs (request_id, model, request, status, received_at) "
               "VALUES (?, ?, ?, 'queued', ?)", (r.id, r.model, codec.encode(r), _now()))
              for r in requests),
            *self.position_statements(positions, cluster_id),
        ])

    def _requests(self, status: str) -> list[RetrainRequested]:
        out = []
        for (record,) in self._rows("SELECT request FROM jobs WHERE status = ? ORDER BY rowid",
                                    (status,)):
            event = codec.decode(record)
            assert isinstance(event, RetrainRequested)
            out.append(event)
        return out

    def queued(self) -> list[RetrainRequested]:
        """Requests waiting for their job, oldest first."""
        return self._requests("queued")

    def interrupted(self) -> list[RetrainRequested]:
        """Requests whose job was running when the runner stopped."""
        return self._requests("running")

    def start(self, request_id: str, run_id: str) -> Job:
        """Mark a job running (one more attempt, by run ``run_id``); return it."""
        job = self.get(request_id)
        if job is None:
            raise StoreError(f"no retrain job for request {request_id}")
        self._tx([("UPDATE jobs SET status = 'running', attempts = attempts + 1, run_ids = ?, "
                   "started_at = ? WHERE request_id = ?",
                   (json.dumps([*job.run_ids, run_id]), _now(), request_id))])
        job = self.get(request_id)
        assert job is not None
        return job

    def requeue(self, request_id: str) -> None:
        """Put an interrupted job back in the queue."""
        self._tx([("UPDATE jobs SET status = 'queued' WHERE request_id = ? AND status = "
                   "'running'", (request_id,))])

    def end(self, report: RetrainJobEnded, topic: str) -> None:
        """In one transaction: the job's end and its report in the outbox."""
        self._tx([
            ("UPDATE jobs SET status = ?, reason = ?, model_version = ?, ended_at = ? "
             "WHERE request_id = ?", (report.status, report.reason, report.model_version,
                                      _now(), report.request_id)),
            self.outbox_statement(report, topic),
        ])

    def get(self, request_id: str) -> Job | None:
        """The job of a request, if recorded."""
        rows = self._rows(f"SELECT {_COLUMNS} FROM jobs WHERE request_id = ?", (request_id,))
        return _job(rows[0]) if rows else None

    def jobs(self) -> list[Job]:
        """Every job, in the order the requests arrived."""
        return [_job(r) for r in self._rows(f"SELECT {_COLUMNS} FROM jobs ORDER BY rowid")]


def _job(row: Sequence[Any]) -> Job:
    request_id, model, status, attempts, run_ids, reason, version, started = row
    return Job(str(request_id), str(model), str(status), int(attempts), json.loads(run_ids),
               reason, None if version is None else int(version),
               None if started is None else dt.datetime.fromisoformat(started))
