"""The alert delivery ledger: a SQLite file of deliveries, positions and an outbox.

The delivery worker (:mod:`modelog.streams.delivery`) records here, in one
SQLite transaction, each ended ``(subscription_id, alert_id)`` delivery, the
``AlertDelivered`` report still to produce (a transactional outbox) and the
consumer positions; on restart it re-sends the outbox and resumes from the
positions, so no recorded delivery is POSTed again. It also keeps the
subscription events it has read, to rebuild the
:class:`~modelog.models.alerts.SubscriptionBook` without the broker (stored
at their current schema version: signing secrets only encrypted; rows an older
modelog stored with a clear secret are rewritten when the ledger opens).

Imports the standard library, :mod:`modelog.models` and :mod:`modelog.store`
only (no Kafka client: positions are plain ``(topic, partition)`` keys).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modelog.models import codec
from modelog.models.alerts import SubscriptionBook
from modelog.models.errors import EventDecodeError
from modelog.models.events import AlertDelivered, Event
from modelog.store.errors import DeliveryLedgerError
from modelog.store.sqlite_ledger import SqliteLedger

__all__ = [
    "DELIVERY_LEDGER_DDL",
    "LEDGER_FILE",
    "DeliveryLedger",
    "DeliveryRecord",
]

LEDGER_FILE = "delivery.sqlite"
"""The ledger's file name in ``settings.data_dir``."""


@dataclasses.dataclass(frozen=True)
class DeliveryRecord:
    """A delivery the ledger recorded."""

    subscription_id: str
    alert_id: str
    ok: bool
    status_code: int | None
    attempts: int
    error: str | None

DELIVERY_LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS deliveries (
    subscription_id TEXT NOT NULL, alert_id TEXT NOT NULL, ok INTEGER NOT NULL,
    status_code INTEGER, attempts INTEGER NOT NULL, error TEXT, recorded_at TEXT NOT NULL,
    PRIMARY KEY (subscription_id, alert_id));
CREATE TABLE IF NOT EXISTS book_events (id TEXT PRIMARY KEY, record BLOB NOT NULL);
"""
"""The delivery tables (besides the positions and outbox every ledger has)."""


class DeliveryLedger(SqliteLedger):
    """The worker's SQLite ledger: deliveries, positions, subscription events, outbox.

    A :class:`~modelog.store.sqlite_ledger.SqliteLedger` (positions, outbox,
    one transaction per write, thread-safe) with the deliveries and the
    subscription events.

    Raises
    ------
    DeliveryLedgerError
        When the file cannot be opened or a write fails (nothing of it is kept).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> with DeliveryLedger(pathlib.Path(tempfile.mkdtemp()) / "d.sqlite") as ledger:
    ...     ledger.save_positions({("m.monitoring", 0): 5}, "c1")
    ...     ledger.positions()
    {('m.monitoring', 0): StoredPosition(next_offset=5, cluster_id='c1')}
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path, DELIVERY_LEDGER_DDL, "the delivery ledger",
                         restart="the delivery worker", error=DeliveryLedgerError,
                         pragmas=("secure_delete=ON",))  # rewritten rows leave no trace
        self._scrub_clear_secrets()

    def _scrub_clear_secrets(self) -> None:
        """Rewrite subscription events stored with a clear secret (schema v1) as upcast."""
        rows = self._rows("SELECT id, record FROM book_events "
                          "WHERE instr(CAST(record AS TEXT), '\"secret\":') > 0")
        updates: list[tuple[str, Sequence[Any]]] = []
        for event_id, record in rows:
            with contextlib.suppress(EventDecodeError):
                updates.append(("UPDATE book_events SET record = ? WHERE id = ?",
                                (codec.encode(codec.decode(record)), event_id)))
        if updates:
            self._tx(updates)

    def is_recorded(self, subscription_id: str, alert_id: str) -> bool:
        """Whether this delivery is recorded (accepted or given up)."""
        return bool(self._rows("SELECT 1 FROM deliveries WHERE subscription_id = ? AND "
                               "alert_id = ?", (subscription_id, alert_id)))

    def record(self, report: AlertDelivered, topic: str,
               positions: dict[tuple[str, int], int], cluster_id: str | None) -> None:
        """In one transaction: the delivery, its report in the outbox, and positions."""
        self._tx([
            ("INSERT OR IGNORE INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?)",
             (report.subscription_id, report.alert_id, int(report.ok), report.status_code,
              report.attempts, report.error, report.time.isoformat())),
            self.outbox_statement(report, topic),
            *self.position_statements(positions, cluster_id),
        ])

    def add_book_events(self, events: Sequence[Event],
                        positions: dict[tuple[str, int], int], cluster_id: str | None) -> None:
        """In one transaction: subscription events (deduplicated by id) and positions."""
        self._tx([
            *(("INSERT OR IGNORE INTO book_events VALUES (?, ?)", (e.id, codec.encode(e)))
              for e in events),
            *self.position_statements(positions, cluster_id),
        ])

    def book(self) -> SubscriptionBook:
        """The subscription book folded from the stored subscription events."""
        book = SubscriptionBook()
        for (record,) in self._rows("SELECT record FROM book_events ORDER BY rowid"):
            book.apply(codec.decode(record))
        return book

    def deliveries(self) -> list[DeliveryRecord]:
        """Every recorded delivery, in recording order."""
        return [DeliveryRecord(s, a, bool(ok), c, n, e) for s, a, ok, c, n, e in self._rows(
            "SELECT subscription_id, alert_id, ok, status_code, attempts, error "
            "FROM deliveries ORDER BY rowid")]
