"""Per-model retrain policies (no broker): the parser, the trigger's overrides, typed CLI input,
gate keys in the runner's plan, transient-failure retries and paged training windows.

The retries and the paging run against real query servers (a
:class:`~modelog.store.query_server.QueryServer` over a DuckDB file, with its row
cap lowered; a plain HTTP server that answers 503) read through the real
:class:`~modelog.store.reader.Reader`.
"""

from __future__ import annotations

import datetime as dt
import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import pytest

from modelog.config import Settings
from modelog.models.errors import RetrainJobError, RetrainPolicyError
from modelog.models.events import (
    DriftDetected,
    DriftResolved,
    MonitorStatsReported,
    RetrainRequested,
    Window,
)
from modelog.models.policy_events import RetrainPolicySet
from modelog.models.retrain import POLICY_KEYS, RetrainPolicy, RetrainTrigger, parse_retrain_policy
from modelog.models.retrain_input import parse_assignments, parse_duration, policy_input
from modelog.models.retrain_job import JobPolicy, backoff_delays, plan_job
from modelog.store.errors import NoDataError, QueryError
from modelog.store.query_server import QueryServer
from modelog.store.reader import Reader
from modelog.store.schema import create_schema
from modelog.store.training_data import assemble, duckdb_query
from modelog.streams.retrain_run import is_transient, retrying

T0 = dt.datetime(2026, 6, 1, 9, tzinfo=dt.UTC)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def policy_set(minutes: float, policy: dict[str, Any], model: str = "churn") -> RetrainPolicySet:
    return RetrainPolicySet(id=f"pol-{minutes}-{model}", time=at(minutes), aggregate=model,
                            model=model, policy=policy, actor="alice")


def concept(i: int, minutes: float, model: str = "churn") -> DriftDetected:
    return DriftDetected(id=f"c{i}-{model}", time=at(minutes), aggregate=model, model=model,
                         model_version=2, kind="concept", detector="adwin", statistic=0.4,
                         window=Window(start=at(minutes - 5), end=at(minutes), size=100))


def data_drift(i: int, minutes: float) -> DriftDetected:
    return DriftDetected(id=f"d{i}", time=at(minutes), aggregate="churn", model="churn",
                         model_version=2, kind="data", feature="age", detector="psi",
                         statistic=0.3)


def stats(minutes: float) -> MonitorStatsReported:
    return MonitorStatsReported(id=f"s{minutes}", time=at(minutes), aggregate="churn",
                                model="churn", model_version=2, stats={"rolling_error": 0.1},
                                window=Window(start=at(minutes - 5), end=at(minutes), size=50))


def requests(trigger: RetrainTrigger, events: list[Any]) -> list[RetrainRequested]:
    out = trigger.process_many(events)
    assert all(isinstance(r, RetrainRequested) for r in out)
    return out  # type: ignore[return-value]


# -- the parser ----------------------------------------------------------------------------
@pytest.mark.parametrize(("data", "field", "rule"), [
    ({"cooldown": 60}, "cooldown", "unknown key; the valid keys are on_concept_drift, "),
    ({"cooldown_s": -5}, "cooldown_s", "must be >= 0"),
    ({"cooldown_s": None}, "cooldown_s", "must be a duration in seconds, not none"),
    ({"schedule_s": 0}, "schedule_s", "must be > 0"),
    ({"schedule_s": "weekly"}, "schedule_s", "must be a duration in seconds or none"),
    ({"data_drift_checks": 0}, "data_drift_checks", "must be >= 1"),
    ({"data_drift_checks": 2.5}, "data_drift_checks", "must be a whole number"),
    ({"data_drift_checks": 3, "data_drift_s": 60}, "data_drift_s", "not both"),
    ({"metric_sustained": True}, "metric_sustained", "must be a whole number"),
    ({"on_concept_drift": "yes"}, "on_concept_drift", "must be a boolean"),
    ({"metric_floor": float("nan")}, "metric_floor", "must be a number"),
    ({"metric_name": ""}, "metric_name", "must be a non-empty name"),
    ({"gate_metric": "auc"}, "gate_metric", "must be one of accuracy, f1, mae"),
    ({"gate_margin": -0.1}, "gate_margin", "must be >= 0"),
    ({"gate_min_rows": 0}, "gate_min_rows", "must be >= 1"),
    ({"min_labelled_rows": 1e12}, "min_labelled_rows", "must be at most 1,000,000,000"),
    ({"window_margin_s": 1e300}, "window_margin_s", "must be at most 100 years"),
])
def test_parser_names_model_field_value_and_rule(data: dict[str, Any], field: str,
                                                 rule: str) -> None:
    with pytest.raises(RetrainPolicyError) as info:
        parse_retrain_policy("churn", data)
    err = info.value
    assert (err.model, err.field) == ("churn", field)
    assert err.value == data[field] or err.value != err.value  # nan
    assert rule in err.rule
    assert f"retrain policy of 'churn': {field} = " in str(err)
    assert "modelog policy retrain set" in str(err)  # what to do


