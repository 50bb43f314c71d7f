"""Traffic policies through the registry's single writer: decisions, verification, the SDK.

Pure decisions and the verified fold without a broker; then the command
through a real registry worker (:class:`RegistryService`) on the session broker.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import duckdb
import msgspec
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.dummy import DummyRegressor

import modelog
from modelog.config import Settings
from modelog.models import codec
from modelog.models.errors import EventValidationError
from modelog.models.events import AliasChangeRequested, ModelVersionRequested
from modelog.models.policy_events import (
    TrafficPolicyRejected,
    TrafficPolicyRequested,
    TrafficPolicySet,
)
from modelog.models.registry import DEFAULT_TRAFFIC, RegistryDecider, RegistryState
from modelog.models.registry_fold import answered, verified_state, verify_log
from modelog.models.traffic import choose_arm, decide_traffic, parse_arms
from modelog.store.registry import read_registry_log, registry_state
from modelog.streams.errors import TrafficPolicyRejectedError
from modelog.streams.registry_agent import RegistryService
from modelog.streams.sdk import Client
from modelog.streams.topics import ensure_topics

T0 = dt.datetime(2026, 3, 3, 14, tzinfo=dt.UTC)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def register(cid: str, minute: float) -> tuple[ModelVersionRequested, dt.datetime]:
    return (ModelVersionRequested(id=cid, time=at(minute), aggregate="churn", command_id=cid,
                                  model="churn", flavor="sklearn"), at(minute + 0.1))


def alias(cid: str, name: str, version: int, minute: float
          ) -> tuple[AliasChangeRequested, dt.datetime]:
    return (AliasChangeRequested(id=cid, time=at(minute), aggregate="churn", command_id=cid,
                                 model="churn", alias=name, model_version=version,
                                 reason="test"), at(minute + 0.1))


def traffic(cid: str, minute: float, arms: dict[str, float], shadows: tuple[str, ...] = ()
            ) -> tuple[TrafficPolicyRequested, dt.datetime]:
    return (TrafficPolicyRequested(id=cid, time=at(minute), aggregate="churn", command_id=cid,
                                   model="churn", arms=arms, shadows=list(shadows),
                                   actor="ana", reason="ramp"), at(minute + 0.1))


BASE = [register("r1", 0), register("r2", 1), alias("a1", "production", 1, 2),
        alias("a2", "candidate", 2, 3), alias("a3", "shadow", 2, 4)]


# -- pure ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("arms", "shadows", "reason"), [
    ({"production": 0.9, "ghost": 0.1}, (), "alias ghost of churn is not set (aliases: "
                                            "candidate, production, shadow); set it first"),
    ({"production": 0.0, "candidate": 0.0}, (), "the arm weights sum to 0; they must sum to a "
                                                 "positive total"),
    ({"production": -1.0, "candidate": 2.0}, (), "the weight of arm production is -1.0"),
    ({"production": float("nan")}, (), "weights must be finite numbers >= 0"),
    ({}, (), "needs at least one arm"),
    ({"production": 1.0}, ("production",), "alias production is both an arm and a shadow"),
    ({"production": 1.0}, ("shadow", "shadow"), "a shadow alias is listed twice"),
    ({"production": 1.0}, ("nobody",), "alias nobody of churn is not set"),
])
def test_bad_policies_are_rejected_with_what_to_do(arms: dict[str, float],
                                                   shadows: tuple[str, ...],
                                                   reason: str) -> None:
    state = verified_state(answered(BASE))
    command, now = traffic("t1", 10, arms, shadows)
    answer = decide_traffic(state, command, now=now)
    assert isinstance(answer, TrafficPolicyRejected)
    assert reason in answer.reason
    assert state.traffic("churn") == DEFAULT_TRAFFIC


def test_unknown_model_is_rejected_and_a_good_policy_is_folded() -> None:
    command, now = traffic("t0", 0, {"production": 1.0})
    answer = decide_traffic(RegistryState(), command, now=now)
    assert isinstance(answer, TrafficPolicyRejected)
    assert answer.reason.startswith("model churn is not registered")
    log = answered([*BASE, traffic("t1", 10, {"production": 0.9, "candidate": 0.1},
                                   ("shadow",))])
    state = verified_state(log)
    policy = state.traffic("churn")
    assert policy.weights == {"production": 0.9, "candidate": 0.1}
    assert policy.shadows == ("shadow",)
    assert (policy.actor, policy.reason, policy.command_id) == ("ana", "ramp", "t1")
    assert str(policy) == "production=0.9 candidate=0.1 shadows=shadow"
    # as of before the command: the default
    assert verified_state(log, at(9)).traffic("churn") == DEFAULT_TRAFFIC


def test_decider_answers_once_and_redelivery_yields_nothing() -> None:
    decider = RegistryDecider(clock=lambda: at(20))
    for event in answered(BASE):
        decider.process(event)
    command, _ = traffic("t1", 10, {"production": 1.0})
    [answer] = decider.process(command)
    assert isinstance(answer, TrafficPolicySet)
    assert decider.process(answer) == [] and decider.process(command) == []
    assert decide_traffic(decider.state, command, now=at(30)) == answer


def test_the_verified_fold_refuses_forged_and_altered_traffic_answers() -> None:
    log = answered([*BASE, traffic("t1", 10, {"production": 1.0})])
    real = log[-1]
    assert isinstance(real, TrafficPolicySet)
    forged = TrafficPolicySet(id="x", time=at(11), aggregate="churn", model="churn",
                              arms={"candidate": 1.0}, command_id="nope")
    altered = msgspec.structs.replace(real, id="y", arms={"candidate": 1.0})
    accepted, refused = verify_log([*log, forged, altered])
    assert real in accepted and forged not in accepted and altered not in accepted
    reasons = " | ".join(u.reason for u in refused)
    assert "not on the registry-commands topic" in reasons
    assert "arms is {'candidate': 1.0}, the registry decides {'production': 1.0}" in reasons \
        or "answered already" in reasons
    assert verified_state([*log, forged]).traffic("churn").weights == {"production": 1.0}


def test_routing_is_stable_weighted_and_skips_zero_weights() -> None:
    arms = (("production", 0.8), ("candidate", 0.2), ("off", 0.0))
    picks = [choose_arm(arms, "churn", f"user-{i}") for i in range(5000)]
    assert "off" not in picks
    assert abs(picks.count("candidate") / 5000 - 0.2) < 0.025
    assert picks == [choose_arm(arms, "churn", f"user-{i}") for i in range(5000)]
    assert choose_arm(arms, "churn", None, 0.99) == "candidate"


def test_parse_arms_names_the_bad_word() -> None:
    assert parse_arms(["production=0.9", "candidate=.1"]) == {"production": 0.9,
                                                               "candidate": 0.1}
    with pytest.raises(EventValidationError, match=r"'arms\.candidate' = 'lots'"):
        parse_arms(["candidate=lots"])
    with pytest.raises(EventValidationError, match="each alias may appear once"):
        parse_arms(["a=1", "a=2"])
    for bad in ("-1", "nan", "inf", "1e7"):  # refused before anything is sent
        with pytest.raises(EventValidationError, match=rf"'arms\.b' = '{bad}'.*from 0 to"):
            parse_arms(["a=1", f"b={bad}"])


class _Ledger:
    """The DuckDB ledger's ``events`` table as a query source (what a Reader gives)."""

    def __init__(self, events: list[Any]) -> None:
        from modelog.store.schema import create_schema

        self.con = duckdb.connect()
        create_schema(self.con)
        for e in events:
            self.con.execute(
                "INSERT INTO events (id, type, schema_version, time, aggregate, producer, "
                "topic, partition, \"offset\", payload) VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, ?)",
                [e.id, e.type_name(), e.schema_version, e.time, e.aggregate, e.producer,
                 e.stream, codec.encode(e).decode()])

    def query(self, sql: str, params: Any = None) -> pa.Table:
        return self.con.sql(sql, params=params or None).to_arrow_table()


