"""Calling a served model: its answer to one request or a batch, with its class probabilities.

The predictor (:mod:`modelog.streams.serving`) decides which version answers and
logs what it answered; this module only calls the model. River models answer
``predict_one`` (and ``predict_proba_one`` when they are classifiers);
scikit-learn models answer ``predict`` on a DataFrame of the columns they were
fit on (and ``predict_proba`` over ``classes_``). Probabilities are returned as
the model gave them (class -> probability), unchecked: the caller validates
them with :func:`~modelog.models.validation.check_probabilities`, and a model
whose probabilities cannot be had still answers.

Examples
--------
>>> import datetime as dt, pandas as pd
>>> from sklearn.linear_model import LogisticRegression
>>> from modelog.models.registry import VersionInfo
>>> X = pd.DataFrame({"x": [0.0, 1.0, 2.0, 3.0]})
>>> model = LogisticRegression().fit(X, ["no", "no", "yes", "yes"])
>>> info = VersionInfo("m", 1, None, "sklearn", "", "", (), "", False,
...                    dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "app", "e1")
>>> output, proba = call_one(model, {"x": 3.0}, info)
>>> output, {str(k): round(v, 2) for k, v in proba.items()}   # keys as classes_ holds them
('yes', {'no': 0.19, 'yes': 0.81})
>>> [o for o, _ in call_many(model, [{"x": 0.0}, {"x": 3.0}], info)]
['no', 'yes']
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from modelog.models.flavors import fitted_columns
from modelog.models.registry import VersionInfo
from modelog.models.validation import check_output

__all__ = ["Answer", "PredictFn", "call_many", "call_one", "frame_columns"]

_log = logging.getLogger(__name__)

Answer = tuple[Any, Any]
"""``(output, probabilities)``: the checked output, and the class probabilities as the
model gave them (``None``: none)."""

PredictFn = Callable[[Any, Mapping[str, Any]], Any]
"""``predict_fn(model, inputs) -> output``: a custom call of the model for one request."""


def frame_columns(model: Any, info: VersionInfo) -> list[str]:
    """The frame's columns for ``model``: those it was fit on (a scikit-learn model fit on a
    DataFrame refuses any other set or order), else its version's signature (the training
    dataset's columns but the target: a request must still carry them all)."""
    return fitted_columns(model) or [c.name for c in info.signature]


def _output(value: Any) -> Any:
    return check_output(value.item() if hasattr(value, "item") else value,
                        "PredictionMade", "output")


def _guarded(fn: Callable[[Any], Any], arg: Any) -> Any:
    try:
        return fn(arg)
    except Exception as exc:  # the prediction is logged without them
        _log.debug("class probabilities failed: %s", exc)
        return None


def _sklearn_proba(model: Any, frame: Any) -> list[dict[Any, float]] | None:
    """Rows of class -> probability from ``predict_proba`` (``None``: none given)."""
    if not hasattr(model, "predict_proba"):
        return None
    classes = getattr(model, "classes_", None)
    matrix = _guarded(model.predict_proba, frame)
    if classes is None or matrix is None or getattr(matrix, "ndim", 0) != 2 \
            or matrix.shape[1] != len(classes):
        return None
    keys = list(classes)
    return [dict(zip(keys, row, strict=True)) for row in matrix.tolist()]


def call_one(model: Any, inputs: dict[str, Any], info: VersionInfo, *,
             predict_fn: PredictFn | None = None, probabilities: bool = True) -> Answer:
    """The model's answer to one request (``predict_fn`` given: its output, no probabilities)."""
    proba: Any = None
    if predict_fn is not None:
        out = predict_fn(model, inputs)
    elif hasattr(model, "predict_one"):
        out = model.predict_one(inputs)
        if probabilities and hasattr(model, "predict_proba_one"):
            proba = _guarded(model.predict_proba_one, inputs)
    else:
        import pandas as pd

        cols = frame_columns(model, info) or list(inputs)
        frame = pd.DataFrame([[inputs.get(c) for c in cols]], columns=cols)
        out = model.predict(frame)[0]
        rows = _sklearn_proba(model, frame) if probabilities else None
        proba = None if rows is None else rows[0]
    return _output(out), proba


def call_many(model: Any, rows: list[dict[str, Any]], info: VersionInfo, *,
              predict_fn: PredictFn | None = None, probabilities: bool = True) -> list[Answer]:
    """The model's answers to a batch: one ``predict`` (and ``predict_proba``) call for a
    scikit-learn model, one call per row otherwise."""
    if predict_fn is not None or hasattr(model, "predict_one") or len(rows) == 1:
        return [call_one(model, row, info, predict_fn=predict_fn, probabilities=probabilities)
                for row in rows]
    import pandas as pd

    cols = frame_columns(model, info) or list(rows[0])
    frame = pd.DataFrame([[row.get(c) for c in cols] for row in rows], columns=cols)
    outputs = [_output(v) for v in model.predict(frame)]
    probas = _sklearn_proba(model, frame) if probabilities else None
    if probas is None or len(probas) != len(outputs):
        return [(o, None) for o in outputs]
    return list(zip(outputs, probas, strict=True))
