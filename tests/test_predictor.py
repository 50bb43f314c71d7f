"""The SDK's predictor against the real broker: routing, stickiness, following, shadows.

One registry worker (:class:`RegistryService`, a thread) and one client serve
the module; every test uses its own model name.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyRegressor

import modelog
from modelog.config import Settings
from modelog.models.errors import ArtifactDigestMismatch, EventValidationError
from modelog.models.events import PredictionMade
from modelog.streams.errors import NoServingVersionError
from modelog.streams.logtail import LogTail, decode_records
from modelog.streams.registry_agent import RegistryService
from modelog.streams.sdk import Client
from modelog.streams.topics import ensure_topics

pytestmark = pytest.mark.broker

X = pd.DataFrame({"x": [0.0, 1.0, 2.0]})


@pytest.fixture(scope="module")
def settings(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    s = Settings(broker=broker, data_dir=tmp_path_factory.mktemp("predictor") / "data",
                 topic_prefix=f"p{uuid.uuid4().hex[:10]}.", partitions=2,
                 producer_name="pytest")
    s.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_topics(s)
    return s


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[Client]:
    with RegistryService(settings), modelog.connect(settings=settings) as c:
        yield c


def constant(value: float) -> DummyRegressor:
    return DummyRegressor(strategy="constant", constant=value).fit(X, [value] * 3)


def setup_model(client: Client, values: dict[str, float]) -> str:
    """A new model with one version per alias, answering the alias's constant."""
    name = f"m{uuid.uuid4().hex[:8]}"
    for alias, value in values.items():
        version = client.register_model(name, constant(value), dataset=X)
        client.set_alias(name, alias, version, reason="test")
    return name


def predictions(settings: Settings, model: str) -> list[PredictionMade]:
    with LogTail(settings, settings_topics(settings)) as tail:
        events = decode_records(tail.read_to_end())
    return [e for e in events if isinstance(e, PredictionMade) and e.model == model]


def settings_topics(settings: Settings) -> str:
    from modelog.streams.topics import Topics

    return Topics.from_settings(settings).serving


def test_routes_by_weight_sticky_per_key_and_logs_what_answered(
        client: Client, settings: Settings) -> None:
    name = setup_model(client, {"production": 1.0, "candidate": 2.0})
    client.set_traffic(name, {"production": 0.7, "candidate": 0.3}, reason="A/B")
    with client.predictor(name) as predictor:
        served = predictor.serve_many([{"x": 1.0}] * 2000,
                                      keys=[f"user-{i}" for i in range(2000)])
        share = sum(s.alias == "candidate" for s in served) / len(served)
        assert abs(share - 0.3) < 0.041, share  # 2000 keys: sd 0.0102, so 4 sd
        assert all(s.output == (2.0 if s.alias == "candidate" else 1.0) for s in served)
        for i in range(0, 2000, 50):  # the same key always gets the same arm
            again = {predictor.serve({"x": 0.0}, key=f"user-{i}").alias for _ in range(3)}
            assert again == {served[i].alias}
        unkeyed = predictor.predict_many([{"x": 1.0}] * 400)
        assert {1.0, 2.0} == set(unkeyed)  # no key: random draws reach both arms
    client.flush()
    logged = {p.prediction_id: p for p in predictions(settings, name)}
    for s in served[:200]:
        p = logged[s.prediction_id]
        assert (p.alias, p.model_version, p.output, p.shadow) == (
            s.alias, s.model_version, s.output, False)
    assert len(logged) == 2000 + 3 * 40 + 400


def test_follows_an_alias_move_and_a_traffic_change_without_restart(client: Client) -> None:
    name = setup_model(client, {"production": 1.0})
    v2 = client.register_model(name, constant(2.0), dataset=X)
    with client.predictor(name) as predictor:
        assert predictor.predict({"x": 0.0}) == 1.0
        moved = time.monotonic()
        client.set_alias(name, "production", v2, reason="better")
        while predictor.predict({"x": 0.0}) != 2.0:
            assert time.monotonic() - moved < 2.0, "the predictor did not follow the alias"
            time.sleep(0.01)
        lag = time.monotonic() - moved
        client.set_alias(name, "candidate", 1, reason="back as candidate")
        client.set_traffic(name, {"candidate": 1.0})
        changed = time.monotonic()
        while predictor.serve({"x": 0.0}).alias != "candidate":
            assert time.monotonic() - changed < 2.0, "the predictor did not follow the policy"
            time.sleep(0.01)
        assert predictor.predict({"x": 0.0}) == 1.0
    assert lag < 2.0


