"""Online learning with prequential (test-then-train) evaluation, River style.

:class:`OnlineLearner` wraps a River model and a River metric and does what
:func:`river.evaluate.progressive_val_score` does for one observation: ask the
model for a prediction *before* it sees the label, score that prediction with
the metric, then learn from the label. Fed the same stream, its metric ends
with exactly the value ``progressive_val_score`` reports.

Labels often arrive later than the inputs. Then split the step in two, as
River does for delayed labels: :meth:`OnlineLearner.predict_one` when the
input arrives (keep the prediction), :meth:`OnlineLearner.update` when its
label arrives. :meth:`OnlineLearner.learn_one` is both at once.

Which prediction is scored follows River: ``predict_proba_one`` for a
classifier when the metric works on probabilities (``metric.requires_labels``
is false, e.g. ``LogLoss`` or ``ROCAUC``), ``predict_one`` otherwise.

Checkpoints are :mod:`pickle` bytes (River models only pickle; see
:class:`modelog.models.flavors.RiverFlavor`): restoring one **executes code**,
so only restore bytes you wrote, and pass the digest recorded when they were
stored so :meth:`OnlineLearner.restore` refuses altered bytes before
unpickling them.

Examples
--------
>>> from river import datasets, evaluate, linear_model, metrics, preprocessing
>>> def make():
...     return preprocessing.StandardScaler() | linear_model.LogisticRegression()
>>> stream = list(datasets.Phishing())[:300]
>>> learner = OnlineLearner(make(), metrics.Accuracy(), every=100)
>>> for x, y in stream:
...     _ = learner.learn_one(x, y)
>>> learner.n_learned, [n for n, _ in learner.learning_curve]
(300, [100, 200, 300])
>>> reference = evaluate.progressive_val_score(stream, make(), metrics.Accuracy())
>>> learner.value == reference.get()
True
>>> again = OnlineLearner.restore(learner.checkpoint())
>>> again.n_learned, again.value == learner.value
(300, True)
"""

from __future__ import annotations

from typing import Any

from river import base
from river.metrics.base import Metric, Metrics

from modelog.models.errors import InvalidParameterError, ModelLoadError
from modelog.models.flavors import dump, load, load_verified

__all__ = ["OnlineLearner", "default_metric", "metric_key"]


def default_metric(model: Any) -> Metric:
    """The metric an online model is scored with unless told otherwise.

    ``Accuracy`` for a classifier, ``MAE`` for a regressor.

    Examples
    --------
    >>> from river import linear_model
    >>> type(default_metric(linear_model.LogisticRegression())).__name__
    'Accuracy'
    >>> type(default_metric(linear_model.LinearRegression())).__name__
    'MAE'
    """
    from river import metrics

    if isinstance(model, base.Classifier):
        return metrics.Accuracy()  # type: ignore[no-untyped-call]
    if isinstance(model, base.Regressor):
        return metrics.MAE()  # type: ignore[no-untyped-call]
    raise InvalidParameterError(
        "OnlineLearner", "model", type(model).__name__,
        "must be a River classifier or regressor to get a default metric; pass metric=",
    )


def metric_key(metric: Metric) -> str:
    """The ``MetricsLogged`` key of a prequential metric: ``prequential_<name>``.

    Examples
    --------
    >>> from river import metrics
    >>> metric_key(metrics.Accuracy()), metric_key(metrics.LogLoss())
    ('prequential_accuracy', 'prequential_logloss')
    """
    return "prequential_" + type(metric).__name__.lower()


