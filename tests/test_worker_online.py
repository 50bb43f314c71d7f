"""An online River model registered through the SDK learns inside the running worker.

Its prequential accuracy, read back from the runs topic, equals River's own
``evaluate.progressive_val_score`` on the same data; checkpoints land on the
registry topic.
"""

from __future__ import annotations

import copy
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from river import datasets, evaluate, linear_model, metrics, preprocessing

import modelog
from modelog.config import Settings
from modelog.models.events import MetricsLogged, OnlineModelCheckpointed
from modelog.models.online_models import online_run_id
from modelog.streams.registry_agent import LogTail, decode_records
from modelog.streams.topics import ensure_topics

pytestmark = [pytest.mark.broker, pytest.mark.slow]

N = 1_000


@pytest.fixture
def worker(settings: Settings) -> Iterator[Settings]:
    ensure_topics(settings)
    env = dict(os.environ, MODELOG_BROKER=settings.bootstrap_servers,
               MODELOG_DATA_DIR=str(settings.data_dir), MODELOG_TOPIC_PREFIX=settings.topic_prefix,
               MODELOG_PARTITIONS=str(settings.partitions))
    log = open(settings.data_dir / "worker.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "modelog", "worker", "--session-timeout", "6"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield settings
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def test_online_model_learns_in_the_worker_like_progressive_validation(worker: Settings
                                                                        ) -> None:
    def model() -> Any:
        return preprocessing.StandardScaler() | linear_model.LogisticRegression()

    data = list(itertools.islice(datasets.Phishing(), N))
    expected = evaluate.progressive_val_score(data, model(), metrics.Accuracy()).get()
    with modelog.connect(settings=worker) as client:
        version = client.register_model("phish", copy.deepcopy(model()), online=True,
                                        timeout=120)  # registered as a spec (river-spec)
        time.sleep(1.0)  # let the worker's registry tail see the registration
        for x, y in data:
            pid = client.log_prediction("phish", version, x, False)
            client.log_label("phish", pid, bool(y))
    run_id = online_run_id("phish", version)
    runs = LogTail(worker, f"{worker.topic_prefix}runs")
    points: dict[int, float] = {}
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and N not in points:
        for ev in decode_records(runs.poll(timeout=1.0)):
            if isinstance(ev, MetricsLogged) and ev.run_id == run_id:
                points.update({p.step: p.value for p in ev.metrics
                               if p.key == "prequential_accuracy"})
    assert N in points, f"no prequential accuracy at step {N}; got steps {sorted(points)}"
    assert points[N] == pytest.approx(expected, abs=1e-12)
    checkpoints = [e for e in decode_records(LogTail(worker, f"{worker.topic_prefix}registry")
                                             .read_to_end())
                   if isinstance(e, OnlineModelCheckpointed)]
    assert checkpoints and checkpoints[-1].n_learned == N
    # signed with the worker's own key, kept private in its data directory
    assert checkpoints[-1].mac is not None
    assert (worker.data_dir / "worker.key").stat().st_mode & 0o777 == 0o600
