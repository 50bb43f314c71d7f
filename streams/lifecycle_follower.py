"""The monitoring worker's view of the lifecycle: verified registry answers plus training data.

:class:`LifecycleFollower` is what :class:`~modelog.streams.serving_loop.ServingLoop`
feeds its routers from: the verified registry answers of a
:class:`~modelog.streams.registry_agent.RegistryFollower`, plus the
``RunDatasetUsed`` records of the runs topic and the ``DatasetVersionCreated``
records of the datasets topic -- what the serving monitor needs to compare a
version with its training dataset's profile
(:class:`~modelog.models.reference.TrainingReferences`). Other records of those
topics (metrics, params, ...) are skipped without decoding; records that do not
decode are counted and skipped (a profile is data: the monitor checks it before
use and falls back to the warm-up reference when it cannot use it).

May import :mod:`modelog.models` and :mod:`modelog.streams`.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from modelog.config import Settings
from modelog.models import codec
from modelog.models.errors import EventDecodeError
from modelog.models.events import DatasetVersionCreated, Event, RunDatasetUsed
from modelog.streams.logtail import LogTail, RawRecord
from modelog.streams.registry_agent import RegistryFollower
from modelog.streams.topics import Topics

__all__ = ["LifecycleFollower"]

_WANTED = ((b"RunDatasetUsed", RunDatasetUsed), (b"DatasetVersionCreated", DatasetVersionCreated))


class LifecycleFollower:
    """Verified registry answers, then the training datasets and their profiles.

    Same interface as :class:`~modelog.streams.registry_agent.RegistryFollower`
    (``read_to_end``, ``poll``, ``close``, ``fold``).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics.from_settings(settings)
        self.registry = RegistryFollower(settings)
        self.fold: Any = self.registry.fold
        self.undecodable = 0
        self._tails: list[LogTail] | None = None

    def _open(self) -> list[LogTail]:
        if self._tails is None:
            tails: list[LogTail] = []
            try:
                for topic in (self.topics.runs, self.topics.datasets):
                    tails.append(LogTail(self.settings, topic))
            except BaseException:
                for tail in tails:
                    tail.close()
                raise
            self._tails = tails
        return self._tails

    def _decode(self, records: list[RawRecord]) -> list[Event]:
        out: list[Event] = []
        for _, _, _, value in records:
            for marker, cls in _WANTED:
                if marker in value:
                    try:
                        event = codec.decode(value)
                    except EventDecodeError:
                        self.undecodable += 1
                        break
                    if isinstance(event, cls):
                        out.append(event)
                    break
        return out

    def read_to_end(self, timeout: float = 30.0) -> list[Event]:
        """Everything up to the ends now: registry answers first, then the training data."""
        out: list[Event] = list(self.registry.read_to_end(timeout))
        for tail in self._open():
            out += self._decode(tail.read_to_end(timeout))
        return out

    def poll(self) -> list[Event]:
        """What arrived since (no waiting)."""
        out: list[Event] = list(self.registry.poll())
        for tail in self._open():
            out += self._decode(tail.poll(0.0))
        return out

    def close(self) -> None:
        """Close every reader (idempotent)."""
        tails, self._tails = self._tails, None
        for tail in tails or ():
            tail.close()
        self.registry.close()

    def __enter__(self) -> LifecycleFollower:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