def test_unknown_key_error_lists_every_valid_key() -> None:
    with pytest.raises(RetrainPolicyError) as info:
        parse_retrain_policy("churn", {"coolddown_s": 60})
    assert all(key in info.value.rule for key in POLICY_KEYS)
    assert set(POLICY_KEYS) == set(RetrainPolicy().as_params())


def test_parser_keeps_defaults_for_keys_left_out_and_reads_json_numbers() -> None:
    defaults = RetrainPolicy(cooldown=dt.timedelta(minutes=5), metric_floor=0.4)
    p = parse_retrain_policy("churn", {"data_drift_s": 600, "gate_min_rows": 30.0,
                                       "schedule_s": 86_400, "gate_metric": "mae"}, defaults)
    assert p.cooldown == dt.timedelta(minutes=5) and p.metric_floor == 0.4  # kept
    assert p.data_drift_sustained == dt.timedelta(minutes=10)
    assert p.gate_min_rows == 30 and isinstance(p.gate_min_rows, int)
    assert p.schedule == dt.timedelta(days=1) and p.gate_metric == "mae"
    assert parse_retrain_policy("churn", {}, defaults) == defaults
    # one key of the data-drift rule replaces the other
    counted = RetrainPolicy(data_drift_sustained=dt.timedelta(hours=1))
    assert parse_retrain_policy("m", {"data_drift_checks": 4}, counted).data_drift_sustained == 4
    assert parse_retrain_policy("m", {"data_drift_checks": None},
                                counted).data_drift_sustained is None
    # what a policy carries round-trips through the parser
    assert parse_retrain_policy("m", p.as_params()) == p


def test_typed_input_for_the_cli_and_the_sdk() -> None:
    assert [parse_duration(t) for t in ("90", "45s", "30m", "2h", "7d", "1w", "1.5h")] == \
        [90.0, 45.0, 1800.0, 7200.0, 604800.0, 604800.0, 5400.0]
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")
    got = parse_assignments(["cooldown=30m", "schedule=none", "window_margin_s=90",
                             "on_concept_drift=false", "higher_is_better=true",
                             "metric_sustained=4", "metric_floor=0.25", "gate_metric=f1",
                             "data_drift_sustained=2h", "metric_name=rolling_error"])
    assert got == {"cooldown_s": 1800.0, "schedule_s": None, "window_margin_s": 90.0,
                   "on_concept_drift": False, "higher_is_better": True, "metric_sustained": 4,
                   "metric_floor": 0.25, "gate_metric": "f1", "data_drift_s": 7200.0,
                   "metric_name": "rolling_error"}
    parse_retrain_policy("churn", got)  # valid as a whole
    assert parse_assignments(["data_drift_sustained=3"]) == {"data_drift_checks": 3}
    assert parse_assignments(["data_drift_sustained=none"]) == {
        "data_drift_checks": None, "data_drift_s": None}
    with pytest.raises(RetrainPolicyError, match="write key=value"):
        parse_assignments(["cooldown"], "churn")
    # a bad duration reaches the parser as text, which names the key
    with pytest.raises(RetrainPolicyError, match="cooldown_s = 'soon'"):
        parse_retrain_policy("churn", parse_assignments(["cooldown=soon"]))
    assert policy_input("churn", {"cooldown": dt.timedelta(hours=2), "data_drift_sustained": 5,
                                  "gate_margin": 0.1}) == {
        "cooldown_s": 7200.0, "data_drift_checks": 5, "gate_margin": 0.1}


