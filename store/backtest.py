"""Backtest a monitor configuration on a model's recorded serving history.

:func:`backtest` reads a model's ``PredictionMade`` and ``LabelObserved``
events from the projection's ``events`` ledger in log order (in chunks, so
long histories never sit in memory at once), replays them through a *fresh*
:class:`~modelog.models.monitor.ServingMonitor` -- no live state is touched,
nothing is produced -- and collects the alerts that configuration would have
raised, with when: the event time and the number of predictions replayed.
It also reads the alerts raised live (the ``alerts`` table) so the
:class:`BacktestReport` compares both. :func:`compare` replays two
configurations in one pass ("what would a stricter configuration have caught").

This module owns the replay, the reports and the reading of a configuration
file; it imports :mod:`modelog.models` and :mod:`modelog.store` only.
:func:`load_monitor_config` reads a
:class:`~modelog.models.monitor_config.MonitorConfig` from a YAML or TOML file
whose keys are those of a ``MonitorConfigured.config`` (one parser for both:
:func:`~modelog.models.monitor_config.parse_monitor_config`); durations take
seconds or ``"12h"``-style strings. A problem is a
:class:`~modelog.models.errors.MonitorConfigError` naming the file.

The monitor derives alert ids from the triggering event, so a candidate alert
with the id of a live one is the *same* alert: with the live configuration the
backtest reproduces the live alerts exactly.

Examples
--------
>>> import pathlib, tempfile
>>> with tempfile.TemporaryDirectory() as tmp:
...     path = pathlib.Path(tmp) / "strict.yaml"
...     _ = path.write_text("detector: page_hinkley\\npending_ttl: 2h\\nanomaly: false\\n")
...     cfg = load_monitor_config(path)
>>> cfg.concept.detector, cfg.pending_ttl, cfg.anomaly.enabled
('page_hinkley', datetime.timedelta(seconds=7200), False)
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import io
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from modelog.models import codec
from modelog.models.alerts import MONITOR_ALERT_TYPE_NAMES
from modelog.models.errors import EventDecodeError, MonitorConfigError
from modelog.models.events import Event
from modelog.models.monitor import ServingMonitor
from modelog.models.monitor_config import MonitorConfig, parse_monitor_config
from modelog.store.errors import BacktestError

__all__ = [
    "Alert",
    "BacktestReport",
    "Comparison",
    "ProgressCallback",
    "QueryReader",
    "backtest",
    "compare",
    "live_alerts",
    "load_monitor_config",
]

SERVING_TYPES: tuple[str, ...] = ("PredictionMade", "LabelObserved")

ProgressCallback = Callable[[int, int], None]
"""``progress(events_replayed, events_total)``, called after every chunk."""


class QueryReader(Protocol):
    """What the backtest reads with: :class:`modelog.store.reader.Reader` fits."""

    def query(self, sql: str, params: Any = None) -> pa.Table: ...


# -- configuration --------------------------------------------------------------
def load_monitor_config(path: str | Path) -> MonitorConfig:
    """Read a :class:`MonitorConfig` from a ``.toml``, ``.yaml`` or ``.yml`` file.

    The keys are those of a ``MonitorConfigured.config`` (see
    :func:`~modelog.models.monitor_config.parse_monitor_config`); a document
    with a single ``monitor`` table is read from that table.

    Raises
    ------
    MonitorConfigError
        When the file is missing, unparsable or holds an invalid configuration
        (its ``source`` is the file).
    """
    path = Path(path)

    def bad(rule: str) -> MonitorConfigError:
        return MonitorConfigError("", None, rule, source=str(path))

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise bad(f"cannot read monitor configuration: {exc.strerror}") from None
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise bad(f"unknown configuration format {suffix or '(no suffix)'!r}; "
                  "use a .toml, .yaml or .yml file")
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(io.StringIO(text))
            data = {} if data is None else data
    except Exception as exc:  # tomllib.TOMLDecodeError, yaml.YAMLError
        raise bad(f"not valid {suffix[1:].upper()}: {exc}") from None
    if isinstance(data, Mapping) and set(data) == {"monitor"} \
            and isinstance(data["monitor"], Mapping):
        data = data["monitor"]
    return parse_monitor_config(data, source=str(path))


# -- results --------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Alert:
    """One alert, raised by a backtest (``prediction_index`` set) or live.

    ``prediction_index`` is the number of predictions replayed when it fired.
    """

    id: str
    type: str
    time: dt.datetime
    model_version: int | None
    kind: str | None
    severity: str | None
    message: str
    prediction_index: int | None = None

    @property
    def key(self) -> tuple[str, str, int | None]:
        """What the report groups by: type, kind (or ``-``) and model version."""
        return self.type, self.kind or "-", self.model_version

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "time": self.time.isoformat()}

    @classmethod
    def from_event(cls, event: Event, prediction_index: int) -> Alert:
        version = getattr(event, "model_version", None)
        return cls(
            id=event.id, type=event.type_name(), time=event.time,
            model_version=version if isinstance(version, int) else None,
            kind=getattr(event, "kind", None), severity=getattr(event, "severity", None),
            message=str(getattr(event, "message", "") or ""),
            prediction_index=prediction_index,
        )


def _first_time(alerts: Sequence[Alert]) -> str:
    return min(a.time for a in alerts).isoformat(sep=" ", timespec="seconds") if alerts else "-"


@dataclasses.dataclass(frozen=True)
class BacktestReport:
    """What a configuration would have raised on a model's history, next to what was raised."""

    model: str
    config: MonitorConfig
    start: dt.datetime | None
    end: dt.datetime | None
    predictions: int
    labels: int
    skipped: int
    """Ledger rows that no longer decode (counted, not replayed)."""
    candidate: tuple[Alert, ...]
    live: tuple[Alert, ...]
    counters: Mapping[str, int]

    @property
    def matched(self) -> set[str]:
        """Ids of candidate alerts that were also raised live (the same alert)."""
        return {a.id for a in self.candidate} & {a.id for a in self.live}

    @property
    def first_detection(self) -> Alert | None:
        """The earliest candidate alert."""
        return min(self.candidate, key=lambda a: (a.time, a.id), default=None)

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        matched = self.matched
        return {
            "model": self.model,
            "config": self.config.to_mapping(),
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "predictions": self.predictions, "labels": self.labels, "skipped": self.skipped,
            "candidate": [a.to_dict() for a in self.candidate],
            "live": [a.to_dict() for a in self.live],
            "counts": {"candidate": len(self.candidate), "live": len(self.live),
                       "matched": len(matched),
                       "candidate_only": len(self.candidate) - len(matched),
                       "live_only": len({a.id for a in self.live} - matched)},
            "counters": dict(self.counters),
        }

    def render(self) -> str:
        """A rich table: candidate vs live alerts per type/kind/version, first detections."""
        from rich.table import Table

        span = f"{self.start or 'beginning'} .. {self.end or 'now'}"
        detector = self.config.concept.detector
        table = Table(title=f"Backtest of {self.model} ({span}): detector {detector}")
        for column in ("alert", "kind", "version", "candidate", "first candidate", "live",
                       "first live", "same"):
            table.add_column(column, justify="right" if column in (
                "version", "candidate", "live", "same") else "left")
        cand = _group(self.candidate)
        live = _group(self.live)
        matched = self.matched
        for key in sorted(set(cand) | set(live), key=lambda k: (k[0], k[1], k[2] or 0)):
            c, lv = cand.get(key, []), live.get(key, [])
            table.add_row(key[0], key[1], str(key[2] or "-"), str(len(c)), _first_time(c),
                          str(len(lv)), _first_time(lv), str(sum(a.id in matched for a in c)))
        if not cand and not live:
            table.add_row("(no alerts)", "", "", "0", "-", "0", "-", "0")
        first = self.first_detection
        lines = [
            f"replayed {self.predictions:,} predictions and {self.labels:,} labels"
            + (f" ({self.skipped:,} undecodable rows skipped)" if self.skipped else ""),
            f"candidate alerts: {len(self.candidate)}, live alerts: {len(self.live)}, "
            f"same alert both: {len(matched)}",
        ]
        if first is not None:
            lines.append(f"first candidate detection: {first.type} {first.kind or ''} at "
                         f"{first.time.isoformat()} (prediction #{first.prediction_index:,})")
        return _print(table, lines)


