"""The SDK's monitor configuration calls (configure_monitor, monitor_config, reset_monitor).

:class:`MonitorCalls` is a mixin of :class:`~modelog.streams.sdk.Client`. A
configuration is validated with the worker's own parsers before anything is
sent (a :class:`~modelog.models.errors.MonitorConfigError` names the setting,
the value and the rule), then sent as a ``MonitorConfigured`` event keyed by the
model, for the model or one of its versions. The configuration in force is
replayed from the ledger (:mod:`modelog.store.monitor_configs`).

May import :mod:`modelog.models`, :mod:`modelog.store` and :mod:`modelog.streams`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from modelog.config import Settings
from modelog.models import codec
from modelog.models.config_book import RESET
from modelog.models.errors import MonitorConfigError
from modelog.models.events import MonitorConfigured
from modelog.models.ids import UuidV7
from modelog.models.monitor_config import parse_monitor_config
from modelog.models.validation import check_name
from modelog.store.artifacts import ArtifactStore
from modelog.store.monitor_configs import MonitorConfigView
from modelog.streams.producer import EventProducer
from modelog.streams.topics import Topics

__all__ = ["MonitorCalls"]


class MonitorCalls:
    """The monitor configuration calls of :class:`~modelog.streams.sdk.Client` (a mixin).

    Uses the client's settings, topics, artifact store, id generator and producer.
    """

    settings: Settings
    topics: Topics
    artifacts: ArtifactStore
    new_id: UuidV7
    _producer: EventProducer
    _name: str

    def configure_monitor(self, model: str, version: int | None = None,
                          **settings: Any) -> MonitorConfigured:
        """Set monitor settings of ``model`` (or of one ``version``), on top of those in force.

        Keys are the flat settings of :data:`modelog.models.monitor_config.SETTINGS`
        (``psi_threshold=0.3``, ``outlier_margin=5``, ``training_reference=False``,
        ``anomaly=False``, ...) or sections (``drift={"window": 300}``); durations as
        seconds, ``"2h"`` or a ``timedelta``. Returns the event sent (flushed).

        Raises
        ------
        MonitorConfigError
            A setting is unknown or its value invalid (setting, value and rule
            named); nothing is sent.

        Examples
        --------
        >>> client.configure_monitor("churn", psi_threshold=0.3)          # doctest: +SKIP
        >>> client.configure_monitor("churn", version=3, outlier_margin=5)  # doctest: +SKIP
        """
        if RESET in settings:
            raise MonitorConfigError(RESET, settings[RESET],
                                     "use reset_monitor() to return to the defaults", model)
        self._check_target(model, version)
        settings = {k: _plain(v) for k, v in settings.items()}
        parse_monitor_config(settings, model=model)
        try:
            from modelog.models.quality_config import parse_quality_config
        except ImportError:  # pragma: no cover - the quality monitor is optional
            pass
        else:
            parse_quality_config(settings, model=model)
        return self._send_config(model, version, dict(settings))

    def reset_monitor(self, model: str, version: int | None = None) -> MonitorConfigured:
        """Return ``model`` (all its versions) or one ``version`` to the default settings."""
        self._check_target(model, version)
        return self._send_config(model, version, {RESET: True})

    def monitor_config(self, model: str, version: int | None = None) -> MonitorConfigView:
        """The monitor configuration in force for ``model`` (or ``version``), from the ledger.

        Raises
        ------
        modelog.store.errors.NoDataError
            Nothing was projected yet (run ``modelog project`` or ``modelog up``).
        """
        from modelog.store.monitor_configs import monitor_config_in_force
        from modelog.store.reader import Reader

        self._check_target(model, version)
        return monitor_config_in_force(Reader(self.settings), model, version)

    @staticmethod
    def _check_target(model: str, version: int | None) -> None:
        check_name(model, "MonitorConfigured", "model")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)
                                    or version < 1):
            raise MonitorConfigError("model_version", version,
                                     "must be a version number (an integer >= 1)", model)

    def _send_config(self, model: str, version: int | None,
                     config: dict[str, Any]) -> MonitorConfigured:
        from modelog.streams.registry_client import default_actor

        event = MonitorConfigured(
            id=self.new_id(), time=codec.utcnow(), aggregate=model,
            producer=self.settings.producer_name, model=model, config=config,
            model_version=version, actor=default_actor())
        codec.validate(event)
        self._producer.send_event(event)
        self._producer.flush(30.0)
        return event


def _plain(value: Any) -> Any:
    """A setting as it travels in JSON: a ``timedelta`` as seconds (also inside sections)."""
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
