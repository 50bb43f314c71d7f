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


def fit_torch(data: Any, context: Any) -> Any:
    """A PyTorch trainer: a logistic regression module on the numeric inputs.

    Returns the ``nn.Module`` itself (stored as the ``pytorch`` flavor's state dict); the
    runner scores it on the holdout by calling it on the numeric inputs, in order (the text
    input ``plan`` is left out), reading its one output as the logit of class 1.
    """
    import pandas as pd
    import torch

    frame = data.to_pandas()
    frame = frame[frame["source"] == "traffic"]
    # the numeric inputs in the context's order: the order the runner scores them in
    numeric = [f for f in context.features if pd.api.types.is_numeric_dtype(frame[f])]
    x = torch.tensor(frame[numeric].to_numpy(dtype="float32"))
    y = torch.tensor(frame[context.target].astype(int).to_numpy(dtype="float32"))
    torch.manual_seed(0)

    class Logistic(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(len(numeric), 1)

        def forward(self, inputs: Any) -> Any:
            return self.linear(inputs).squeeze(-1)

    model = Logistic()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(300):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    return model, {"train_loss": float(loss.item())}