def _group(alerts: Sequence[Alert]) -> dict[tuple[str, str, int | None], list[Alert]]:
    groups: dict[tuple[str, str, int | None], list[Alert]] = collections.defaultdict(list)
    for a in alerts:
        groups[a.key].append(a)
    return groups


def _print(table: Any, lines: Sequence[str]) -> str:
    from rich.console import Console

    console = Console(file=io.StringIO(), width=140, color_system=None, force_terminal=False,
                      markup=False, emoji=False)  # feature names are data, never markup
    console.print(table)
    for line in lines:
        console.print(line, highlight=False, markup=False)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    return str(out)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Two configurations backtested on the same history (``a`` usually the live one)."""

    a: BacktestReport
    b: BacktestReport

    def only_b(self) -> list[Alert]:
        """Alerts ``b`` raises whose type/kind/version ``a`` never raised, or raised later."""
        first_a = {k: min(x.time for x in v) for k, v in _group(self.a.candidate).items()}
        return [x for x in self.b.candidate if x.key not in first_a or x.time < first_a[x.key]]

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a.to_dict(), "b": self.b.to_dict(),
                "earlier_or_only_in_b": [x.to_dict() for x in self.only_b()]}

    def render(self) -> str:
        """A rich table of both configurations' alerts side by side."""
        from rich.table import Table

        a, b = self.a.config.concept.detector, self.b.config.concept.detector
        table = Table(title=f"{self.a.model}: configuration A ({a}) vs B ({b})")
        for column in ("alert", "kind", "version", "A", "first A", "B", "first B"):
            table.add_column(column, justify="right" if column in ("version", "A", "B")
                             else "left")
        ga, gb = _group(self.a.candidate), _group(self.b.candidate)
        for key in sorted(set(ga) | set(gb), key=lambda k: (k[0], k[1], k[2] or 0)):
            xa, xb = ga.get(key, []), gb.get(key, [])
            table.add_row(key[0], key[1], str(key[2] or "-"), str(len(xa)), _first_time(xa),
                          str(len(xb)), _first_time(xb))
        if not ga and not gb:
            table.add_row("(no alerts)", "", "", "0", "-", "0", "-")
        diff = [a.to_dict() for a in self.a.candidate] != [b.to_dict() for b in self.b.candidate]
        lines = [f"replayed {self.a.predictions:,} predictions and {self.a.labels:,} labels; "
                 f"A raised {len(self.a.candidate)}, B raised {len(self.b.candidate)} alerts; "
                 f"B raised {len(self.only_b())} that A did not (or later)"
                 + ("" if diff else "; identical")]
        return _print(table, lines)


