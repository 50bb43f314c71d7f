"""Model flavors: round-trips, the skops allow-list, digest checks before loading."""

from __future__ import annotations

import hashlib
import pickle
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modelog.errors import ModelogError
from modelog.models import flavors
from modelog.models.errors import (
    ArtifactDigestMismatch,
    ModelLoadError,
    ModelsError,
    UnknownFlavorError,
    UntrustedTypesError,
)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    x, y = make_classification(n_samples=120, n_features=5, random_state=0)
    return x, y


@pytest.fixture(scope="module")
def sk_model(data: tuple[np.ndarray, np.ndarray]) -> LogisticRegression:
    x, y = data
    return LogisticRegression().fit(x, y)


class Doubler(BaseEstimator, TransformerMixin):  # type: ignore[misc]
    """A custom transformer: its type is not on the sklearn flavor's allow-list."""

    def fit(self, x: Any, y: Any = None) -> Doubler:
        return self

    def transform(self, x: Any) -> Any:
        return np.asarray(x) * 2


# -- sklearn -------------------------------------------------------------------------
def test_sklearn_round_trip_gives_identical_predictions(
    sk_model: LogisticRegression, data: tuple[np.ndarray, np.ndarray]
) -> None:
    x, _ = data
    art = flavors.dump(sk_model)
    assert (art.flavor, art.format) == ("sklearn", "skops")
    assert {"scikit-learn", "skops", "numpy", "python"} <= set(art.library_versions)
    assert art.digest == hashlib.sha256(art.data).hexdigest()
    again = flavors.load(art.data, "sklearn")
    assert type(again) is LogisticRegression
    np.testing.assert_array_equal(again.predict(x), sk_model.predict(x))
    np.testing.assert_array_equal(again.predict_proba(x), sk_model.predict_proba(x))


def test_skops_refuses_untrusted_type_and_names_it(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = data
    pipe = make_pipeline(Doubler(), StandardScaler(), LogisticRegression()).fit(x, y)
    art = flavors.dump(pipe)
    assert art.flavor == "sklearn"  # detected through the sklearn base classes
    with pytest.raises(UntrustedTypesError) as info:
        flavors.load(art.data, "sklearn")
    name = f"{__name__}.Doubler"
    assert info.value.types == [name]
    assert name in str(info.value) and "trusted=" in str(info.value)
    assert isinstance(info.value, ModelsError) and isinstance(info.value, ModelogError)
    # explicitly trusting it loads the pipeline
    again = flavors.load(art.data, "sklearn", trusted=[name])
    np.testing.assert_array_equal(again.predict(x), pipe.predict(x))


def test_sklearn_garbage_bytes_give_load_error() -> None:
    with pytest.raises(ModelLoadError, match="sklearn"):
        flavors.load(b"definitely not a zip archive", "sklearn")


# -- pytorch -------------------------------------------------------------------------
def test_pytorch_round_trip_into_a_module_and_as_state_dict() -> None:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    x = torch.randn(8, 4)
    art = flavors.dump(net)
    assert (art.flavor, art.format) == ("pytorch", "torch-state-dict")
    assert "torch" in art.library_versions

    fresh = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
    assert not torch.equal(fresh(x), net(x))
    loaded = flavors.load(art.data, "pytorch", model=fresh)
    assert loaded is fresh
    assert torch.equal(loaded(x), net(x))

    state = flavors.load(art.data, "pytorch")
    assert set(state) == set(net.state_dict())
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    # a state dict is detected as the pytorch flavor too
    assert flavors.detect_flavor(net.state_dict()) == "pytorch"


def test_pytorch_refuses_pickled_code_and_mismatched_modules() -> None:
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"weight": torch.zeros(1), "hook": Doubler()}, buf)  # a checkpoint with code
    with pytest.raises(ModelLoadError, match="pytorch"):  # weights_only rejects the object
        flavors.load(buf.getvalue(), "pytorch")
    art = flavors.dump(torch.nn.Linear(2, 1))
    with pytest.raises(ModelLoadError, match="pytorch"):
        flavors.load(art.data, "pytorch", model=torch.nn.Linear(3, 1))


