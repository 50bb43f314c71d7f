"""Evaluate fitted models on named splits, and log the numbers to a run.

:func:`evaluate_classifier` and :func:`evaluate_regressor` take any model
with scikit-learn's ``predict`` (and ``predict_proba`` for ROC AUC) and a
mapping ``split name -> (X, y)``; they return ``{split: {metric: value}}``.
Given a run (anything with ``log_metrics`` and ``log_artifact``, such as the
SDK's ``Run``), they also log every metric as ``f"{split}_{metric}"`` and, for
classifiers, each split's confusion matrix as a PNG figure.

Metrics that are undefined for a split (ROC AUC when only one class occurs,
R2 with fewer than two samples) are left out rather than reported as NaN,
since a run only accepts finite numbers.

Examples
--------
>>> from sklearn.datasets import make_classification
>>> from sklearn.linear_model import LogisticRegression
>>> X, y = make_classification(n_samples=200, random_state=0)
>>> model = LogisticRegression().fit(X[:150], y[:150])
>>> scores = evaluate_classifier(model, {"train": (X[:150], y[:150]), "test": (X[150:], y[150:])})
>>> sorted(scores["test"])[:6]
['accuracy', 'f1', 'false_negatives', 'false_positives', 'precision', 'recall']
>>> 0.5 < scores["test"]["roc_auc"] <= 1.0
True
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from modelog.models.errors import EvaluationError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "FigureRunLike",
    "RunLike",
    "confusion_matrix_figure",
    "evaluate_classifier",
    "evaluate_regressor",
]

Split = tuple[Any, Any]
"""``(X, y)``: features in any form the model's ``predict`` accepts, and targets."""


@runtime_checkable
class RunLike(Protocol):
    """What evaluation needs of a run: metrics and files (the SDK's ``Run`` fits)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Record several metric values at ``step``."""
        ...

    def log_bytes(self, data: bytes, name: str) -> object:
        """Store ``data`` with the run as the file ``name``."""
        ...


@runtime_checkable
class FigureRunLike(Protocol):
    """A run that stores matplotlib figures itself (preferred to PNG bytes)."""

    def log_figure(self, figure: Figure, name: str) -> object:
        """Store ``figure`` as ``name``."""
        ...


def _check_splits(splits: Mapping[str, Split]) -> None:
    if not isinstance(splits, Mapping) or not splits:
        raise EvaluationError("splits", splits, "must be a non-empty mapping of name -> (X, y)")
    for name, pair in splits.items():
        if not isinstance(name, str) or not name:
            raise EvaluationError("splits", name, "split names must be non-empty strings")
        if not isinstance(pair, tuple | list) or len(pair) != 2:
            raise EvaluationError(f"splits[{name!r}]", pair, "must be an (X, y) pair")
        n_x, n_y = len(pair[0]), len(pair[1])
        if n_y == 0:
            raise EvaluationError(f"splits[{name!r}]", "0 rows", "must contain at least one row")
        if n_x != n_y:
            raise EvaluationError(
                f"splits[{name!r}]", f"{n_x} rows of X, {n_y} of y",
                "X and y must have the same number of rows",
            )


def _finite(metrics: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}


def _log_metrics(run: RunLike | None, results: Mapping[str, Mapping[str, float]]) -> None:
    if run is None:
        return
    flat = {f"{split}_{key}": value for split, ms in results.items() for key, value in ms.items()}
    if flat:
        run.log_metrics(flat)


# -- classifiers -------------------------------------------------------------------------
def _classes(model: Any, splits: Mapping[str, Split], preds: Mapping[str, Any]) -> list[Any]:
    known = getattr(model, "classes_", None)
    if known is not None:
        return list(known)
    seen = np.concatenate([np.asarray(y) for _, y in splits.values()] + list(preds.values()))
    return list(np.unique(seen))


def _classification_metrics(
    y: Any, pred: Any, proba: Any | None, classes: Sequence[Any]
) -> tuple[dict[str, float], np.ndarray]:
    from sklearn import metrics as skm

    binary = len(classes) == 2
    avg: dict[str, Any] = (
        {"average": "binary", "pos_label": classes[1]} if binary
        else {"average": "macro", "labels": list(classes)}
    )
    out = {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred, zero_division=0, **avg),
        "recall": skm.recall_score(y, pred, zero_division=0, **avg),
        "f1": skm.f1_score(y, pred, zero_division=0, **avg),
    }
    matrix = skm.confusion_matrix(y, pred, labels=list(classes))
    if binary:
        tn, fp, fn, tp = matrix.ravel()
        out |= {"true_negatives": tn, "false_positives": fp,
                "false_negatives": fn, "true_positives": tp}
    if proba is not None and len(np.unique(np.asarray(y))) > 1:
        if binary:
            out["roc_auc"] = skm.roc_auc_score(np.asarray(y) == classes[1], proba[:, 1])
        elif len(np.unique(np.asarray(y))) == len(classes):  # ovr needs every class present
            out["roc_auc"] = skm.roc_auc_score(y, proba, multi_class="ovr", labels=list(classes))
    return _finite(out), matrix