# -- reading and replaying -------------------------------------------------------------
def _time_filter(start: dt.datetime | None, end: dt.datetime | None,
                 column: str = "time") -> tuple[str, list[Any]]:
    sql, params = "", []
    if start is not None:
        sql += f" AND {column} >= CAST(? AS TIMESTAMPTZ)"
        params.append(start)
    if end is not None:
        sql += f" AND {column} < CAST(? AS TIMESTAMPTZ)"
        params.append(end)
    return sql, params


_SERVING_IN = ", ".join(f"'{t}'" for t in SERVING_TYPES)


def _count(reader: QueryReader, model: str, start: dt.datetime | None,
           end: dt.datetime | None) -> int:
    where, params = _time_filter(start, end)
    table = reader.query(
        f"SELECT count(*) AS n FROM events WHERE type IN ({_SERVING_IN}) AND aggregate = ?"
        + where, [model, *params])
    return int(table.column("n")[0].as_py())


def _chunks(reader: QueryReader, model: str, start: dt.datetime | None,
            end: dt.datetime | None, chunk_size: int) -> Iterator[list[str]]:
    """Payloads of the model's serving events in log order (time, id), a chunk at a time.

    Keyset pagination on ``(time, id)``: every chunk is one bounded query.
    """
    where, params = _time_filter(start, end)
    base = (f"SELECT id, time, payload FROM events WHERE type IN ({_SERVING_IN}) "
            f"AND aggregate = ?{where}")
    after: tuple[dt.datetime, str] | None = None
    while True:
        sql, args = base, [model, *params]
        if after is not None:
            sql += " AND (time > CAST(? AS TIMESTAMPTZ) OR (time = CAST(? AS TIMESTAMPTZ) " \
                   "AND id > ?))"
            args += [after[0], after[0], after[1]]
        table = reader.query(sql + " ORDER BY time, id LIMIT ?", [*args, chunk_size])
        if table.num_rows == 0:
            return
        payloads = table.column("payload").to_pylist()
        yield [str(p) for p in payloads]
        if table.num_rows < chunk_size:
            return
        after = (table.column("time")[-1].as_py(), str(table.column("id")[-1].as_py()))


