"""Comparison, gated promotion and automatic rollback end to end, with the real broker.

A worker process (monitoring data plane + registry agents) runs against the
session's broker; the test registers two versions, logs served predictions
of production with shadow predictions of the candidate, and labels: the
worker reports the comparison, decides the promotion and the registry moves
``production``. Then the new production serves worse than its predecessor
did, and the worker rolls it back -- each decision once.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import modelog
from modelog.cli import app
from modelog.config import Settings
from modelog.models import codec
from modelog.models.events import AliasChangeRequested, Event, PredictionMade
from modelog.models.policy_events import ComparisonReported, RolloutDecided
from modelog.streams.errors import RegistryTimeoutError
from modelog.streams.projector import Projector
from modelog.streams.registry_agent import LogTail, decode_records
from modelog.streams.sdk import Client
from modelog.streams.topics import Topics, ensure_topics

pytestmark = [pytest.mark.broker, pytest.mark.slow]

WORKER = textwrap.dedent("""
    import sys
    from pathlib import Path
    import faust
    from modelog.config import Settings
    from modelog.streams.registry_agent import register_agents
    from modelog.streams.worker import build_app

    broker, prefix, data_dir = sys.argv[1:4]
    settings = Settings(broker=broker, topic_prefix=prefix, data_dir=Path(data_dir),
                        partitions=2, producer_name="rollout-worker")
    app = build_app(settings, session_timeout=6, batch_within=0.05)
    register_agents(app, settings)
    faust.Worker(app, loglevel="warning", quiet=True).execute_from_commandline()
