"""No producer code runs in the worker: online models are specifications, checkpoints are signed.

A forged ``ModelVersionRegistered`` pointing at a pickle, or a forged
``OnlineModelCheckpointed``, must not make the worker unpickle anything; a
River model built from classes off the allow-list is refused at registration;
the operator's opt-in (``allow_pickle``) still loads pickles.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import pickle
import stat
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace
from river import (
    compose,
    datasets,
    ensemble,
    feature_extraction,
    forest,
    linear_model,
    metrics,
    naive_bayes,
    neighbors,
    optim,
    preprocessing,
    tree,
)

from modelog.config import Settings
from modelog.models import codec, flavors
from modelog.models.errors import OnlineModelError, OnlineSpecError
from modelog.models.events import (
    Event,
    LabelObserved,
    ModelVersionRegistered,
    ModelVersionRequested,
    OnlineModelCheckpointed,
    PredictionMade,
)
from modelog.models.online_models import OnlineModelProcessor, checkpoint_mac
from modelog.models.online_spec import ALLOWED, build, dumps, spec_of
from modelog.store.artifacts import ArtifactStore
from modelog.store.errors import WorkerKeyError
from modelog.store.worker_key import KEY_FILE, worker_key
from modelog.streams.producer import EventProducer
from modelog.streams.sdk import Client

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
MODEL = "phish"
KEY = b"k" * 32


class Evil:
    """A pickle that creates ``marker`` when unpickled (stands for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (open, (str(self.marker), "w"))


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "pwned"


def registration(store: ArtifactStore, data: bytes, flavor: str, *,
                 version: int = 1) -> ModelVersionRegistered:
    digest, uri = store.put_bytes(data, suffix=".bin")
    return ModelVersionRegistered(
        id=f"reg-{version}", time=T0, aggregate=MODEL, model=MODEL, model_version=version,
        flavor=flavor, artifact_uri=uri, artifact_digest=digest, online=True)


def serving(data: list[tuple[dict[str, Any], Any]]) -> list[Event]:
    out: list[Event] = []
    for i, (x, y) in enumerate(data):
        t = T0 + dt.timedelta(seconds=1 + i)
        out.append(PredictionMade(id=f"p-{i}", time=t, aggregate=MODEL, prediction_id=f"q{i}",
                                  model=MODEL, model_version=1, inputs=x, output=None))
        out.append(LabelObserved(id=f"l-{i}", time=t, aggregate=MODEL, prediction_id=f"q{i}",
                                 model=MODEL, label=y))
    return out


def phishing(n: int = 300) -> list[tuple[dict[str, Any], Any]]:
    return list(itertools.islice(datasets.Phishing(), n))


# -- the specification ------------------------------------------------------------------
ESTIMATORS = {
    "scaled-logreg": lambda: preprocessing.StandardScaler() | linear_model.LogisticRegression(
        optimizer=optim.Adam(0.01), loss=optim.losses.Hinge(), l2=0.001,
        intercept_lr=optim.schedulers.InverseScaling(0.1)),
    "union": lambda: (compose.Select("empty_server_form_handler", "popup_window")
                      + preprocessing.MinMaxScaler()) | linear_model.Perceptron(),
    "named-steps": lambda: compose.Pipeline(("scale", preprocessing.StandardScaler()),
                                            ("nb", naive_bayes.GaussianNB())),
    "hoeffding": lambda: tree.HoeffdingTreeClassifier(
        grace_period=50, splitter=tree.splitter.HistogramSplitter()),
    "adaptive-tree": lambda: tree.HoeffdingAdaptiveTreeClassifier(seed=1),
    "knn": lambda: preprocessing.StandardScaler() | neighbors.KNNClassifier(
        engine=neighbors.SWINN(seed=3)),
    "bagging": lambda: ensemble.BaggingClassifier(linear_model.LogisticRegression(),
                                                  n_models=3, seed=2),
    "voting": lambda: ensemble.VotingClassifier(
        [linear_model.LogisticRegression(), naive_bayes.GaussianNB()]),
    "arf": lambda: forest.ARFClassifier(n_models=3, seed=1),
    "poly": lambda: feature_extraction.PolynomialExtender() | preprocessing.StandardScaler()
    | linear_model.LogisticRegression(),
}


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_built_from_its_spec_it_learns_like_a_clone(name: str) -> None:
    model = ESTIMATORS[name]()
    spec = json.loads(json.dumps(spec_of(model)))  # survives JSON
    built, clone = build(spec), model.clone()
    assert type(built) is type(model) and spec_of(built) == spec  # the same spec again
    for x, y in phishing():
        assert built.predict_one(x) == clone.predict_one(x)
        built.learn_one(x, y)
        clone.learn_one(x, y)


def test_a_class_off_the_allow_list_is_refused_with_the_class_and_the_opt_in() -> None:
    class MyScaler(preprocessing.StandardScaler):
        pass

    with pytest.raises(OnlineSpecError) as info:
        spec_of(MyScaler() | linear_model.LogisticRegression())
    message = str(info.value)
    assert "MyScaler" in message and "allow-list" in message
    assert "MODELOG_ONLINE_ALLOW_PICKLE=1" in message and "flavor='river'" in message
    with pytest.raises(OnlineSpecError, match="FuncTransformer"):
        spec_of(compose.FuncTransformer(lambda x: x) | linear_model.LogisticRegression())
    with pytest.raises(OnlineSpecError, match="F1"):  # a metric the forest would not pick
        spec_of(forest.ARFClassifier(metric=metrics.F1()))
    with pytest.raises(OnlineSpecError, match=r"os\.system"):
        build({"class": "os.system", "args": ["echo pwned"]})
    with pytest.raises(OnlineSpecError, match=r"builtins\.eval"):
        build({"class": "river.linear_model.LogisticRegression",
               "params": {"loss": {"class": "builtins.eval", "args": ["1"]}}})
    with pytest.raises(OnlineSpecError, match="parameter names"):
        build({"class": "river.linear_model.LogisticRegression", "params": {"__class__": 1}})
    assert "river.metrics" not in ALLOWED


# -- registrations ----------------------------------------------------------------------------
def test_a_forged_pickle_registration_is_refused_and_nothing_is_executed(
        store: ArtifactStore, marker: Path) -> None:
    evil = pickle.dumps(Evil(marker))
    proc = OnlineModelProcessor(store)
    with pytest.raises(OnlineModelError, match="MODELOG_ONLINE_ALLOW_PICKLE=1"):
        proc.process(registration(store, evil, "river"))
    # the same bytes declared as a specification are not JSON: refused, not unpickled
    with pytest.raises(OnlineModelError, match="cannot be built"):
        proc.process(registration(store, evil, "river-spec", version=2))
    forged_spec = json.dumps({"format": "modelog.river-spec/1",
                              "spec": {"class": "builtins.open",
                                       "args": [str(marker), "w"]}}).encode()
    with pytest.raises(OnlineModelError, match="allow-list"):
        proc.process(registration(store, forged_spec, "river-spec", version=3))
    assert not marker.exists()
    assert proc.online_models() == []


def test_a_spec_registration_learns(store: ArtifactStore) -> None:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    proc = OnlineModelProcessor(store)
    proc.process(registration(store, dumps(model), "river-spec"))
    proc.process_many(serving(phishing(50)))
    learner = proc.learner(MODEL, 1)
    assert learner is not None and learner.n_learned == 50


def test_the_opt_in_loads_a_pickle_with_a_warning(
        store: ArtifactStore, marker: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "modelog.models.online_models")
    proc = OnlineModelProcessor(store, allow_pickle=True)
    model = linear_model.LogisticRegression()
    model.learn_one({"x": 1.0}, True)  # a pickle keeps the learned state
    proc.process(registration(store, flavors.dump(model, "river").data, "river"))
    learner = proc.learner(MODEL, 1)
    assert learner is not None and learner.model.predict_proba_one({"x": 1.0}) == \
        model.predict_proba_one({"x": 1.0})
    assert any("MODELOG_ONLINE_ALLOW_PICKLE" in r.getMessage() for r in caplog.records)
    # and it really unpickles: this is what the opt-in trusts
    with pytest.raises(OnlineModelError):
        proc.process(registration(store, pickle.dumps(Evil(marker)), "river", version=2))
    assert marker.exists()


# -- checkpoints -------------------------------------------------------------------------------
def _checkpoints(store: ArtifactStore, key: bytes) -> tuple[ModelVersionRegistered,
                                                             list[OnlineModelCheckpointed]]:
    reg = registration(store, dumps(linear_model.LogisticRegression()), "river-spec")
    proc = OnlineModelProcessor(store, checkpoint_every=100, checkpoint_key=key)
    proc.process(reg)
    out = proc.process_many(serving(phishing(200)))
    return reg, [e for e in out if isinstance(e, OnlineModelCheckpointed)]


def test_signed_checkpoints_are_restored(store: ArtifactStore) -> None:
    _, cps = _checkpoints(store, KEY)
    assert [cp.n_learned for cp in cps] == [100, 200] and all(cp.mac for cp in cps)
    assert codec.decode(codec.encode(cps[-1])) == cps[-1]
    again = OnlineModelProcessor(store, checkpoint_key=KEY)
    assert again.resume(cps) == 1 and again.refused_checkpoints == 0
    learner = again.learner(MODEL, 1)
    assert learner is not None and learner.n_learned == 200


def test_forged_checkpoints_are_refused_and_the_model_starts_fresh(
        store: ArtifactStore, marker: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "modelog.models.online_models")
    reg, cps = _checkpoints(store, KEY)
    digest, uri = store.put_bytes(pickle.dumps(Evil(marker)), suffix=".online.pkl")
    forged = OnlineModelCheckpointed(
        id="cp-forged", time=T0, aggregate=MODEL, model=MODEL, model_version=1,
        artifact_uri=uri, artifact_digest=digest, n_learned=10**6)
    with_other_key = replace(forged, mac=checkpoint_mac(b"x" * 32, MODEL, 1, digest, 10**6))
    replayed_mac = replace(forged, mac=cps[-1].mac)
    bumped = replace(cps[-1], n_learned=10**6)
    proc = OnlineModelProcessor(store, checkpoint_key=KEY)
    assert proc.resume([forged, with_other_key, replayed_mac, bumped]) == 0
    assert proc.refused_checkpoints == 4 and not marker.exists()
    assert "refused checkpoint" in caplog.text
    proc.process(reg)  # starts fresh from the specification
    learner = proc.learner(MODEL, 1)
    assert learner is not None and learner.n_learned == 0
    # a worker with another key (another data dir) does not trust these genuine ones either
    stranger = OnlineModelProcessor(store, checkpoint_key=b"y" * 32)
    assert stranger.resume(cps) == 0 and stranger.refused_checkpoints == 2


def test_worker_key_is_created_private_and_kept(tmp_path: Path) -> None:
    key = worker_key(tmp_path / "data")
    path = tmp_path / "data" / KEY_FILE
    assert len(key) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert worker_key(tmp_path / "data") == key
    path.write_text("short")
    with pytest.raises(WorkerKeyError, match="delete it"):
        worker_key(tmp_path / "data")


# -- the SDK -----------------------------------------------------------------------------------
class _Recorder(EventProducer):
    def __init__(self) -> None:  # no broker connection
        self._closed = False

    def send_event(self, event: Event) -> None:  # pragma: no cover - _command is replaced
        raise AssertionError("not sent in these tests")

    def flush(self, timeout: float = 30.0) -> None:
        return None


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Client, list[Any]]:
    sent: list[ModelVersionRequested] = []
    c = Client(Settings(broker="127.0.0.1:1", data_dir=tmp_path, producer_name="unit"),
               _Recorder())

    def answer(command: ModelVersionRequested, timeout: float) -> ModelVersionRegistered:
        sent.append(command)
        return ModelVersionRegistered(
            id="r", time=T0, aggregate=command.model, model=command.model, model_version=1,
            flavor=command.flavor, artifact_uri=command.artifact_uri,
            artifact_digest=command.artifact_digest, online=command.online)

    monkeypatch.setattr(c, "send_command", answer)
    return c, sent