def live_alerts(reader: QueryReader, model: str, start: dt.datetime | None = None,
                end: dt.datetime | None = None) -> list[Alert]:
    """The monitor alerts raised live for ``model`` (the ``alerts`` table), in time order."""
    where, params = _time_filter(start, end)
    types_in = ", ".join(f"'{t}'" for t in MONITOR_ALERT_TYPE_NAMES)
    table = reader.query(
        "SELECT event_id, type, time, model_version, kind, severity, message FROM alerts "
        f"WHERE model = ? AND type IN ({types_in}){where} ORDER BY time, event_id",
        [model, *params])
    return [
        Alert(id=r["event_id"], type=r["type"], time=r["time"], model_version=r["model_version"],
              kind=r["kind"], severity=r["severity"], message=r["message"] or "")
        for r in table.to_pylist()
    ]


@dataclasses.dataclass
class _Replay:
    monitor: ServingMonitor
    alerts: list[Alert] = dataclasses.field(default_factory=list)


def _replay(reader: QueryReader, model: str, configs: Sequence[MonitorConfig], *,
            start: dt.datetime | None, end: dt.datetime | None,
            progress: ProgressCallback | None, chunk_size: int) -> list[BacktestReport]:
    if chunk_size < 1:
        raise BacktestError(f"chunk_size must be >= 1, got {chunk_size}")
    if start is not None and end is not None and end <= start:
        raise BacktestError(f"the backtest window is empty: end {end.isoformat()} is not "
                            f"after start {start.isoformat()}; swap --from and --to")
    total = _count(reader, model, start, end) if progress is not None else 0
    replays = [_Replay(ServingMonitor(c)) for c in configs]
    predictions = labels = skipped = done = 0
    for chunk in _chunks(reader, model, start, end, chunk_size):
        for payload in chunk:
            try:
                event = codec.decode(payload)
            except EventDecodeError:
                skipped += 1
                continue
            kind = event.type_name()
            if kind == "PredictionMade":
                predictions += 1
            elif kind == "LabelObserved":
                labels += 1
            for replay in replays:
                for derived in replay.monitor.process(event):
                    if derived.type_name() in MONITOR_ALERT_TYPE_NAMES:
                        replay.alerts.append(Alert.from_event(derived, predictions))
        done += len(chunk)
        if progress is not None:
            progress(done, max(total, done))
    live = tuple(live_alerts(reader, model, start, end))
    return [
        BacktestReport(model=model, config=cfg, start=start, end=end, predictions=predictions,
                       labels=labels, skipped=skipped, candidate=tuple(r.alerts), live=live,
                       counters=r.monitor.counters(model))
        for cfg, r in zip(configs, replays, strict=True)
    ]


def backtest(reader: QueryReader, model: str, config: MonitorConfig, *,
             start: dt.datetime | None = None, end: dt.datetime | None = None,
             progress: ProgressCallback | None = None,
             chunk_size: int = 50_000) -> BacktestReport:
    """Replay ``model``'s recorded serving events through a fresh monitor with ``config``.

    Parameters
    ----------
    reader
        Where the ledger is (:class:`modelog.store.reader.Reader`).
    model
        The model name (the aggregate of its serving events).
    config
        The monitor configuration to try.
    start, end
        Only events with ``start <= time < end`` (tz-aware; either may be ``None``).
    progress
        Called as ``progress(replayed, total)`` after each chunk.
    chunk_size
        Ledger rows read per query.

    Raises
    ------
    BacktestError
        On an empty time window or a bad ``chunk_size``.
    modelog.store.errors.NoDataError
        When nothing was projected yet.
    """
    [report] = _replay(reader, model, [config], start=start, end=end, progress=progress,
                       chunk_size=chunk_size)
    return report


def compare(reader: QueryReader, model: str, config_a: MonitorConfig, config_b: MonitorConfig,
            *, start: dt.datetime | None = None, end: dt.datetime | None = None,
            progress: ProgressCallback | None = None, chunk_size: int = 50_000) -> Comparison:
    """Backtest two configurations in one pass over the history (see :func:`backtest`)."""
    a, b = _replay(reader, model, [config_a, config_b], start=start, end=end,
                   progress=progress, chunk_size=chunk_size)
    return Comparison(a, b)