""")

M = "churn-rollout"


@pytest.fixture(scope="module")
def rollout_settings(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(broker=broker, data_dir=tmp_path_factory.mktemp("rollout") / "data",
                        topic_prefix=f"ro{uuid.uuid4().hex[:10]}.", partitions=2,
                        producer_name="pytest")
    settings.data_dir.mkdir(parents=True)
    ensure_topics(settings)
    return settings


@pytest.fixture(scope="module")
def client(rollout_settings: Settings) -> Iterator[Client]:
    log = rollout_settings.data_dir.parent / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, rollout_settings.bootstrap_servers,
             rollout_settings.topic_prefix, str(rollout_settings.data_dir)],
            stdout=out, stderr=subprocess.STDOUT, cwd=rollout_settings.data_dir.parent)
    try:
        with modelog.connect(settings=rollout_settings) as c:
            try:  # the first answer proves the worker is up
                c.register_model(M, artifact_uri="s3://models/v1", flavor="custom", timeout=60)
            except RegistryTimeoutError:
                pytest.fail(f"worker did not start; its log:\n{_tail(log)}")
            yield c
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def _events(settings: Settings, topic: str) -> list[Event]:
    with LogTail(settings, topic) as tail:
        return decode_records(tail.read_to_end())


def _serve_until(what: str, check: Callable[[], bool], serve: Callable[[int], None],
                 settings: Settings, *, batches: int = 8, each: float = 8.0) -> int:
    """Serve batches until ``check()`` holds (polled for ``each`` seconds after each batch).

    More traffic after the first batch only matters when the worker applied the
    policy or the alias move after some of the batch (they come on other topics).
    """
    for batch in range(batches):
        serve(batch)
        deadline = time.monotonic() + each
        while time.monotonic() < deadline:
            if check():
                return batch + 1
            time.sleep(0.3)
    pytest.fail(f"no {what} after {batches} batches; worker log:\n"
                f"{_tail(settings.data_dir.parent / 'worker.log')}")


def _serve(client: Client, n: int, served: tuple[int, float],
           shadow: tuple[int, float] | None, seed: int) -> None:
    """``n`` requests: the served prediction, maybe a shadow one paired with it, the label."""
    rng = random.Random(seed)
    for i in range(n):
        label = rng.randint(0, 1)
        pid = client.new_id()
        right = rng.random() < served[1]
        client.emit(PredictionMade(
            id=pid, time=codec.utcnow(), aggregate=M, prediction_id=pid, model=M,
            model_version=served[0], inputs={"x": float(i)},
            output=label if right else 1 - label, alias="production"))
        if shadow is not None:
            sid = client.new_id()
            right = rng.random() < shadow[1]
            client.emit(PredictionMade(
                id=sid, time=codec.utcnow(), aggregate=M, prediction_id=sid, model=M,
                model_version=shadow[0], inputs={"x": float(i)},
                output=label if right else 1 - label, alias="candidate", shadow=True,
                paired_with=pid))
        client.log_label(M, pid, label)
    client.flush()


def _production(client: Client) -> tuple[int, str, str] | None:
    info = client.registry(M).aliases(M).get("production")
    return None if info is None else (info.version, info.actor, info.reason)


def test_candidate_promoted_on_evidence_then_rolled_back_when_worse(
        client: Client, rollout_settings: Settings) -> None:
    topics = Topics.from_settings(rollout_settings)
    assert client.register_model(M, artifact_uri="s3://models/v2", flavor="custom") == 2
    client.set_alias(M, "production", 1, reason="first release")
    client.set_alias(M, "candidate", 2, reason="retrained")
    client.set_promotion_policy(M, min_pairs=200, report_every=50, rollback_min=100,
                                cooldown_s=0, reason="e2e")

    # phase 1: the candidate, in shadow, is clearly better on the same requests
    _serve_until("promotion", lambda: (_production(client) or (0,))[0] == 2,
                 lambda b: _serve(client, 300, (1, 0.6), (2, 0.95), seed=b), rollout_settings)
    _, actor, reason = _production(client) or (0, "", "")
    assert actor == "policy:promotion" and "candidate v2 beats production v1" in reason

    monitoring = _events(rollout_settings, topics.monitoring)
    reports = [e for e in monitoring if isinstance(e, ComparisonReported) and e.model == M]
    assert reports and all(r.baseline_version == 1 and r.challenger_version == 2
                           and r.test.startswith("mcnemar") for r in reports)
    [promote] = [e for e in monitoring if isinstance(e, RolloutDecided)]
    assert isinstance(promote, RolloutDecided)
    assert (promote.action, promote.from_version, promote.to_version) == ("promote", 1, 2)
    evidence = next(r for r in reports if r.id == promote.evidence_id)
    assert evidence.pairs >= 200 and evidence.p_value < 0.05 and evidence.ci_low > 0

    # phase 2: the new production serves worse than v1 did: rolled back to v1
    _serve_until("rollback", lambda: (_production(client) or (0,))[0] == 1,
                 lambda b: _serve(client, 200, (2, 0.3), None, seed=100 + b), rollout_settings)
    _, actor, reason = _production(client) or (0, "", "")
    assert actor == "policy:rollback" and "does worse than v1's baseline" in reason

    decisions = [e for e in _events(rollout_settings, topics.monitoring)
                 if isinstance(e, RolloutDecided)]
    assert [(d.action, d.from_version, d.to_version) for d in decisions] == [
        ("promote", 1, 2), ("rollback", 2, 1)]
    commands = [e for e in _events(rollout_settings, topics.registry_commands)
                if isinstance(e, AliasChangeRequested) and e.actor.startswith("policy:")]
    assert [c.command_id for c in commands] == [d.command_id for d in decisions]
    history = [(h.version, h.actor) for h in client.registry(M).history(M)
               if h.alias == "production"]
    assert history == [(1, history[0][1]), (2, "policy:promotion"), (1, "policy:rollback")]

    # the views, the query command and the policy command over the projected ledger
    _project_until(rollout_settings, "select count(*) from rollout_decisions "
                                     "where outcome = 'applied'", 2)
    cli = ["--broker", rollout_settings.bootstrap_servers, "--data-dir",
           str(rollout_settings.data_dir), "--topic-prefix", rollout_settings.topic_prefix]
    result = CliRunner().invoke(app, [*cli, "query", "--format", "json",
                                      "select * from comparisons order by time"])
    assert result.exit_code == 0, result.output
    reported = [json.loads(line) for line in result.output.splitlines()]
    assert len(reported) == len({r.id for r in _events(rollout_settings, topics.monitoring)
                             if isinstance(r, ComparisonReported)})
    assert reported[0]["model"] == M and reported[0]["challenger_version"] == 2
    assert {"p_value", "ci_low", "ci_high", "effect", "pairs", "test"} <= set(reported[0])
    result = CliRunner().invoke(app, [*cli, "query", "--format", "json",
                                      "select * from rollout_decisions order by time"])
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [(r["action"], r["to_version"], r["outcome"]) for r in rows] == [
        ("promote", 2, "applied"), ("rollback", 1, "applied")]
    assert rows[0]["evidence_id"] == promote.evidence_id
    result = CliRunner().invoke(app, [*cli, "policy", "promotion", "show", M])
    assert result.exit_code == 0, result.output
    assert "min_pairs        200          set" in result.output
    assert "alpha            0.05         default" in result.output
    # the dashboard's Rollout page reads the same views
    from modelog.dashboard.rollout_page import comparisons, effect_chart, rollout_decisions
    from modelog.store.reader import Reader

    reader = Reader(rollout_settings)
    assert list(rollout_decisions(reader, M)["action"]) == ["rollback", "promote"]
    shown = comparisons(reader, M)
    assert len(shown) == len(reported) and len(effect_chart(shown).to_dict()["layer"]) == 3


def _project_until(settings: Settings, sql: str, want: int) -> None:
    with Projector(settings, serve=False) as projector:
        for _ in range(200):
            projector.project_once(timeout=0.5)
            if projector.connection.execute(sql).fetchall()[0][0] >= want:
                return
    raise AssertionError(f"projection never reached {want} for {sql}")