def test_the_sdk_registers_an_online_river_model_as_a_spec(
        client: tuple[Client, list[Any]]) -> None:
    c, sent = client
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression(l2=0.01)
    assert c.register_model("churn", model, online=True) == 1
    [command] = sent
    assert command.flavor == "river-spec" and command.artifact_uri.endswith(".json")
    data = c.artifacts.read_bytes(command.artifact_digest)
    assert json.loads(data)["spec"] == spec_of(model)
    assert flavors.load_verified(data, command.artifact_digest, "river-spec")[
        "LogisticRegression"].l2 == 0.01
    # offline River models, and an explicit flavor="river", stay pickles
    c.register_model("churn", model)
    c.register_model("churn", model, flavor="river", online=True)
    assert [s.flavor for s in sent[1:]] == ["river", "river"]


def test_the_sdk_refuses_an_online_model_off_the_allow_list(
        client: tuple[Client, list[Any]]) -> None:
    c, sent = client

    class Custom(linear_model.LogisticRegression):
        pass

    with pytest.raises(OnlineSpecError, match=r"Custom.*MODELOG_ONLINE_ALLOW_PICKLE"):
        c.register_model("churn", Custom(), online=True)
    assert sent == []


def test_the_worker_router_skips_forged_registry_events(
        store: ArtifactStore, marker: Path) -> None:
    from modelog.models.monitor import ServingMonitor
    from modelog.streams.topics import Topics
    from modelog.streams.worker import RecordRouter

    digest, uri = store.put_bytes(pickle.dumps(Evil(marker)), suffix=".online.pkl")
    forged_cp = OnlineModelCheckpointed(
        id="cp", time=T0, aggregate=MODEL, model=MODEL, model_version=1, artifact_uri=uri,
        artifact_digest=digest, n_learned=5, mac="00" * 32)
    forged_reg = registration(store, pickle.dumps(Evil(marker)), "river", version=2)
    online = OnlineModelProcessor(store, checkpoint_key=KEY)
    router = RecordRouter(Topics("t."), ServingMonitor(), online=online)
    assert router.observe_registry([forged_cp, forged_reg]) == []
    assert router.registry_errors == 1 and online.refused_checkpoints == 1
    assert online.online_models() == [] and not marker.exists()
