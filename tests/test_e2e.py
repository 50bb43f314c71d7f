"""The whole live path, as a newcomer runs it: SDK -> Kafka -> worker -> alert -> DuckDB.

One worker and one projector (real processes, started by the `modelog` CLI) serve
every test in this module against the session's broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from modelog.config import Settings
from modelog.store.reader import Reader
from modelog.streams.demo import DemoConfig, run_demo
from modelog.streams.topics import ensure_topics

pytestmark = [pytest.mark.broker, pytest.mark.slow]

DRIFT_AT = 3_000
PREDICTIONS = 6_000


def _env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(MODELOG_BROKER=settings.bootstrap_servers, MODELOG_DATA_DIR=str(settings.data_dir),
               MODELOG_TOPIC_PREFIX=settings.topic_prefix,
               MODELOG_PARTITIONS=str(settings.partitions), PYTHONUNBUFFERED="1")
    return env


def _start(settings: Settings, *args: str) -> subprocess.Popen[bytes]:
    log = open(settings.data_dir / f"{args[0]}.log", "ab")  # noqa: SIM115
    return subprocess.Popen([sys.executable, "-m", "modelog", *args], env=_env(settings),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _wait_for(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as exc:  # the projector may not have created the file yet
            last = exc
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@pytest.fixture(scope="module")
def live(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    data = tmp_path_factory.mktemp("e2e")
    settings = Settings(broker=broker, data_dir=data, topic_prefix=f"e2e{os.getpid()}.",
                        partitions=2, producer_name="e2e")
    ensure_topics(settings)
    procs = {"worker": _start(settings, "worker", "--session-timeout", "6"),
             "projector": _start(settings, "project")}
    try:
        sent = run_demo(settings, DemoConfig(predictions=PREDICTIONS, drift_at=DRIFT_AT, rate=0,
                                             label_delay=20, seed=3), echo=lambda s: None,
                        progress=False)
        yield {"settings": settings, "procs": procs, "sent": sent}
    finally:
        for p in procs.values():
            _stop(p)


def _q(settings: Settings, sql: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = Reader(settings).query(sql).to_pylist()
    return rows


def test_demo_traffic_reaches_the_views(live: dict[str, Any]) -> None:
    s = live["settings"]
    want = live["sent"]["predictions"]
    _wait_for(lambda: _q(s, "select count(*) n from predictions")[0]["n"] == want, 90,
              f"{want} predictions in DuckDB")
    labels = _q(s, "select count(*) n from labels")[0]["n"]
    assert labels == live["sent"]["labels"]


def test_concept_drift_alert_after_the_seeded_drift_and_none_before(live: dict[str, Any]) -> None:
    s = live["settings"]
    alerts = _wait_for(
        lambda: _q(s, "select * from alerts where type = 'DriftDetected' and kind = 'concept' "
                      "order by time"), 150, "a concept drift alert")
    first = alerts[0]
    # Where in the stream did it fire? Count predictions made up to the alert's evidence.
    evidence = f"select unnest(prediction_ids) from alerts where event_id = '{first['event_id']}'"
    idx = _q(s, "select count(*) n from predictions where time <= (select max(time) "
                f"from predictions where prediction_id in ({evidence}))")[0]["n"]
    assert DRIFT_AT < idx < DRIFT_AT + 1_500, f"alert at prediction {idx}"
    assert first["detector"] and first["prediction_ids"] and first["message"]
    assert first["statistic"] is not None


def test_query_answers_while_the_projector_runs(live: dict[str, Any]) -> None:
    s = live["settings"]
    assert live["procs"]["projector"].poll() is None
    out = subprocess.run([sys.executable, "-m", "modelog", "query", "--format", "json",
                          "select count(*) as n from alerts"], env=_env(s), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert '"n":' in out.stdout


def test_malformed_event_is_dead_lettered_and_processing_goes_on(live: dict[str, Any]) -> None:
    from confluent_kafka import Producer

    s = live["settings"]
    p = Producer(s.kafka_config())
    p.produce(f"{s.topic_prefix}serving", b'{"type": "PredictionMade", "oops": true}',
              key=b"demo-churn")
    p.flush(10)
    _wait_for(lambda: _q(s, "select dead_letters n from dead_letter_count")[0]["n"] >= 1, 60,
              "a dead letter")
    reasons = _q(s, "select reason from dead_letters")
    assert any("PredictionMade" in r["reason"] for r in reasons)
    # Still alive: a new valid prediction is projected after the bad record.
    import modelog

    with modelog.connect(settings=s) as client:
        pid = client.log_prediction("demo-churn", 1, {"usage": 0.1}, 0)
    _wait_for(lambda: _q(s, f"select 1 from predictions where prediction_id = '{pid}'"), 60,
              "the prediction after the bad record")


def test_killing_and_restarting_the_projector_leaves_views_identical(
    live: dict[str, Any],
) -> None:
    s = live["settings"]
    tables = ["events", "predictions", "labels", "alerts", "monitor_stats", "dead_letters"]

    def snapshot() -> dict[str, Any]:
        out = {}
        for t in tables:
            body = f"select * exclude (projected_at) from {t}" if t == "events" else \
                f"select * from {t}"
            out[t] = _q(s, f"select count(*) n, bit_xor(hash(x)) h from ({body}) x")[0]
        return out

    def settled() -> dict[str, Any] | None:
        a = snapshot()
        time.sleep(3)
        b = snapshot()
        return a if a == b else None

    before = _wait_for(settled, 120, "the projection to settle")
    _stop(live["procs"]["projector"], signal.SIGKILL)
    live["procs"]["projector"] = _start(s, "project")
    after = _wait_for(settled, 120, "the restarted projector to settle")
    assert after == before