# -- river ---------------------------------------------------------------------------
def test_river_round_trip_gives_identical_predictions() -> None:
    from river import linear_model

    model = linear_model.LogisticRegression()
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = {"a": float(rng.normal()), "b": float(rng.normal())}
        model.learn_one(x, x["a"] + x["b"] > 0)
    art = flavors.dump(model)
    assert (art.flavor, art.format) == ("river", "pickle")
    again = flavors.load_verified(art.data, art.digest, "river")
    probe = [{"a": 0.3, "b": -1.0}, {"a": 2.0, "b": 0.5}, {"a": -1.0, "b": -1.0}]
    expected = [model.predict_proba_one(x) for x in probe]
    assert [again.predict_proba_one(x) for x in probe] == expected
    assert "pickle" in flavors.RiverFlavor.__doc__  # type: ignore[operator]


# -- digests -------------------------------------------------------------------------
def test_digest_mismatch_raises_before_deserializing(sk_model: LogisticRegression) -> None:
    good = flavors.dump(sk_model)
    # Bytes that would fail to unpickle / unzip: if they were deserialized we would
    # see a ModelLoadError, not the digest error.
    corrupt = b"\x80\x05garbage that is not a pickle"
    with pytest.raises(ModelLoadError):
        flavors.load(corrupt, "river")
    for flavor in ("river", "sklearn", "pytorch"):
        with pytest.raises(ArtifactDigestMismatch) as info:
            flavors.load_verified(corrupt, good.digest, flavor)
        assert info.value.expected == good.digest
        assert info.value.actual == flavors.digest(corrupt)
    # a pickle whose loading has a visible effect is not loaded on a mismatch...
    payload = pickle.dumps(_Trap())
    with pytest.raises(ArtifactDigestMismatch):
        flavors.load_verified(payload, "0" * 64, "river")
    assert _Trap.loaded == 0
    # ...and is when the digest matches (so the check above was meaningful)
    flavors.load_verified(payload, flavors.digest(payload), "river")
    assert _Trap.loaded == 1
    # and the right digest loads
    assert type(flavors.load_verified(good.data, good.digest, "sklearn")) is LogisticRegression


class _Trap:
    loaded = 0

    def __init__(self) -> None:
        self.armed = True

    def __setstate__(self, state: Any) -> None:
        type(self).loaded += 1


# -- detection and registry ----------------------------------------------------------
def test_detect_flavor_and_unknown_flavor() -> None:
    from river import tree

    assert flavors.detect_flavor(LogisticRegression()) == "sklearn"
    assert flavors.detect_flavor(tree.HoeffdingTreeClassifier()) == "river"
    with pytest.raises(UnknownFlavorError, match="flavor="):
        flavors.detect_flavor(object())
    with pytest.raises(UnknownFlavorError, match="onnx"):
        flavors.load(b"", "onnx")


# -- signatures ----------------------------------------------------------------------
def test_infer_signature_from_dataframe_and_table() -> None:
    df = pd.DataFrame({
        "age": [42, 7], "plan": ["pro", "free"], "score": [0.5, 0.1],
        "tier": pd.Categorical(["a", "b"]), "active": [True, False],
    })
    expected = [("age", "int64"), ("plan", "string"), ("score", "double"),
                ("tier", "string"), ("active", "bool")]
    assert flavors.infer_signature(df) == expected
    table = pa.table({"age": pa.array([1], pa.int32()), "plan": pa.array(["x"], pa.large_string())})
    assert flavors.infer_signature(table) == [("age", "int32"), ("plan", "string")]
    assert flavors.infer_signature(table.to_batches()[0]) == [("age", "int32"), ("plan", "string")]
    with pytest.raises(TypeError, match="DataFrame"):
        flavors.infer_signature(np.zeros((2, 2)))