def test_shadows_are_logged_flagged_and_never_returned(client: Client,
                                                       settings: Settings) -> None:
    name = setup_model(client, {"production": 1.0, "shadow": 2.0})
    broken = client.register_model(name, constant(3.0),
                                   signature=[("x", "double"), ("missing", "double")])
    client.set_alias(name, "broken", broken)
    client.set_traffic(name, {"production": 1.0}, shadows=["shadow", "broken"])
    predictor = client.predictor(name)
    outputs = [predictor.serve({"x": float(i)}) for i in range(20)]
    predictor.close()  # waits for the shadow scoring
    assert {s.output for s in outputs} == {1.0} and {s.alias for s in outputs} == {"production"}
    assert predictor.stats.shadow_logged == 20
    assert predictor.stats.shadow_errors == 20  # "broken" needs a column the request lacks
    client.flush()
    logged = predictions(settings, name)
    shadows = [p for p in logged if p.shadow]
    assert len(shadows) == 20 and len(logged) == 40
    served_ids = {s.prediction_id for s in outputs}
    assert {p.paired_with for p in shadows} == served_ids
    assert {(p.alias, p.output) for p in shadows} == {("shadow", 2.0)}
    assert all(not p.shadow and p.paired_with is None for p in logged if p.alias == "production")


def test_bad_input_raises_before_the_model_and_logs_nothing(client: Client) -> None:
    name = setup_model(client, {"production": 1.0})
    with client.predictor(name) as predictor:
        with pytest.raises(EventValidationError, match=r"inputs\.x.*signature"):
            predictor.predict({"y": 1.0})
        with pytest.raises(EventValidationError, match=r"inputs\.x"):
            predictor.predict({"x": float("nan")})
        assert predictor.stats.served == 0
    # a stored artifact whose bytes changed is never deserialized
    tampered = f"m{uuid.uuid4().hex[:8]}"
    version = client.register_model(tampered, constant(9.0), dataset=X)
    client.set_alias(tampered, "production", version, reason="test")
    info = client.registry(tampered).versions(tampered)[version]
    path = client.artifacts.resolve(info.artifact_uri)
    path.chmod(0o600)
    path.write_bytes(path.read_bytes() + b"tampered")
    with client.predictor(tampered) as predictor, pytest.raises(ArtifactDigestMismatch):
        predictor.predict({"x": 1.0})
    assert predictor.stats.served == 0
    unserved = f"m{uuid.uuid4().hex[:8]}"
    client.register_model(unserved, constant(1.0), dataset=X)
    with client.predictor(unserved) as predictor, pytest.raises(
            NoServingVersionError, match=r"set one with client\.set_alias"):
        predictor.predict({"x": 1.0})


def test_async_and_batches(client: Client) -> None:
    name = setup_model(client, {"production": 5.0})
    predictor = client.predictor(name, follow=False)

    async def serve() -> tuple[object, list[object]]:
        async with predictor.aio() as aio:
            one = await aio.predict({"x": 1.0}, key="u")
            many = await aio.predict_many([{"x": 1.0}, {"x": 2.0}])
        return one, many

    assert asyncio.run(serve()) == (5.0, [5.0, 5.0])


def test_online_version_is_served_from_its_verified_checkpoint(
        client: Client, settings: Settings) -> None:
    from river import linear_model

    from modelog.models.events import LabelObserved, OnlineModelCheckpointed
    from modelog.models.online_models import OnlineModelProcessor
    from modelog.models.registry import fold
    from modelog.store.worker_key import worker_key
    from modelog.streams.registry_client import read_registry_log

    name = f"m{uuid.uuid4().hex[:8]}"
    version = client.register_model(name, linear_model.LinearRegression(), online=True)
    client.set_alias(name, "production", version, reason="online")
    with client.predictor(name) as predictor:
        fresh = predictor.predict({"x": 3.0})
        assert fresh == 0.0  # the registration: nothing learned yet
        # the worker's own processor learns y = 2x and checkpoints, signed with its key
        proc = OnlineModelProcessor(client.artifacts, checkpoint_every=200,
                                    checkpoint_key=worker_key(settings.data_dir))
        accepted, _ = read_registry_log(settings, name)
        for event in accepted:
            proc.process(event)
        registered = fold(accepted).versions(name)[version].registered
        checkpoints = []
        for i in range(200):
            t = registered + pd.Timedelta(seconds=i + 1)
            pid = f"0190a6f2-0000-7000-8000-{i:012d}"
            x = {"x": float(i % 5)}
            proc.process(PredictionMade(id=pid, time=t, aggregate=name, prediction_id=pid,
                                        model=name, model_version=version, inputs=x,
                                        output=None))
            checkpoints += proc.process(LabelObserved(
                id=f"0190a6f2-0000-7000-9000-{i:012d}", time=t, aggregate=name,
                prediction_id=pid, model=name, label=2 * x["x"]))
        [checkpoint] = [c for c in checkpoints if isinstance(c, OnlineModelCheckpointed)]
        learned = proc.learner(name, version)
        assert learned is not None
        expected = learned.predict_one({"x": 3.0})
        forged = type(checkpoint)(**{**{f: getattr(checkpoint, f)
                                        for f in checkpoint.__struct_fields__},
                                     "id": str(uuid.uuid4()), "n_learned": 10_000,
                                     "mac": "00" * 32})
        client.emit(forged)  # a MAC that does not verify: never served
        client.emit(checkpoint)
        client.flush()
        deadline = time.monotonic() + 3.0
        while predictor.predict({"x": 3.0}) == fresh:
            assert time.monotonic() < deadline, "the checkpoint was not served"
            time.sleep(0.02)
        assert predictor.predict({"x": 3.0}) == pytest.approx(expected)
        assert predictor.stats.refused_checkpoints >= 1


