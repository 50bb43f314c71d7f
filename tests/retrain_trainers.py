"""Trainers of tests/test_retrainer.py, configured on the runner by name (retrain_trainers:fit).

The runner's trainer process imports this module (``PYTHONPATH`` holds ``tests/``).
"""

from __future__ import annotations

import time
from typing import Any


def churn_pipeline() -> Any:
    """Logistic regression on the numeric inputs (the string input is dropped)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    select = ColumnTransformer([("num", "passthrough", ["usage", "tenure"])])
    return Pipeline([("select", select), ("clf", LogisticRegression())])


def fit(data: Any, context: Any) -> Any:
    """Fit on the labelled traffic of the window (recent behaviour), return model + metrics."""
    frame = data.to_pandas()
    frame = frame[frame["source"] == "traffic"]
    model = churn_pipeline().fit(frame[context.features], frame[context.target].astype(int))
    accuracy = float(model.score(frame[context.features], frame[context.target].astype(int)))
    return model, {"train_accuracy": accuracy}


def fit_slow(data: Any, context: Any) -> Any:
    """``fit`` after a few seconds (to be killed mid-job)."""
    time.sleep(6)
    return fit(data, context)


def fit_raises(data: Any, context: Any) -> Any:
    raise ValueError(f"bad trainer for {context.model}: cannot fit {data.num_rows} rows")


def fit_hangs(data: Any, context: Any) -> Any:
    time.sleep(3600)


def fit_not_a_model(data: Any, context: Any) -> Any:
    return "definitely not a model"
