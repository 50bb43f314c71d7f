"""A partition restored from a state snapshot continues exactly like an uninterrupted router,
and only a snapshot this deployment signed, not ahead of the commits, is ever used."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

from modelog.models import codec
from modelog.models.events import (
    Event,
    LabelObserved,
    MonitorConfigured,
    PredictionMade,
)
from modelog.models.monitor import ServingMonitor
from modelog.models.pickled import instance_state
from modelog.models.retrain import RetrainTrigger
from modelog.store.partition_state import PartitionSnapshots
from modelog.streams.serving_loop import PartitionRouters
from modelog.streams.topics import Topics
from modelog.streams.worker import RecordRouter

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
TOPICS = Topics("p.")


def stream(n: int = 3_000, seed: int = 7) -> list[Event]:
    """Predictions of two models, labelled 5 steps later; the concept and input ``b`` drift."""
    rng = random.Random(seed)
    events: list[Event] = []
    outputs: dict[tuple[str, int], int] = {}
    for i in range(n + 5):
        for m in ("m1", "m2"):
            t = T0 + dt.timedelta(seconds=i, milliseconds=("m1", "m2").index(m))
            drifted = i > n // 2
            if i < n:
                outputs[(m, i)] = out = rng.randint(0, 1)
                events.append(PredictionMade(
                    id=f"{m}-p{i}", time=t, aggregate=m, prediction_id=f"{m}-{i}", model=m,
                    model_version=1, output=out,
                    inputs={"a": rng.gauss(0, 1), "b": rng.gauss(3.0 if drifted else 0, 1)}))
            if 0 <= (j := i - 5) < n:
                y = outputs[(m, j)]
                wrong = rng.random() < (0.5 if drifted else 0.05)
                events.append(LabelObserved(
                    id=f"{m}-l{j}", time=t, aggregate=m, prediction_id=f"{m}-{j}", model=m,
                    label=1 - y if wrong else y))
    return events


def router() -> RecordRouter:
    return RecordRouter(TOPICS, ServingMonitor(), retrain=RetrainTrigger())


def route(r: RecordRouter, events: list[Event], first_offset: int) -> list[bytes]:
    out: list[bytes] = []
    for k, ev in enumerate(events):
        out += [o.value for o in r.route(ev.aggregate.encode(), codec.encode(ev), TOPICS.serving,
                                         0, first_offset + k)]
    return out


def test_a_restored_partition_continues_like_an_uninterrupted_one(tmp_path: Path) -> None:
    events = stream()
    config = MonitorConfigured(id="cfg-1", time=T0, aggregate="m1", model="m1",
                               config={"check_every": 50})
    whole = router()
    whole.monitor.configure(config)
    expected = route(whole, events, 0)
    assert any(b"DriftDetected" in v for v in expected)

    cut = len(events) // 2
    first = PartitionRouters(router)
    r = first.fresh(0)
    r.monitor.configure(config)
    head = route(r, events[:cut], 0)
    first.advance(0, TOPICS.serving, cut - 1)

    snaps = PartitionSnapshots(tmp_path / "state", key=b"k" * 32)
    snaps.save(0, first.positions[0], r.snapshot())
    positions, state = snaps.load(0)  # type: ignore[misc]
    assert positions == {TOPICS.serving: cut}

    second = PartitionRouters(router)
    resumed = second.restored(0, state, positions)
    assert second.positions[0] == {TOPICS.serving: cut}
    tail = route(resumed, events[cut:], cut)
    assert head + tail == expected
    assert resumed.records == len(events)  # counters continue too


def test_a_snapshot_signed_with_another_key_or_tampered_with_is_not_used(
    tmp_path: Path,
) -> None:
    snaps = PartitionSnapshots(tmp_path, key=b"a" * 32)
    snaps.save(1, {"p.serving": 10}, router().snapshot())
    assert PartitionSnapshots(tmp_path, key=b"b" * 32).load(1) is None
    path = tmp_path / "partition-1.state"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    assert snaps.load(1) is None
    path.write_bytes(b"not a snapshot")
    assert snaps.load(1) is None


def test_the_join_state_survives_a_snapshot_in_order() -> None:
    import collections
    import pickle

    from modelog.models.monitor_state import ModelState, PendingPrediction

    state = ModelState(predictions=7, labels=3, watermark=T0)
    for i in range(5):
        state.pending[f"p{i}"] = PendingPrediction(1, {"a": 0.25 * i}, T0)
    for i in range(9, 4, -1):
        state.joined[f"j{i}"] = None
    copy = pickle.loads(pickle.dumps(state))
    assert copy == state
    assert list(copy.pending) == [f"p{i}" for i in range(5)]
    assert list(copy.joined) == [f"j{i}" for i in range(9, 4, -1)]
    assert isinstance(copy.pending, collections.OrderedDict)
    copy.pending.popitem(last=False)  # still an OrderedDict: the oldest goes first
    assert next(iter(copy.pending)) == "p1"
    # the form pickled before (the attributes as they are) is read too
    old = ModelState.__new__(ModelState)
    old.__setstate__(instance_state(state))  # (compiled classes have no __dict__)
    assert old == state


def test_snapshots_take_a_bounded_share_of_the_loop(tmp_path: Path) -> None:
    import time

    from modelog.config import Settings
    from modelog.streams.serving_loop import SNAPSHOT_SHARE, ServingLoop

    class SlowRouter(RecordRouter):
        def snapshot(self) -> bytes:
            time.sleep(0.05)  # a large state
            return super().snapshot()

    loop = ServingLoop(Settings(data_dir=tmp_path), lambda: SlowRouter(TOPICS, ServingMonitor()),
                       group="g", snapshot_every=0.01)
    loop._owned = {0}
    loop.routers.fresh(0)
    loop.routers.advance(0, TOPICS.serving, 10)
    before = time.monotonic()
    loop._maybe_snapshot()
    assert loop._saved[0] == {TOPICS.serving: 11}
    # the next one waits ~took / SNAPSHOT_SHARE (2.5 s here), not snapshot_every (0.01 s)
    assert loop._next_snapshot - before >= 0.05 / SNAPSHOT_SHARE * 0.9
    loop.routers.advance(0, TOPICS.serving, 11)
    loop._maybe_snapshot()
    assert loop._saved[0] == {TOPICS.serving: 11}  # not yet
    loop._maybe_snapshot(every=True)  # a clean stop saves regardless
    assert loop._saved[0] == {TOPICS.serving: 12}