# -- the trigger honours RetrainPolicySet ------------------------------------------------------
def test_a_policy_event_overrides_the_cooldown_of_its_model_only_and_reset_restores() -> None:
    trigger = RetrainTrigger(RetrainPolicy(cooldown=dt.timedelta(hours=1)))
    events = [policy_set(0, {"cooldown_s": 600, "gate_metric": "f1", "gate_margin": 0.02}),
              concept(1, 1), concept(2, 20), concept(1, 1, model="fraud"),
              concept(2, 20, model="fraud")]
    got = requests(trigger, events)
    assert [(r.model, r.trigger_id) for r in got] == [
        ("churn", "c1-churn"), ("churn", "c2-churn"), ("fraud", "c1-fraud")]
    assert got[0].policy["cooldown_s"] == 600.0 and got[2].policy["cooldown_s"] == 3600.0
    # the request carries the policy in force, gate keys included, for the runner
    assert got[0].policy["gate_metric"] == "f1" and got[0].policy["gate_margin"] == 0.02
    assert got[2].policy["gate_metric"] is None
    assert trigger.policy_for("churn").cooldown == dt.timedelta(minutes=10)
    # {} resets churn to the defaults: a drift 30 minutes later is inside the hour
    assert requests(trigger, [policy_set(21, {}), concept(3, 50)]) == []
    assert trigger.policy_for("churn") == trigger.policy
    assert trigger.counters("churn") == {"requests": 2, "suppressed": 1}


def test_a_policy_event_switches_rules_schedule_and_sustained_data_drift() -> None:
    trigger = RetrainTrigger()
    assert requests(trigger, [data_drift(i, i) for i in range(5)]) == []  # no data rule
    policy = {"on_concept_drift": False, "data_drift_checks": 3, "schedule_s": 7200,
              "cooldown_s": 0}
    got = requests(trigger, [policy_set(10, policy), concept(9, 11), data_drift(5, 12)])
    assert [(r.policy["trigger"], r.trigger_id) for r in got] == [("data_drift", "d5")]
    assert "sustained in 6 consecutive checks" in got[0].reason
    trigger.process(DriftResolved(id="res", time=at(13), aggregate="churn", model="churn",
                                  model_version=2, kind="data", feature="age", detector="psi",
                                  detected_id="d5"))
    # the schedule fires two hours after the last request
    quiet = [concept(10 + i, 13 + i * 30) for i in range(4)]
    assert requests(trigger, quiet) == []
    [scheduled] = requests(trigger, [stats(12 + 120)])
    assert scheduled.policy["trigger"] == "schedule" and scheduled.policy["schedule_s"] == 7200


def test_an_invalid_policy_event_raises_and_the_previous_policy_stays() -> None:
    trigger = RetrainTrigger()
    trigger.process(policy_set(0, {"cooldown_s": 60}))
    with pytest.raises(RetrainPolicyError, match="cooldown_s = -1"):
        trigger.process(policy_set(1, {"cooldown_s": -1}))
    with pytest.raises(RetrainPolicyError, match="unknown key"):
        trigger.configure(policy_set(2, {"bogus": 1}))
    assert trigger.policy_for("churn").cooldown == dt.timedelta(minutes=1)


