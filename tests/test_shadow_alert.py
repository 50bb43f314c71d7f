"""A shadow that raises: the caller gets production's answer; the failure is counted and alerted.

Against the real broker, with the registry worker in this process and a real
``modelog project`` process filling the DuckDB ledger, whose ``alerts`` view must
show the :class:`ShadowScoringFailed` alerts. The rate limit itself is a pure
decision (:class:`ShadowFailureLimiter`), tested here without a broker too.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from sklearn.dummy import DummyRegressor

import modelog
from modelog.config import Settings
from modelog.models.alerts import ALERT_TYPE_NAMES, alert_severity, is_alert
from modelog.models.serving_events import (
    ERROR_TEXT_LIMIT,
    ShadowFailureLimiter,
    ShadowScoringFailed,
)
from modelog.store.reader import Reader
from modelog.streams.registry_agent import RegistryService
from modelog.streams.sdk import Client
from modelog.streams.serving import Predictor
from modelog.streams.topics import ensure_topics
from tests.test_e2e import _start, _stop, _wait_for

X = pd.DataFrame({"x": [0.0, 1.0, 2.0]})
T0 = dt.datetime(2026, 3, 3, 12, 0, tzinfo=dt.UTC)


# -- the pure rate limit -------------------------------------------------------------------
def test_one_alert_per_model_alias_version_per_period_with_the_count() -> None:
    limiter = ShadowFailureLimiter(period=60.0)
    at = [T0 + dt.timedelta(seconds=s) for s in range(0, 200, 10)]  # a failure every 10 s
    alerts = [a for t in at if (a := limiter.record("m", "shadow", 2, "ValueError", "bad", t))]
    alerts += limiter.due(T0 + dt.timedelta(seconds=400))
    assert [a.time for a in alerts] == [T0 + dt.timedelta(seconds=s)
                                        for s in (0, 60, 120, 180, 400)]
    assert [a.failures for a in alerts] == [1, 6, 6, 6, 1]  # all 20 counted, once each
    assert all(is_alert(a) and alert_severity(a) == "warning" for a in alerts)
    # another version, alias or model is another key: alerted at once
    others = [limiter.record("m", "shadow", 3, "E", "", T0),
              limiter.record("m", "x", 2, "E", "", T0),
              limiter.record("n", "shadow", 2, "E", "", T0)]
    assert all(isinstance(a, ShadowScoringFailed) for a in others)


def test_the_alert_truncates_the_error_and_says_what_failed() -> None:
    alert = ShadowFailureLimiter().record("churn", "shadow", 4, "KeyError", "x" * 5_000, T0,
                                          paired_with="p-1", producer="app")
    assert alert is not None and len(alert.error) == ERROR_TEXT_LIMIT
    assert (alert.model, alert.model_version, alert.alias, alert.paired_with, alert.producer) == (
        "churn", 4, "shadow", "p-1", "app")
    assert alert.message.startswith("shadow shadow (v4) of churn failed 1 time(s)")
    assert "ShadowScoringFailed" in ALERT_TYPE_NAMES
    with pytest.raises(ValueError, match="period = 0"):
        ShadowFailureLimiter(period=0)


# -- against the broker and the projector --------------------------------------------------
@pytest.fixture(scope="module")
def live(broker: str, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[tuple[Settings, Client]]:
    data = tmp_path_factory.mktemp("shadow-alert")
    s = Settings(broker=broker, data_dir=data, topic_prefix=f"sa{uuid.uuid4().hex[:8]}.",
                 partitions=2, producer_name="pytest")
    ensure_topics(s)
    projector = _start(s, "project")
    try:
        with RegistryService(s), modelog.connect(settings=s) as client:
            yield s, client
    finally:
        _stop(projector)


def _raising_shadow(model: Any, inputs: Any) -> float:
    """Version 1 answers its constant; the shadow version (constant 2) raises."""
    if float(model.constant) == 2.0:
        raise RuntimeError("shadow exploded on " + repr(inputs))
    return float(model.constant)


def _model(client: Client) -> str:
    name = f"m{uuid.uuid4().hex[:8]}"
    for alias, value in (("production", 1.0), ("shadow", 2.0)):
        version = client.register_model(
            name, DummyRegressor(strategy="constant", constant=value).fit(X, [value] * 3),
            dataset=X)
        client.set_alias(name, alias, version, reason="test")
    client.set_traffic(name, {"production": 1.0}, shadows=["shadow"])
    return name


def _alerts(s: Settings, model: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = Reader(s).query(
        "select type, time, model, model_version, severity, message, statistic, params "
        f"from alerts where model = '{model}' order by time").to_pylist()
    return rows


@pytest.mark.broker
def test_a_raising_shadow_leaves_the_caller_alone_and_is_alerted_once_a_minute(
        live: tuple[Settings, Client]) -> None:
    s, client = live
    name = _model(client)
    predictor = client.predictor(name, predict_fn=_raising_shadow)
    served = [predictor.serve({"x": float(i)}, key=i) for i in range(20)]
    predictor.close()  # waits for the shadow scoring
    assert {(x.output, x.alias, x.model_version) for x in served} == {(1.0, "production", 1)}
    assert predictor.stats.shadow_errors == 20 and predictor.stats.shadow_logged == 0
    assert predictor.stats.shadow_alerts == 1  # 20 failures within a minute: one alert
    client.flush()
    rows = _wait_for(lambda: _alerts(s, name), 60, "the shadow alert in the alerts view")
    assert len(rows) == 1
    row = rows[0]
    assert (row["type"], row["model_version"], row["severity"]) == (
        "ShadowScoringFailed", 2, "warning")
    assert "shadow shadow (v2)" in row["message"] and "RuntimeError: shadow exploded" in row[
        "message"]
    assert row["statistic"] == 1.0 and '"alias":"shadow"' in row["params"].replace(" ", "")


class _QuickAlerts(Predictor):
    shadow_alert_period = 0.5


@pytest.mark.broker
def test_failures_after_the_first_alert_are_counted_into_the_next(
        live: tuple[Settings, Client]) -> None:
    s, client = live
    name = _model(client)
    with _QuickAlerts(client, name, predict_fn=_raising_shadow) as predictor:
        outputs = [predictor.predict({"x": 1.0}) for _ in range(10)]
        client.flush()
        # the following thread sends the period's count once the period is over
        rows = _wait_for(lambda: sum(r["statistic"] for r in _alerts(s, name)) == 10
                         and _alerts(s, name), 60, "all 10 failures alerted")
    assert outputs == [1.0] * 10 and predictor.stats.shadow_errors == 10
    assert rows[0]["statistic"] == 1.0 and len(rows) >= 2  # the first at once, then counts
    gaps = [(b["time"] - a["time"]).total_seconds() for a, b in itertools.pairwise(rows)]
    assert all(g >= 0.5 for g in gaps), gaps  # at most one alert per period
