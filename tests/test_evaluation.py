"""Evaluation helpers: numbers equal sklearn.metrics, metrics and PNG logged to a run."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.svm import LinearSVC

from modelog.models.errors import EvaluationError
from modelog.models.evaluation import RunLike, evaluate_classifier, evaluate_regressor

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class MemoryRun:
    """An in-memory run implementing :class:`RunLike` (records what it is given)."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}
        self.artifacts: dict[str, bytes] = {}

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        self.metrics.update(metrics)

    def log_bytes(self, data: bytes, name: str) -> object:
        self.artifacts[name] = data
        return name


class FigureRun(MemoryRun):
    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[str, Any] = {}

    def log_figure(self, figure: Any, name: str) -> object:
        self.figures[name] = figure
        return name


Data = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@pytest.fixture(scope="module")
def binary() -> tuple[LogisticRegression, Data]:
    x, y = make_classification(n_samples=300, n_features=6, flip_y=0.1, random_state=1)
    model = LogisticRegression().fit(x[:200], y[:200])
    return model, (x[:200], y[:200], x[200:], y[200:])


@pytest.fixture(scope="module")
def multiclass() -> tuple[LogisticRegression, Data]:
    x, y = make_classification(n_samples=400, n_features=8, n_informative=5, n_classes=3,
                               random_state=2)
    model = LogisticRegression(max_iter=500).fit(x[:250], y[:250])
    return model, (x[:250], y[:250], x[250:], y[250:])


def test_binary_metrics_equal_sklearn_and_are_logged(
    binary: tuple[LogisticRegression, Data],
) -> None:
    model, (x_tr, ytr, x_te, yte) = binary
    run = MemoryRun()
    assert isinstance(run, RunLike)
    out = evaluate_classifier(model, {"train": (x_tr, ytr), "test": (x_te, yte)}, run=run)
    assert set(out) == {"train", "test"}
    pred = model.predict(x_te)
    t = out["test"]
    assert t["accuracy"] == pytest.approx(skm.accuracy_score(yte, pred))
    assert t["precision"] == pytest.approx(skm.precision_score(yte, pred))
    assert t["recall"] == pytest.approx(skm.recall_score(yte, pred))
    assert t["f1"] == pytest.approx(skm.f1_score(yte, pred))
    assert t["roc_auc"] == pytest.approx(skm.roc_auc_score(yte, model.predict_proba(x_te)[:, 1]))
    tn, fp, fn, tp = skm.confusion_matrix(yte, pred).ravel()
    assert (t["true_negatives"], t["false_positives"], t["false_negatives"],
            t["true_positives"]) == (tn, fp, fn, tp)
    assert run.metrics == {f"{s}_{k}": v for s, ms in out.items() for k, v in ms.items()}
    assert set(run.artifacts) == {"train_confusion_matrix.png", "test_confusion_matrix.png"}
    assert all(png.startswith(PNG_MAGIC) for png in run.artifacts.values())


def test_multiclass_uses_macro_and_ovr(multiclass: tuple[LogisticRegression, Data]) -> None:
    model, (_, _, x_te, yte) = multiclass
    out = evaluate_classifier(model, {"test": (x_te, yte)})["test"]
    pred = model.predict(x_te)
    assert out["precision"] == pytest.approx(skm.precision_score(yte, pred, average="macro"))
    assert out["recall"] == pytest.approx(skm.recall_score(yte, pred, average="macro"))
    assert out["f1"] == pytest.approx(skm.f1_score(yte, pred, average="macro"))
    assert out["roc_auc"] == pytest.approx(
        skm.roc_auc_score(yte, model.predict_proba(x_te), multi_class="ovr"))
    assert "true_positives" not in out


def test_string_labels_and_no_predict_proba() -> None:
    x, y = make_classification(n_samples=200, n_features=4, random_state=3)
    labels = np.where(y == 1, "yes", "no")
    model = LinearSVC().fit(x, labels)
    out = evaluate_classifier(model, {"all": (x, labels)})["all"]
    pred = model.predict(x)
    assert "roc_auc" not in out  # no predict_proba
    assert out["f1"] == pytest.approx(skm.f1_score(labels, pred, pos_label="yes"))


def test_log_figure_is_preferred_when_the_run_has_it(
    binary: tuple[LogisticRegression, Data],
) -> None:
    model, (_, _, x_te, yte) = binary
    run = FigureRun()
    evaluate_classifier(model, {"test": (x_te, yte)}, run=run)
    assert list(run.figures) == ["test_confusion_matrix.png"] and run.artifacts == {}
    ax = run.figures["test_confusion_matrix.png"].axes[0]
    cells = sorted(int(t.get_text()) for t in ax.texts)
    assert cells == sorted(skm.confusion_matrix(yte, model.predict(x_te)).ravel().tolist())


def test_single_class_split_omits_auc(binary: tuple[LogisticRegression, Data]) -> None:
    model, (_, _, x_te, yte) = binary
    only = yte == 1
    out = evaluate_classifier(model, {"positives": (x_te[only], yte[only])})["positives"]
    assert "roc_auc" not in out
    assert all(math.isfinite(v) for v in out.values())


def test_regressor_metrics_equal_sklearn() -> None:
    x, y = make_regression(n_samples=150, n_features=4, noise=5.0, random_state=4)
    model = LinearRegression().fit(x[:100], y[:100])
    run = MemoryRun()
    out = evaluate_regressor(model, {"test": (x[100:], y[100:]), "one": (x[:1], y[:1])}, run=run)
    pred = model.predict(x[100:])
    assert out["test"] == pytest.approx({
        "mae": skm.mean_absolute_error(y[100:], pred),
        "rmse": math.sqrt(skm.mean_squared_error(y[100:], pred)),
        "r2": skm.r2_score(y[100:], pred),
    })
    assert set(out["one"]) == {"mae", "rmse"}  # r2 undefined on one row
    assert run.metrics["test_rmse"] == out["test"]["rmse"]
    assert run.artifacts == {}


def test_bad_splits_name_field_value_and_rule(binary: tuple[LogisticRegression, Data]) -> None:
    model, (_, _, x_te, yte) = binary
    with pytest.raises(EvaluationError, match="non-empty mapping"):
        evaluate_classifier(model, {})
    with pytest.raises(EvaluationError, match=r"splits\['test'\].*same number of rows"):
        evaluate_classifier(model, {"test": (x_te, yte[:-1])})
    with pytest.raises(EvaluationError, match="at least one row"):
        evaluate_regressor(model, {"test": (x_te[:0], yte[:0])})