def test_snapshot_carries_the_policies_and_restore_continues_identically() -> None:
    events: list[Any] = []
    for i in range(40):
        if i % 10 == 3:
            events.append(policy_set(i * 15.0, {"cooldown_s": 60 * (i % 4 + 1),
                                                "data_drift_checks": 2} if i % 20 else {}))
        events += [concept(i, i * 15.0 + 1), data_drift(i, i * 15.0 + 2)]
    whole = RetrainTrigger(RetrainPolicy(cooldown=dt.timedelta(minutes=45)))
    expected = whole.process_many(events)
    assert len(expected) > 10
    for cut in (5, len(events) // 2, len(events) - 2):
        first = RetrainTrigger(RetrainPolicy(cooldown=dt.timedelta(minutes=45)))
        head = first.process_many(events[:cut])
        resumed = RetrainTrigger(RetrainPolicy(cooldown=dt.timedelta(minutes=45)))
        resumed.restore(first.snapshot())
        assert resumed.policy_for("churn") == first.policy_for("churn")
        assert head + resumed.process_many(events[cut:]) == expected


# -- the runner's plan ---------------------------------------------------------------------------
def test_gate_keys_of_the_request_override_the_runner_defaults() -> None:
    trigger = RetrainTrigger()
    [request] = requests(trigger, [policy_set(0, {"gate_metric": "f1", "gate_margin": 0.05,
                                                  "gate_min_rows": 25,
                                                  "min_labelled_rows": 80}), concept(1, 1)])
    runner = JobPolicy(min_labelled_rows=500, min_holdout_rows=100, metric="accuracy", margin=0)
    plan = plan_job(request, runner)
    assert (plan.policy.metric, plan.policy.margin, plan.policy.min_holdout_rows,
            plan.policy.min_labelled_rows) == ("f1", 0.05, 25, 80)
    # a policy without gate keys leaves the runner's options
    [plain] = requests(RetrainTrigger(), [concept(1, 1)])
    assert plan_job(plain, runner).policy == runner
    with pytest.raises(RetrainJobError, match="metric 'auc' is not one of"):
        plan_job(msgspec.structs.replace(plain, policy={"gate_metric": "auc"}), runner)


# -- transient failures are retried, with bounded backoff ---------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _labelled_db(path: Path, n: int) -> None:
    con = duckdb.connect(str(path))
    create_schema(con)
    con.execute(f"""
        INSERT INTO predictions SELECT 'e' || i, 'p' || lpad(i::VARCHAR, 4, '0'), 'churn', 1,
            NULL, TIMESTAMPTZ '2026-01-01 00:00:00+00' + to_seconds(i // 3),
            json_object('age', i, 'plan', 'pro'), '1', 'app', NULL FROM range({n}) t(i);
        INSERT INTO labels SELECT 'l' || i, 'p' || lpad(i::VARCHAR, 4, '0'), 'churn',
            TIMESTAMPTZ '2026-01-01 01:00:00+00', CAST(i % 2 AS JSON) FROM range({n}) t(i)""")
    con.close()


def test_the_query_server_started_late_is_retried_until_it_answers(tmp_path: Path) -> None:
    port = _free_port()
    settings = Settings(data_dir=tmp_path, query_url=f"http://127.0.0.1:{port}")
    reader = Reader(settings, timeout=5)
    with pytest.raises(NoDataError):  # nothing answers and nothing was projected
        reader.query("SELECT count(*) AS n FROM predictions")
    _labelled_db(tmp_path / "late.duckdb", 12)
    started = threading.Event()
    servers: list[QueryServer] = []

    def start_late() -> None:
        con = duckdb.connect(str(tmp_path / "late.duckdb"), read_only=True)
        servers.append(QueryServer(con, f"127.0.0.1:{port}").start())
        started.set()

    timer = threading.Timer(1.0, start_late)
    timer.start()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        started.wait(seconds)

    try:
        query = retrying(reader.query, backoff_delays(6, base=0.25, cap=2.0), "a test query",
                         sleep=sleep)
        assert query("SELECT count(*) AS n FROM predictions", None).to_pylist() == [{"n": 12}]
        assert waits and waits[:2] == [0.25, 0.5]  # backed off, then got the answer
    finally:
        timer.cancel()
        timer.join()
        for server in servers:
            server.stop()


class _Unavailable(http.server.BaseHTTPRequestHandler):
    hits = 0

    def do_POST(self) -> None:
        type(self).hits += 1
        self.send_response(503)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"upstream unavailable")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def unavailable() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Unavailable.hits = 0
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_5xx_is_retried_a_bounded_number_of_times_then_raised(tmp_path: Path,
                                                              unavailable: str) -> None:
    reader = Reader(Settings(data_dir=tmp_path, query_url=unavailable), timeout=5)
    waits: list[float] = []
    query = retrying(reader.query, backoff_delays(3, base=0.1, cap=0.2), "q", sleep=waits.append)
    with pytest.raises(QueryError, match="HTTP 503") as info:
        query("SELECT 1", None)
    assert is_transient(info.value)
    assert _Unavailable.hits == 4 and waits == [0.1, 0.2, 0.2]


def test_bad_sql_and_trainer_failures_are_not_retried(tmp_path: Path) -> None:
    _labelled_db(tmp_path / "db.duckdb", 3)
    con = duckdb.connect(str(tmp_path / "db.duckdb"), read_only=True)
    with QueryServer(con) as server:
        reader = Reader(Settings(data_dir=tmp_path, query_url=server.url), timeout=5)
        waits: list[float] = []
        query = retrying(reader.query, [0.1] * 3, "q", sleep=waits.append)
        with pytest.raises(QueryError, match=r"no_such_table|does not exist"):
            query("SELECT * FROM no_such_table", None)
        assert waits == []
    assert not is_transient(RetrainJobError("the trainer churn:fit failed: ValueError"))