def test_the_ledger_reader_shows_the_policy_as_of_any_time() -> None:
    log = answered([*BASE, traffic("t1", 10, {"production": 0.5, "candidate": 0.5}),
                    traffic("t2", 20, {"production": 1.0}, ("candidate",))])
    forged = TrafficPolicySet(id="x", time=at(25), aggregate="churn", model="churn",
                              arms={"shadow": 1.0}, command_id="nope")
    ledger = _Ledger([*log, forged])
    _, refused = read_registry_log(ledger, "churn")
    assert [u.event.id for u in refused] == ["x"]
    assert registry_state(ledger, "churn").traffic.shadows == ("candidate",)
    then = registry_state(ledger, "churn", as_of=at(15)).traffic
    assert then.weights == {"production": 0.5, "candidate": 0.5}


# -- through the registry worker ------------------------------------------------------------
@pytest.fixture(scope="module")
def client(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    s = Settings(broker=broker, data_dir=tmp_path_factory.mktemp("traffic") / "data",
                 topic_prefix=f"tr{uuid.uuid4().hex[:10]}.", partitions=2,
                 producer_name="pytest")
    ensure_topics(s)
    with RegistryService(s), modelog.connect(settings=s) as c:
        yield c


@pytest.mark.broker
def test_set_traffic_is_accepted_or_rejected_with_the_reason(client: Client) -> None:
    x = pd.DataFrame({"x": [0.0, 1.0]})
    name = f"m{uuid.uuid4().hex[:8]}"
    for a in ("production", "candidate"):
        v = client.register_model(name, DummyRegressor().fit(x, [0, 1]), dataset=x)
        client.set_alias(name, a, v, reason="test")
    answer = client.set_traffic(name, {"production": 0.9, "candidate": 0.1}, reason="ramp")
    assert answer.arms == {"production": 0.9, "candidate": 0.1}
    with pytest.raises(TrafficPolicyRejectedError, match=r"alias ghost of .* is not set") as err:
        client.set_traffic(name, {"production": 0.5, "ghost": 0.5})
    assert "modelog registry alias set" in err.value.reason
    with pytest.raises(TrafficPolicyRejectedError, match="sum to a positive total"):
        client.set_traffic(name, {"production": 0.0})
    with pytest.raises(TrafficPolicyRejectedError, match="both an arm and a shadow"):
        client.set_traffic(name, {"production": 1.0}, shadows=["production"])
    with pytest.raises(EventValidationError, match="arms"):
        client.set_traffic(name, {"production": -1.0})  # refused before it is sent
    assert client.traffic(name).weights == {"production": 0.9, "candidate": 0.1}
