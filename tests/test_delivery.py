"""Alert subscriptions and webhook delivery: the pure rules, then the worker with a real
broker, a real SQLite ledger and a real HTTP receiver (``ThreadingHTTPServer``).

The receiver listens on 127.0.0.1, so these tests run with
``webhook_allow_private`` on (and a deployment key for signing secrets); what
happens with it off is tests/test_webhook_security.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jsonschema
import pytest

from modelog.config import Settings
from modelog.models import codec
from modelog.models.alerts import (
    KNOWN_KINDS,
    Outcome,
    SubscriptionBook,
    alert_severity,
    backoff_delay,
    delivered_event,
    is_alert,
    is_retryable,
    matches,
    open_secret,
    subscription_event,
    verify_signature,
)
from modelog.models.deadletter import DeadLetter
from modelog.models.errors import EventValidationError
from modelog.models.events import (
    AlertDelivered,
    AlertSubscriptionCreated,
    AlertSubscriptionRemoved,
    AnomalyDetected,
    DriftDetected,
    DriftResolved,
    Event,
    MonitorStatsReported,
    RetrainRequested,
    SkewDetected,
)
from modelog.models.ids import new_id
from modelog.store.outbox import DeliveryLedger
from modelog.streams.delivery import deliver_once
from modelog.streams.errors import UnknownSubscriptionError
from modelog.streams.registry_agent import LogTail
from modelog.streams.subscriptions import list_subscriptions, subscribe, unsubscribe
from modelog.streams.topics import Topics

T0 = dt.datetime(2026, 3, 3, 12, 0, tzinfo=dt.UTC)


def _sub(**kw: Any) -> AlertSubscriptionCreated:
    fields: dict[str, Any] = {"id": new_id(), "time": T0, "aggregate": "s-1",
                              "subscription_id": "s-1", "url": "http://127.0.0.1:1/hook"}
    fields.update(kw)
    return AlertSubscriptionCreated(**fields)


def _drift(model: str = "churn", *, time: dt.datetime | None = None,
           severity: str = "warning", kind: str = "concept") -> DriftDetected:
    return DriftDetected(id=new_id(), time=time or codec.utcnow(), aggregate=model, model=model,
                         kind=kind, detector="adwin", statistic=0.4,  # type: ignore[arg-type]
                         severity=severity)  # type: ignore[arg-type]


def _anomaly(model: str = "churn", severity: str = "info") -> AnomalyDetected:
    return AnomalyDetected(id=new_id(), time=codec.utcnow(), aggregate=model, model=model,
                           detector="hst", statistic=0.9, threshold=0.5,
                           severity=severity)  # type: ignore[arg-type]


# -- pure rules ---------------------------------------------------------------------------
def test_matching_rules() -> None:
    late = T0 + dt.timedelta(minutes=1)
    everything = _sub()
    churn_only = _sub(models=["churn"])
    concept = _sub(kinds=["concept"])
    anomalies = _sub(kinds=["AnomalyDetected"])
    critical = _sub(min_severity="critical")
    warning = _sub(min_severity="warning")

    drift = _drift(time=late)
    assert matches(everything, drift) and matches(churn_only, drift)
    assert not matches(churn_only, _drift("fraud", time=late))
    assert matches(concept, drift)  # kind field
    assert not matches(concept, _drift(time=late, kind="data"))
    assert not matches(anomalies, drift) and matches(anomalies, _anomaly())  # type name
    assert not matches(critical, drift)
    assert matches(critical, _drift(time=late, severity="critical"))
    assert matches(warning, drift) and not matches(warning, _drift(time=late, severity="info"))
    # alerts raised before the subscription only with replay; raised is when the alert
    # was written (its record timestamp), else its event time
    early = _drift(time=T0 - dt.timedelta(seconds=1))
    assert not matches(everything, early) and matches(everything, early, replay=True)
    assert matches(everything, early, raised=T0 + dt.timedelta(seconds=1))  # late traffic
    assert not matches(everything, drift, raised=T0 - dt.timedelta(seconds=1))
    assert matches(everything, drift, raised=T0 - dt.timedelta(seconds=1), replay=True)
    # alerts without a severity field
    resolved = DriftResolved(id="r", time=late, aggregate="churn", model="churn",
                             kind="concept", detector="adwin", detected_id="d")
    retrain = RetrainRequested(id="q", time=late, aggregate="churn", model="churn",
                               reason="drift")
    assert alert_severity(resolved) == "info" and alert_severity(retrain) == "warning"
    assert not matches(warning, resolved) and matches(warning, retrain)
    assert matches(concept, resolved)
    skew = SkewDetected(id="k", time=late, aggregate="churn", model="churn", feature="age",
                        kind="missing")
    assert matches(_sub(kinds=["missing"]), skew) and not matches(concept, skew)
    # statistics and configuration are not alerts
    stats = MonitorStatsReported(id="m", time=late, aggregate="churn", model="churn",
                                 stats={"error": 0.1})
    assert not is_alert(stats) and all(is_alert(a) for a in (drift, resolved, retrain, skew))
    assert {"DriftDetected", "concept", "missing", "RetrainRequested"} <= KNOWN_KINDS


def test_book_ignores_duplicates_and_removal_is_final() -> None:
    book = SubscriptionBook()
    first = _sub(url="http://a.test/1")
    assert book.apply(first)
    assert not book.apply(_sub(url="http://b.test/2"))  # same subscription id: ignored
    assert book.get("s-1") == first and len(book) == 1
    removed = AlertSubscriptionRemoved(id=new_id(), time=T0, aggregate="s-1",
                                       subscription_id="s-1")
    assert book.apply(removed) and not book.apply(removed)
    assert not book.apply(first)  # a removed subscription never comes back
    assert "s-1" not in book and book.matching(_drift()) == []
    assert not book.apply(_drift())  # other events do not change the book


def test_subscription_validation_names_field_value_and_rule() -> None:
    cases: list[tuple[dict[str, Any], str, object]] = [
        ({"url": "ftp://x.test"}, "url", "ftp://x.test"),
        ({"url": "http://x.test", "models": ["no spaces"]}, "models", "no spaces"),
        ({"url": "http://x.test", "kinds": ["drift"]}, "kinds", "drift"),
        ({"url": "http://x.test", "min_severity": "fatal"}, "min_severity", "fatal"),
    ]
    for kwargs, field, value in cases:
        with pytest.raises(EventValidationError) as info:
            subscription_event(**kwargs)
        assert (info.value.field, info.value.value) == (field, value)
        assert info.value.rule
    ok = subscription_event("https://x.test/h", models=["churn"], kinds=["concept"],
                            min_severity="critical", secret="k", secret_key="deployment key")
    assert ok.aggregate == ok.subscription_id and ok.secret_ciphertext is not None
    assert open_secret("deployment key", ok.secret_ciphertext, ok.subscription_id) == "k"


def test_retry_policy_and_report_ids() -> None:
    assert [backoff_delay(n, (0.5, 30.0)) for n in (1, 2, 3, 8)] == [0.5, 1.0, 2.0, 30.0]
    assert is_retryable(None) and is_retryable(500) and is_retryable(503)
    assert is_retryable(429) and not is_retryable(400) and not is_retryable(404)
    alert = _drift()
    a = delivered_event("s-1", alert, Outcome(True, 200, 3))
    b = delivered_event("s-1", alert, Outcome(True, 200, 3))
    c = delivered_event("s-2", alert, Outcome(True, 200, 3))
    assert a.id == b.id != c.id and a.time.tzinfo is not None
    codec.validate(a)


# -- a real HTTP receiver ---------------------------------------------------------------
Request = dict[str, Any]
Script = Callable[[int], int]
"""Status to answer to the n-th (1-based) request for one event id on one path."""


class Receiver:
    """A webhook receiver: records every request; each path follows a script."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.scripts: dict[str, Script] = {}
        self.delay = 0.0
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.delay:
                    time.sleep(receiver.delay)
                event_id = self.headers.get("Modelog-Event-Id", "")
                with receiver._lock:
                    key = (self.path, event_id)
                    receiver._seen[key] = n = receiver._seen.get(key, 0) + 1
                    receiver.requests.append({"path": self.path, "body": body,
                                              "headers": dict(self.headers.items())})
                script = receiver.scripts.get(self.path)
                status = 200 if script is None else script(n)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str, script: Script | None = None) -> str:
        path = f"/{name}-{uuid.uuid4().hex[:8]}"
        if script is not None:
            self.scripts[path] = script
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def at(self, url: str) -> list[Request]:
        path = "/" + url.split("/", 3)[3]
        with self._lock:
            return [r for r in self.requests if r["path"] == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def topics(topics: Settings) -> Settings:
    """The shared fixture, for a receiver on this machine: loopback allowed, a deployment key."""
    return dataclasses.replace(topics, webhook_allow_private=True,
                               secret_key="test deployment key")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _produce(settings: Settings, events: Sequence[Event], raw: tuple[bytes, ...] = (),
             *, linger_ms: int = 0) -> None:
    from confluent_kafka import Producer

    from modelog.streams.kafka import producer_config

    topics = Topics.from_settings(settings)
    producer = Producer(producer_config(settings, linger_ms=linger_ms, bulk=True))
    for ev in events:
        producer.produce(topics.for_event(ev), key=ev.aggregate.encode(), value=codec.encode(ev))
    for value in raw:
        producer.produce(topics.monitoring, key=b"churn", value=value)
    assert producer.flush(15) == 0


def _read(settings: Settings, topic: str) -> list[tuple[bytes | None, bytes]]:
    with LogTail(settings, topic) as tail:
        return [(k, v) for _p, _o, k, v in tail.read_to_end(15)]


def _reports(settings: Settings) -> list[AlertDelivered]:
    events = [codec.decode(v) for _k, v in _read(settings, Topics.from_settings(settings)
                                                 .subscriptions)]
    return [e for e in events if isinstance(e, AlertDelivered)]


FAST: dict[str, Any] = {"backoff": (0.01, 0.02), "http_timeout": 5.0, "timeout": 30.0}


# -- the worker with a real broker --------------------------------------------------------
@pytest.mark.broker
def test_delivers_matching_alerts_with_headers_and_valid_body(
    topics: Settings, receiver: Receiver,
) -> None:
    churn_url = receiver.url("churn")
    all_url = receiver.url("all")
    before = _drift()  # raised (written) before anyone subscribed: not delivered
    _produce(topics, [before])
    churn_sid = subscribe(topics, churn_url, models=["churn"], min_severity="warning",
                          secret="s3cret")
    all_sid = subscribe(topics, all_url)
    critical, low = _drift(severity="critical"), _anomaly()
    # raised after subscribing about traffic logged an hour late (its event time): delivered
    fraud = _drift("fraud", time=codec.utcnow() - dt.timedelta(hours=1))
    stats = MonitorStatsReported(id=new_id(), time=codec.utcnow(), aggregate="churn",
                                 model="churn", stats={"error": 0.2})
    _produce(topics, [critical, low, fraud, stats], raw=(b"{not an event",))

    stats_run = deliver_once(topics, **FAST)

    got = receiver.at(churn_url)
    assert [r["headers"]["Modelog-Event-Id"] for r in got] == [critical.id]
    request = got[0]
    headers, body = request["headers"], request["body"]
    assert headers["Content-Type"] == "application/json"
    assert headers["Modelog-Event-Type"] == "DriftDetected"
    assert headers["Modelog-Subscription-Id"] == churn_sid
    assert verify_signature("s3cret", headers["Modelog-Signature"], body)
    jsonschema.validate(json.loads(body), codec.json_schemas()["DriftDetected"])
    assert codec.decode(body) == critical
    everything = receiver.at(all_url)
    assert sorted(r["headers"]["Modelog-Event-Id"] for r in everything) == sorted(
        [critical.id, low.id, fraud.id])  # not the alert raised before, not the statistics
    assert all("Modelog-Signature" not in r["headers"] for r in everything)
    assert stats_run.delivered == 4 and stats_run.failed == 0 and stats_run.dead_lettered == 1

    reports = _reports(topics)
    assert sorted((r.subscription_id, r.alert_id) for r in reports) == sorted(
        [(churn_sid, critical.id), (all_sid, critical.id), (all_sid, low.id),
         (all_sid, fraud.id)])
    assert all(r.ok and r.status_code == 200 and r.attempts == 1 for r in reports)
    assert {r.id for r in reports} == {
        delivered_event(r.subscription_id, next(a for a in (critical, low, fraud)
                                                if a.id == r.alert_id), Outcome(True, 200, 1)).id
        for r in reports}
    dead = _read(topics, Topics.from_settings(topics).dead_letter)
    assert [v for _k, v in dead] == [b"{not an event"]

    # a second run re-delivers nothing: the ledger remembers
    again = deliver_once(topics, **FAST)
    assert again.delivered == 0 and len(receiver.at(churn_url)) == 1
    assert len(receiver.at(all_url)) == 3 and len(_reports(topics)) == 4


@pytest.mark.broker
def test_retries_until_accepted(topics: Settings, receiver: Receiver) -> None:
    url = receiver.url("flaky", lambda n: 500 if n <= 2 else 200)
    sid = subscribe(topics, url)
    alert = _drift()
    _produce(topics, [alert])

    deliver_once(topics, max_attempts=5, **FAST)

    assert [r["headers"]["Modelog-Event-Id"] for r in receiver.at(url)] == [alert.id] * 3
    [report] = _reports(topics)
    assert (report.subscription_id, report.alert_id, report.ok) == (sid, alert.id, True)
    assert (report.attempts, report.status_code) == (3, 200)
    with DeliveryLedger(topics.data_dir / "delivery.sqlite") as ledger:
        [record] = ledger.deliveries()
        assert (record.ok, record.attempts) == (True, 3)
        assert ledger.outbox() == []  # the broker acknowledged the report


@pytest.mark.broker
def test_gives_up_after_max_attempts(topics: Settings, receiver: Receiver) -> None:
    down = receiver.url("down", lambda _n: 503)
    gone = receiver.url("gone", lambda _n: 404)
    subscribe(topics, down)
    subscribe(topics, gone)
    alert = _drift()
    _produce(topics, [alert])

    run = deliver_once(topics, max_attempts=4, **FAST)

    assert len(receiver.at(down)) == 4  # retried
    assert len(receiver.at(gone)) == 1  # a 4xx is final
    assert run.failed == 2 and run.delivered == 0
    reports = {r.status_code: r for r in _reports(topics)}
    assert not reports[503].ok and reports[503].attempts == 4
    assert "gave up after 4 attempts" in (reports[503].error or "")
    assert not reports[404].ok and reports[404].attempts == 1 and "404" in (
        reports[404].error or "")
    # given up is final: a restart does not try again
    deliver_once(topics, max_attempts=4, **FAST)
    assert len(receiver.at(down)) == 4 and len(receiver.at(gone)) == 1


@pytest.mark.broker
def test_unsubscribe_stops_deliveries(topics: Settings, receiver: Receiver) -> None:
    url = receiver.url("leaving")
    sid = subscribe(topics, url, kinds=["DriftDetected"])
    assert [s.subscription_id for s in list_subscriptions(topics)] == [sid]
    before = _drift()
    _produce(topics, [before])
    deliver_once(topics, **FAST)
    assert [r["headers"]["Modelog-Event-Id"] for r in receiver.at(url)] == [before.id]

    unsubscribe(topics, sid)
    _produce(topics, [_drift(), _drift(severity="critical")])
    deliver_once(topics, **FAST)

    assert len(receiver.at(url)) == 1
    assert list_subscriptions(topics) == []
    with pytest.raises(UnknownSubscriptionError, match="modelog alerts subscriptions"):
        unsubscribe(topics, sid)


@pytest.mark.broker
def test_restart_inside_a_batch_delivers_the_rest(topics: Settings, receiver: Receiver) -> None:
    """Tansu reports the high watermark of a multi-record batch as its first offset + 1,
    so "read up to the high watermark" stops too early: a worker restarted inside the
    first of two batches used to stop after the first one (the root cause of the flaky
    crash/restart test below)."""
    url = receiver.url("batch")
    subscribe(topics, url)
    alerts = [_drift() for _ in range(30)]
    _produce(topics, alerts[:15], linger_ms=200)  # two producer batches of 15
    _produce(topics, alerts[15:], linger_ms=200)
    monitoring = Topics.from_settings(topics).monitoring
    with LogTail(topics, monitoring) as tail:
        records = tail.read_to_end()  # reading a topic to its end follows the same rule
        cluster_id = tail._consumer.list_topics(timeout=10).cluster_id
    assert len(records) == 30
    [partition] = {p for p, _, _, _ in records}
    with DeliveryLedger(topics.data_dir / "delivery.sqlite") as ledger:  # stopped at 5
        ledger.save_positions({(monitoring, partition): 5}, cluster_id)
    deliver_once(topics, batch_size=5, **FAST)
    got = [r["headers"]["Modelog-Event-Id"] for r in receiver.at(url)]
    assert got == [a.id for a in alerts[5:]]


@pytest.mark.broker
@pytest.mark.slow
def test_killed_worker_never_reposts_recorded_deliveries(
    topics: Settings, receiver: Receiver,
) -> None:
    url = receiver.url("crash")
    subscribe(topics, url)
    alerts = [_drift() for _ in range(40)]
    _produce(topics, alerts)
    receiver.delay = 0.03
    env = {**os.environ, "MODELOG_BROKER": topics.bootstrap_servers,
           "MODELOG_DATA_DIR": str(topics.data_dir), "MODELOG_TOPIC_PREFIX": topics.topic_prefix,
           "MODELOG_PARTITIONS": str(topics.partitions), "MODELOG_WEBHOOK_ALLOW_PRIVATE": "1",
           "MODELOG_SECRET_KEY": str(topics.secret_key)}
    proc = subprocess.Popen([sys.executable, "-m", "modelog.streams.delivery"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while len(receiver.at(url)) < 10:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the worker delivered nothing"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        receiver.delay = 0.0
    before_restart = len(receiver.at(url))
    with DeliveryLedger(topics.data_dir / "delivery.sqlite") as ledger:
        recorded = {d.alert_id for d in ledger.deliveries()}
    assert 0 < len(recorded) < len(alerts)

    deliver_once(topics, **FAST)

    got = receiver.at(url)
    after = [r["headers"]["Modelog-Event-Id"] for r in got[before_restart:]]
    assert not recorded & set(after), "a recorded delivery was POSTed again"
    ids = [r["headers"]["Modelog-Event-Id"] for r in got]
    assert set(ids) == {a.id for a in alerts}  # every alert at least once
    duplicates = len(ids) - len(set(ids))
    assert duplicates <= 1  # at most the one POST in flight when the worker died
    assert all(codec.decode(r["body"]).id == r["headers"]["Modelog-Event-Id"] for r in got)
    first_seen = list(dict.fromkeys(ids))
    assert first_seen == [a.id for a in alerts]  # one model, one partition: log order
    reports = _reports(topics)
    assert {r.alert_id for r in reports} == {a.id for a in alerts}
    assert all(r.ok for r in reports)


@pytest.mark.broker
def test_dead_letters_bad_subscription_records(topics: Settings) -> None:
    from confluent_kafka import Producer

    from modelog.streams.kafka import producer_config

    t = Topics.from_settings(topics)
    producer = Producer(producer_config(topics, linger_ms=0, bulk=True))
    producer.produce(t.subscriptions, key=b"x", value=b'{"type":"AlertSubscriptionCreated"}')
    assert producer.flush(15) == 0

    run = deliver_once(topics, **FAST)

    assert run.dead_lettered == 1
    [(key, value)] = _read(topics, t.dead_letter)
    assert (key, value) == (b"x", b'{"type":"AlertSubscriptionCreated"}')
    # the reason and origin travel in the headers
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**topics.kafka_config(), "group.id": "h", "enable.auto.commit": False})
    consumer.assign([TopicPartition(t.dead_letter, 0, 0)])
    try:
        msg = consumer.consume(1, 10)[0]
        headers = msg.headers()
        assert isinstance(headers, list)
        info = DeadLetter.from_headers([(k, v if isinstance(v, bytes) else None)
                                        for k, v in headers])
    finally:
        consumer.close()
    assert info.consumer == "delivery" and info.source_topic == t.subscriptions
    assert "AlertSubscriptionCreated" in info.reason
    # restarting does not dead-letter it again: the position is in the ledger
    assert deliver_once(topics, **FAST).dead_lettered == 0


@pytest.mark.broker
def test_sdk_and_cli_subscriptions_round_trip(topics: Settings, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    from typer.testing import CliRunner

    import modelog
    from modelog.cli import app
    from modelog.streams.subscriptions import list_subscriptions

    with modelog.connect(settings=topics) as client:
        sid = client.subscribe_alerts("http://127.0.0.1:9/hook", models=["churn"],
                                      min_severity="warning")
    assert [s.subscription_id for s in list_subscriptions(topics)] == [sid]
    monkeypatch.setenv("MODELOG_BROKER", topics.bootstrap_servers)
    monkeypatch.setenv("MODELOG_TOPIC_PREFIX", topics.topic_prefix)
    monkeypatch.setenv("MODELOG_DATA_DIR", str(topics.data_dir))
    runner = CliRunner()
    listed = runner.invoke(app, ["alerts", "subscriptions"])
    assert listed.exit_code == 0 and sid in listed.output and "churn" in listed.output
    removed = runner.invoke(app, ["alerts", "unsubscribe", sid])
    assert removed.exit_code == 0, removed.output
    assert list_subscriptions(topics) == []
    again = runner.invoke(app, ["alerts", "unsubscribe", sid])
    assert again.exit_code == 1 and sid in again.output