# -- windows over the query server's row cap are read completely -----------------------------
def test_a_window_over_the_row_cap_is_assembled_in_pages(tmp_path: Path) -> None:
    _labelled_db(tmp_path / "db.duckdb", 50)  # three predictions per second: ties on time
    con = duckdb.connect(str(tmp_path / "db.duckdb"), read_only=True)
    expected = assemble(duckdb_query(con), "churn", holdout_share=0.2).table
    with QueryServer(con, max_rows=7) as server:  # the cap, lowered
        reader = Reader(Settings(data_dir=tmp_path, query_url=server.url), timeout=10)
        with pytest.raises(QueryError, match="more than 7 rows"):
            reader.query("SELECT * FROM predictions")
        capped = assemble(reader.query, "churn", holdout_share=0.2)
        paged = assemble(reader.query, "churn", holdout_share=0.2, page_rows=4)
        windowed = assemble(reader.query, "churn", start=dt.datetime(2026, 1, 1, 0, 0, 3,
                                                                     tzinfo=dt.UTC))
    assert capped.table.num_rows == paged.table.num_rows == 50
    assert capped.table.column("prediction_id").to_pylist() == \
        expected.column("prediction_id").to_pylist()
    assert capped.table.equals(expected) and paged.table.equals(expected)
    assert windowed.table.num_rows == 50 - 9
    assert capped.holdout.num_rows == 10


# -- the worker's router: RetrainPolicySet from the monitoring topic --------------------------
def test_the_router_applies_policies_dead_letters_invalid_ones_and_snapshots_them() -> None:
    import sys

    from modelog.models import codec
    from modelog.models.deadletter import DeadLetter
    from modelog.models.monitor import ServingMonitor
    from modelog.streams.topics import Topics
    from modelog.streams.worker import RecordRouter

    sys.path.insert(0, str(Path(__file__).parent))
    from test_partition_state import stream

    topics = Topics("rp.")

    def router() -> RecordRouter:
        return RecordRouter(topics, ServingMonitor(), retrain=RetrainTrigger())

    def monitoring(r: RecordRouter, event: RetrainPolicySet, offset: int) -> list[Any]:
        return r.route(b"m1", codec.encode(event), topics.monitoring, 0, offset)

    def serve(r: RecordRouter, events: list[Any], first: int) -> list[bytes]:
        return [o.value for k, ev in enumerate(events)
                for o in r.route(ev.aggregate.encode(), codec.encode(ev), topics.serving, 0,
                                 first + k)]

    good = policy_set(0, {"cooldown_s": 5, "gate_metric": "f1", "gate_margin": 0.03},
                      model="m1")
    bad = policy_set(1, {"cooldown_s": "often"}, model="m1")
    events = stream(2_000)
    whole = router()
    assert monitoring(whole, good, 0) == []
    [dead] = monitoring(whole, bad, 1)
    assert dead.topic == topics.dead_letter and dead.value == codec.encode(bad)
    reason = DeadLetter.from_headers(dead.headers).reason
    assert "retrain policy of 'm1': cooldown_s = 'often' is invalid" in reason
    assert whole.configs_rejected == 1 and whole.configs_applied == 1
    assert whole.retrain.policy_for("m1").cooldown == dt.timedelta(seconds=5)  # kept
    expected = serve(whole, events, 2)
    asked = [e for e in map(codec.decode, expected) if isinstance(e, RetrainRequested)]
    assert {r.model for r in asked} >= {"m1", "m2"}
    for r in asked:  # m1 under its policy, m2 under the defaults
        assert r.policy["gate_metric"] == ("f1" if r.model == "m1" else None)
        assert r.policy["cooldown_s"] == (5.0 if r.model == "m1" else 3600.0)

    cut = len(events) // 3
    first = router()
    monitoring(first, good, 0)
    head = serve(first, events[:cut], 2)
    resumed = router()
    resumed.restore(first.snapshot())
    assert resumed.retrain.policy_for("m1") == whole.retrain.policy_for("m1")
    assert head + serve(resumed, events[cut:], 2 + cut) == expected