def test_a_model_fit_on_some_dataset_columns_is_served_with_those(client: Client) -> None:
    """Found end to end: the frame had every signature column (the dataset's but the
    target), which a model fit on some of them, by name and in its own order, refuses."""
    from sklearn.linear_model import LinearRegression

    data = pd.DataFrame({"sqft": [50.0, 80.0, 120.0, 60.0], "city": ["a", "b", "a", "c"],
                         "rooms": [1.0, 2.0, 4.0, 2.0], "price": [100.0, 160.0, 250.0, 125.0]})
    model = LinearRegression().fit(data[["rooms", "sqft"]], data["price"])
    name = f"m{uuid.uuid4().hex[:8]}"
    version = client.register_model(name, model, dataset=data, target="price")
    info = client.registry(name).versions(name)[version]
    assert [c.name for c in info.signature] == ["sqft", "city", "rooms"]  # the training data's
    client.set_alias(name, "production", version, reason="test")
    request = {"city": "b", "sqft": 70.0, "rooms": 2.0, "request_id": "r-1"}
    expected = float(model.predict(pd.DataFrame([{"rooms": 2.0, "sqft": 70.0}]))[0])
    with client.predictor(name) as predictor:
        assert predictor.predict(request) == pytest.approx(expected)
        assert predictor.predict_many([request, request]) == pytest.approx([expected] * 2)


def test_a_classifier_logs_its_class_probabilities_with_each_prediction(
        client: Client, settings: Settings) -> None:
    """``predict_proba`` over ``classes_`` goes out with the class answered (one request and a
    batch); ``log_probabilities=False`` leaves them out."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(4)
    data = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    data["y"] = np.where(data["a"] + rng.normal(scale=0.8, size=300) > 0, "churn", "stay")
    model = LogisticRegression().fit(data[["a", "b"]], data["y"])
    name = f"m{uuid.uuid4().hex[:8]}"
    version = client.register_model(name, model, dataset=data, target="y")
    client.set_alias(name, "production", version, reason="test")
    rows = [{"a": float(a), "b": float(b)} for a, b in rng.normal(size=(20, 2))]
    with client.predictor(name) as predictor:
        one = predictor.serve(rows[0])
        many = predictor.serve_many(rows[1:])
    with client.predictor(name, log_probabilities=False) as bare:
        plain = bare.serve(rows[0])
    client.flush()
    logged = {p.prediction_id: p for p in predictions(settings, name)}
    expected = model.predict_proba(pd.DataFrame(rows, columns=["a", "b"]))
    for i, served in enumerate([one, *many]):
        p = logged[served.prediction_id]
        assert p.output == served.output and p.output in ("churn", "stay")
        assert p.probabilities is not None and set(p.probabilities) == {"churn", "stay"}
        assert p.probabilities["churn"] == pytest.approx(expected[i][0])
        assert p.probabilities["stay"] == pytest.approx(expected[i][1])
    assert logged[plain.prediction_id].probabilities is None


def test_a_river_classifier_logs_predict_proba_one(client: Client, settings: Settings) -> None:
    from river import linear_model

    name = f"m{uuid.uuid4().hex[:8]}"
    version = client.register_model(name, linear_model.LogisticRegression(), online=True)
    client.set_alias(name, "production", version, reason="online")
    with client.predictor(name) as predictor:
        served = predictor.serve({"x": 1.0})
    client.flush()
    [logged] = [p for p in predictions(settings, name) if p.prediction_id == served.prediction_id]
    # nothing learned yet: even odds, and the class answered is one of them
    assert logged.probabilities == {"False": 0.5, "True": 0.5}
    assert str(logged.output) in logged.probabilities
