"""Benchmark: how many events per second the projector moves from Kafka into DuckDB.

Run it with ``python -m modelog.streams.bench.projector`` (an embedded broker is
started unless ``MODELOG_BROKER`` is set) or through ``modelog bench``.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import threading
import time
from pathlib import Path

from modelog.config import Settings
from modelog.models.codec import encode
from modelog.models.events import PredictionMade
from modelog.models.ids import new_id
from modelog.streams.kafka import new_producer
from modelog.streams.projector import Projector, ProjectorProgress
from modelog.streams.topics import Topics, ensure_topics

__all__ = ["bench_projector", "main"]


def _produce(settings: Settings, n: int, first: int = 0) -> float:
    """Produce ``n`` encoded PredictionMade events (numbered from ``first``); return the
    seconds it took."""
    topic = Topics.from_settings(settings).serving
    producer = new_producer(settings, client_id="modelog-bench", linger_ms=20, extra={
        "compression.type": "lz4", "batch.size": 1_000_000,
        "queue.buffering.max.messages": 1_000_000,
    })
    base = dt.datetime.now(dt.UTC)
    models = [f"bench-model-{i}" for i in range(8)]
    start = time.perf_counter()
    for i in range(first, first + n):
        model = models[i % len(models)]
        ev = PredictionMade(
            id=new_id(), time=base + dt.timedelta(microseconds=i), aggregate=model,
            producer="bench", prediction_id=f"p-{i}", model=model, model_version=1 + i % 3,
            code_version="abc123", inputs={"x": i * 0.5, "plan": "pro", "age": i % 90},
            output=i % 2,
        )
        while True:
            try:
                producer.produce(topic, key=model.encode(), value=encode(ev))
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(60)
    return time.perf_counter() - start


def bench_projector(settings: Settings, n: int = 200_000, repeat: int = 3,
                    sustained: int = 0) -> dict[str, float]:
    """Produce ``n`` predictions, then time the projector consuming them into a fresh DuckDB.

    The projector runs its pipelined loop (:meth:`Projector.project`), as
    ``modelog project`` does; the clock runs from the moment its reader process
    is ready (before it is assigned any partition) until the batch holding the
    ``n``-th record is committed. The projection is timed ``repeat`` times, each
    into a fresh file from the same produced records; the machine is shared
    (the broker runs on it too), so the best run is the figure and the median
    shows the spread.

    The default ``n`` stays below the writer's checkpoint threshold (256 MB of
    WAL), so these runs do not pay DuckDB's checkpoints. ``sustained`` events
    (more are produced as needed) are then projected once more, with the clock
    stopped only after the projector closed, i.e. after its final checkpoint:
    the rate a long-running projector keeps.

    Returns
    -------
    dict
        ``events``, ``seconds``, ``events_per_s`` (projection, best run),
        ``events_per_s_median``, ``runs``, ``produce_per_s`` and ``reader_start_s``
        (starting the reader process, before the clock starts; best run); with
        ``sustained``, also ``sustained_events`` and ``sustained_per_s``.
    """
    ensure_topics(settings)
    produce_s = _produce(settings, n)
    runs = sorted((_project(settings, n) for _ in range(max(1, repeat))),
                  key=lambda r: r["events_per_s"], reverse=True)
    best = runs[0]
    result = {
        **best,
        "events_per_s_median": runs[len(runs) // 2]["events_per_s"],
        "runs": float(len(runs)),
        "produce_per_s": n / produce_s if produce_s > 0 else 0.0,
    }
    if sustained > 0:
        if sustained > n:
            _produce(settings, sustained - n, first=n)
        long = _project(settings, max(sustained, n), until_closed=True)
        result["sustained_events"] = long["events"]
        result["sustained_per_s"] = long["events_per_s"]
    return result


def _project(settings: Settings, n: int, *, until_closed: bool = False) -> dict[str, float]:
    """One timed projection of the ``n`` records on the topics into a fresh DuckDB file.

    With ``until_closed`` the clock also runs while the projector closes (its
    final checkpoint).
    """
    work = Path(tempfile.mkdtemp(prefix="projector-", dir=_ensure(settings.data_dir)))
    stop = threading.Event()

    def until_done(progress: ProjectorProgress) -> None:
        if progress.records >= n:
            stop.set()

    projector = Projector(settings.replace(data_dir=work), serve=False, progress=until_done)
    deadline = threading.Timer(max(60.0, n / 5_000), stop.set)  # never hang on a lost record
    try:
        begin = time.perf_counter()
        projector.start_reader()  # a one-off cost of every projector run, not throughput
        reader_s = time.perf_counter() - begin
        deadline.start()
        start = time.perf_counter()
        projector.project(stop)
        projected = int(projector.connection.execute(
            "SELECT count(*) FROM predictions").fetchall()[0][0])
        if until_closed:
            projector.close()  # the final checkpoint (closing again below is a no-op)
        seconds = time.perf_counter() - start
    finally:
        deadline.cancel()
        projector.close()
        shutil.rmtree(work, ignore_errors=True)
    return {
        "events": float(projected),
        "seconds": seconds,
        "events_per_s": projected / seconds if seconds > 0 else 0.0,
        "reader_start_s": reader_s,
    }


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def main(n: int = 200_000, sustained: int = 1_000_000) -> dict[str, float]:
    """Run the benchmark on ``MODELOG_BROKER`` or on a fresh embedded broker; print it."""
    import contextlib

    from modelog.streams.broker import EmbeddedBroker

    settings = Settings.from_env()
    with contextlib.ExitStack() as stack:
        if not settings.broker:
            broker = stack.enter_context(EmbeddedBroker())
            settings = settings.replace(broker=broker.bootstrap_servers)
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="modelog-bench-")))
        settings = settings.replace(topic_prefix=f"bench{int(time.time())}.", data_dir=tmp)
        result = bench_projector(settings, n=n, sustained=sustained)
    print(
        f"projector: {result['events']:,.0f} events in {result['seconds']:.2f} s = "
        f"{result['events_per_s']:,.0f} events/s into DuckDB (target >= 100,000; best of "
        f"{result['runs']:.0f}, median {result['events_per_s_median']:,.0f}); produced at "
        f"{result['produce_per_s']:,.0f}/s; reader process started in "
        f"{result['reader_start_s']:.1f} s"
        + (f"; sustained over {result['sustained_events']:,.0f} events incl. checkpoints: "
           f"{result['sustained_per_s']:,.0f} events/s" if sustained > 0 else "")
    )
    return result


if __name__ == "__main__":
    main()