def confusion_matrix_figure(matrix: Any, labels: Sequence[Any], title: str = "") -> Figure:
    """A matplotlib figure of a confusion matrix (rows: true label, columns: predicted).

    It is drawn on a standalone ``Figure`` (Agg canvas), so no global pyplot
    state or GUI backend is involved.

    Examples
    --------
    >>> fig = confusion_matrix_figure([[5, 1], [2, 7]], ["no", "yes"], title="test")
    >>> fig.axes[0].get_xlabel()
    'predicted'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cm = np.asarray(matrix)
    size = max(3.0, 0.5 * len(labels) + 2.0)
    fig = Figure(figsize=(size, size), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(cm, cmap="Blues")
    ticks = range(len(labels))
    ax.set_xticks(ticks, [str(label) for label in labels], rotation=45, ha="right")
    ax.set_yticks(ticks, [str(label) for label in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    threshold = cm.max() / 2 if cm.size else 0
    for (i, j), count in np.ndenumerate(cm):
        ax.text(j, i, str(count), ha="center", va="center",
                color="white" if count > threshold else "black")
    return fig


def _log_figure(run: RunLike, fig: Figure, name: str) -> None:
    if isinstance(run, FigureRunLike):
        run.log_figure(fig, name)
        return
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    run.log_bytes(buffer.getvalue(), name)


def evaluate_classifier(
    model: Any, splits: Mapping[str, Split], *, run: RunLike | None = None
) -> dict[str, dict[str, float]]:
    """Accuracy, precision, recall, F1, ROC AUC and confusion-matrix counts per split.

    Parameters
    ----------
    model
        A fitted classifier with ``predict`` (and optionally ``predict_proba``,
        whose columns follow ``model.classes_``).
    splits
        ``{name: (X, y)}``, e.g. ``{"train": ..., "test": ...}``.
    run
        When given, every metric is logged as ``f"{split}_{metric}"`` and each
        split's confusion matrix as ``f"{split}_confusion_matrix.png"`` (through
        ``run.log_figure`` when the run has it, else ``run.log_artifact`` of a
        temporary PNG).

    Returns
    -------
    dict
        ``{split: {metric: value}}``. With two classes, precision/recall/F1 are
        those of the positive class (``classes_[1]``) and the four cells of the
        confusion matrix are included as ``true_negatives``, ``false_positives``,
        ``false_negatives``, ``true_positives``; with more classes they are
        macro averages. ``roc_auc`` (one-vs-rest for multiclass) needs
        ``predict_proba`` and every class present in the split. A class never
        predicted counts as precision 0.
    """
    _check_splits(splits)
    preds = {name: np.asarray(model.predict(x)) for name, (x, _) in splits.items()}
    classes = _classes(model, splits, preds)
    has_proba = callable(getattr(model, "predict_proba", None))
    results: dict[str, dict[str, float]] = {}
    matrices: dict[str, np.ndarray] = {}
    for name, (x, y) in splits.items():
        proba = np.asarray(model.predict_proba(x)) if has_proba else None
        results[name], matrices[name] = _classification_metrics(y, preds[name], proba, classes)
    _log_metrics(run, results)
    if run is not None:
        for name, matrix in matrices.items():
            fig = confusion_matrix_figure(matrix, classes, title=f"{name} confusion matrix")
            _log_figure(run, fig, f"{name}_confusion_matrix.png")
    return results


# -- regressors --------------------------------------------------------------------------
def evaluate_regressor(
    model: Any, splits: Mapping[str, Split], *, run: RunLike | None = None
) -> dict[str, dict[str, float]]:
    """MAE, RMSE and R2 per split; logged as ``f"{split}_{metric}"`` when ``run`` is given.

    R2 is left out for splits with fewer than two rows (it is undefined).

    Examples
    --------
    >>> from sklearn.linear_model import LinearRegression
    >>> X = [[0.0], [1.0], [2.0], [3.0]]
    >>> model = LinearRegression().fit(X, [1.0, 3.0, 5.0, 7.0])
    >>> scores = evaluate_regressor(model, {"test": (X, [1.0, 3.0, 5.0, 8.0])})
    >>> {k: round(v, 3) for k, v in scores["test"].items()}
    {'mae': 0.25, 'rmse': 0.5, 'r2': 0.963}
    """
    from sklearn import metrics as skm

    _check_splits(splits)
    results: dict[str, dict[str, float]] = {}
    for name, (x, y) in splits.items():
        pred = np.asarray(model.predict(x))
        scores = {
            "mae": skm.mean_absolute_error(y, pred),
            "rmse": math.sqrt(skm.mean_squared_error(y, pred)),
        }
        if len(pred) > 1:
            scores["r2"] = skm.r2_score(y, pred)
        results[name] = _finite(scores)
    _log_metrics(run, results)
    return results