class OnlineLearner:
    """A River model learning one observation at a time, scored prequentially.

    Parameters
    ----------
    model
        A supervised River estimator (classifier, regressor, or a pipeline
        ending in one). It is updated in place.
    metric
        A River metric (or ``metrics.Metrics``) the model works with.
    every
        Append ``(n_learned, value)`` to :attr:`learning_curve` every this
        many learned observations.

    Attributes
    ----------
    n_learned
        Observations learned so far.
    learning_curve
        ``(n_learned, value)`` points, every ``every`` observations.

    Examples
    --------
    >>> from river import linear_model, metrics
    >>> learner = OnlineLearner(linear_model.LinearRegression(), metrics.MAE(), every=2)
    >>> learner.learn_one({"x": 1.0}, 2.0)
    0.0
    >>> y_pred = learner.predict_one({"x": 2.0})   # the input arrives ...
    >>> learner.update({"x": 2.0}, 4.0, y_pred)    # ... and later its label
    >>> learner.n_learned, learner.learning_curve == [(2, learner.value)]
    (2, True)
    """

    def __init__(self, model: Any, metric: Metric, *, every: int = 100) -> None:
        if every < 1:
            raise InvalidParameterError("OnlineLearner", "every", every, "must be >= 1")
        if not getattr(model, "_supervised", False) or not hasattr(model, "learn_one"):
            raise InvalidParameterError(
                "OnlineLearner", "model", type(model).__name__,
                "must be a supervised River estimator with learn_one(x, y)",
            )
        if not metric.works_with(model):
            raise InvalidParameterError(
                "OnlineLearner", "metric", type(metric).__name__,
                f"does not work with a {type(model).__name__}; pick a metric for this kind "
                "of model (classification or regression)",
            )
        self.model = model
        self.metric = metric
        self.every = every
        self.n_learned = 0
        self.learning_curve: list[tuple[int, float]] = []
        # Same dispatch as river.evaluate.progressive_val_score.
        requires_labels = bool(getattr(metric, "requires_labels", True))
        self._proba = isinstance(model, base.Classifier) and not requires_labels

    # -- learning --------------------------------------------------------------
    def predict_one(self, x: dict[str, Any]) -> Any:
        """The prediction the metric will score for ``x`` (the model does not learn)."""
        if self._proba:
            return self.model.predict_proba_one(x)
        return self.model.predict_one(x)

    def update(self, x: dict[str, Any], y: Any, y_pred: Any) -> None:
        """Score ``y_pred`` (made earlier for ``x``) against ``y``, then learn ``(x, y)``.

        An empty prediction (``None`` or ``{}``, e.g. before the model saw any
        class) is not scored, as in River.
        """
        if y_pred is not None and y_pred != {}:
            self.metric.update(y_true=y, y_pred=y_pred)
        self.model.learn_one(x, y)
        self.n_learned += 1
        if self.n_learned % self.every == 0:
            self.learning_curve.append((self.n_learned, self.value))

    def learn_one(self, x: dict[str, Any], y: Any) -> Any:
        """Test then train on one observation; return the prediction that was scored."""
        y_pred = self.predict_one(x)
        self.update(x, y, y_pred)
        return y_pred

    # -- results ---------------------------------------------------------------
    @property
    def value(self) -> float:
        """The current value of the metric (the first one of a ``metrics.Metrics``)."""
        first = self.metric[0] if isinstance(self.metric, Metrics) else self.metric
        return float(first.get())

    def metric_values(self) -> dict[str, float]:
        """Every metric by its :func:`metric_key`.

        Examples
        --------
        >>> from river import linear_model, metrics
        >>> learner = OnlineLearner(linear_model.LogisticRegression(),
        ...                         metrics.Accuracy() + metrics.LogLoss())
        >>> sorted(learner.metric_values())
        ['prequential_accuracy', 'prequential_logloss']
        """
        parts = list(self.metric) if isinstance(self.metric, Metrics) else [self.metric]
        return {metric_key(m): float(m.get()) for m in parts}

    # -- checkpoints -------------------------------------------------------------
    def checkpoint(self) -> bytes:
        """The learner (model, metric, counters, curve) as ``river``-flavor pickle bytes.

        Loading them runs code: store them where only you write, record their
        SHA-256 (:func:`modelog.models.flavors.digest`) and restore with it.
        """
        return dump(self, "river").data

    @classmethod
    def restore(cls, data: bytes, expected_digest: str | None = None) -> OnlineLearner:
        """The learner :meth:`checkpoint` saved, ready to continue.

        Parameters
        ----------
        data
            Bytes from :meth:`checkpoint`.
        expected_digest
            Their SHA-256 as recorded when stored; when given, mismatching bytes
            raise :class:`~modelog.models.errors.ArtifactDigestMismatch` before
            anything is unpickled.
        """
        obj = (load(data, "river") if expected_digest is None
               else load_verified(data, expected_digest, "river"))
        if not isinstance(obj, cls):
            raise ModelLoadError(
                "river", TypeError(f"the checkpoint holds a {type(obj).__name__}, not an "
                                   f"{cls.__name__}; restore bytes from checkpoint()"),
            )
        return obj

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({type(self.model).__name__}, "
                f"{type(self.metric).__name__}={self.value:.4f}, n_learned={self.n_learned})")
