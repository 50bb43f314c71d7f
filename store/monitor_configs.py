"""The monitor configuration in force for a model (or version), replayed from the ledger.

:func:`monitor_config_in_force` reads a model's ``MonitorConfigured`` events from the
``events`` ledger in log order and applies them with the serving monitor's own
rules (:class:`~modelog.models.config_book.ConfigBook`); a configuration the
worker would refuse is skipped, as the worker skips it (and listed in
``rejected``). What ``modelog monitor show`` and ``Client.monitor_config`` print.
Imports :mod:`modelog.models` and :mod:`modelog.store`.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from modelog.models.config_book import ConfigBook
from modelog.models.errors import MonitorConfigError
from modelog.models.monitor_config import MonitorConfig

__all__ = ["MonitorConfigView", "monitor_config_in_force"]

_SQL = """
SELECT id, time, CAST(payload AS VARCHAR) AS payload FROM events
WHERE type = 'MonitorConfigured' AND aggregate = ? AND payload->>'$.model' = ?
ORDER BY partition, "offset", time, id"""


@dataclasses.dataclass(frozen=True)
class MonitorConfigView:
    """A model's (or version's) monitor configuration as the worker applies it.

    ``settings`` are the ones set (later ones winning), ``config`` every setting in
    force (flat form), ``versions`` the versions with settings of their own,
    ``events`` how many configurations were applied and ``rejected`` the refused
    ones (``(event id, reason)``).
    """

    model: str
    version: int | None
    settings: dict[str, Any]
    config: dict[str, Any]
    versions: list[int]
    events: int
    rejected: list[tuple[str, str]]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


def monitor_config_in_force(reader: Any, model: str, version: int | None = None,
                            default: MonitorConfig | None = None) -> MonitorConfigView:
    """Replay ``model``'s ``MonitorConfigured`` events; the configuration of ``version``.

    ``reader`` is a :class:`~modelog.store.reader.Reader` (anything with ``query``).
    """
    book = ConfigBook(default)
    applied = 0
    rejected: list[tuple[str, str]] = []
    for row in reader.query(_SQL, [model, model]).to_pylist():
        payload = row["payload"]
        body = json.loads(payload) if isinstance(payload, str | bytes) else payload
        config = body.get("config") if isinstance(body, dict) else None
        number = body.get("model_version") if isinstance(body, dict) else None
        try:
            book.apply(model, number if isinstance(number, int) else None,
                       config if isinstance(config, dict) else {})
        except MonitorConfigError as exc:
            rejected.append((str(row["id"]), str(exc)))
            continue
        applied += 1
    return MonitorConfigView(
        model=model, version=version, settings=book.settings(model, version),
        config=book.config(model, version).to_mapping(), versions=book.versions(model),
        events=applied, rejected=rejected)
