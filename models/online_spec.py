"""Online River models as a *specification*: allow-listed classes and their hyperparameters.

A registered online model is not a pickle a worker must trust: it is a JSON
document naming River classes from a fixed allow-list (:data:`ALLOWED`) and
the values they were constructed with. :func:`spec_of` writes it from an
estimator (recursively: pipelines, unions, ensembles, optimizers, losses,
schedulers, initializers, splitters are specs too), :func:`build` makes a
fresh, untrained estimator from it and imports nothing but the River modules
of the allow-list. Values are only ``None``, booleans, numbers, strings, lists
and dicts (with string keys); a nested estimator is a dict with a ``"class"``
key. Anything else -- a class off the list, a function, an object -- raises
:class:`~modelog.models.errors.OnlineSpecError` naming it.

A specification carries hyperparameters, not learned state: the worker starts
the learner as ``estimator.clone()`` would.

Spec shapes::

    {"class": "river.linear_model.LogisticRegression", "params": {"l2": 0.1, ...}}
    {"class": "river.compose.Pipeline", "steps": [["StandardScaler", {...}], ...]}
    {"class": "river.compose.Select", "args": ["age", "plan"], "params": {}}

Imports only River (lazily), the standard library and :mod:`modelog.models`.

Examples
--------
>>> from river import linear_model, optim, preprocessing
>>> model = preprocessing.StandardScaler() | linear_model.LogisticRegression(
...     optimizer=optim.SGD(0.05))
>>> spec = spec_of(model)
>>> spec["class"], [name for name, _ in spec["steps"]]
('river.compose.Pipeline', ['StandardScaler', 'LogisticRegression'])
>>> spec["steps"][1][1]["params"]["optimizer"]["params"]["lr"]
{'class': 'river.optim.schedulers.Constant', 'params': {'learning_rate': 0.05}}
>>> again = build(json.loads(json.dumps(spec)))
>>> again
Pipeline (
  StandardScaler (
    with_std=True
    window_size=None
  ),
  LogisticRegression (
    optimizer=SGD (
      lr=Constant (
        learning_rate=0.05
      )
    )
    loss=Log (
      weight_pos=1.
      weight_neg=1.
    )
    l2=0.
    l1=0.
    intercept_init=0.
    intercept_lr=Constant (
      learning_rate=0.01
    )
    clip_gradient=1e+12
    initializer=Zeros ()
  )
)
>>> build({"class": "os.system", "args": ["echo hi"]})
Traceback (most recent call last):
...
modelog.models.errors.OnlineSpecError: river class 'os.system' is not on modelog's online-model \
allow-list ...
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Mapping
from typing import Any

from modelog.models.errors import OnlineSpecError

__all__ = ["ALLOWED", "SPEC_FORMAT", "build", "dumps", "loads", "spec_of"]

SPEC_FORMAT = "modelog.river-spec/1"
"""The ``format`` field of a serialized specification (:func:`dumps`)."""

ALLOWED: dict[str, tuple[str, ...]] = {
    "river.compose": ("Discard", "Pipeline", "Prefixer", "Renamer", "Select", "Suffixer",
                      "TransformerProduct", "TransformerUnion"),
    "river.drift": ("ADWIN", "KSWIN", "NoDrift", "PageHinkley"),
    "river.ensemble": ("ADWINBaggingClassifier", "ADWINBoostingClassifier", "AdaBoostClassifier",
                       "BOLEClassifier", "BaggingClassifier", "BaggingRegressor", "EWARegressor",
                       "LeveragingBaggingClassifier", "SRPClassifier", "SRPRegressor",
                       "StackingClassifier", "VotingClassifier"),
    "river.feature_extraction": ("Agg", "BagOfWords", "PolynomialExtender", "RBFSampler",
                                 "TFIDF", "TargetAgg"),
    "river.forest": ("AMFClassifier", "AMFRegressor", "ARFClassifier", "ARFRegressor",
                     "OXTRegressor"),
    "river.linear_model": ("ALMAClassifier", "AdPredictor", "BayesianLinearRegression",
                           "LinearRegression", "LogisticRegression", "PAClassifier",
                           "PARegressor", "Perceptron", "SoftmaxRegression"),
    "river.naive_bayes": ("BernoulliNB", "ComplementNB", "GaussianNB", "MultinomialNB"),
    "river.neighbors": ("KNNClassifier", "KNNRegressor", "LazySearch", "SWINN"),
    "river.optim": ("AMSGrad", "AdaBound", "AdaDelta", "AdaGrad", "AdaMax", "Adam", "Averager",
                    "FTRLProximal", "Momentum", "Nadam", "NesterovMomentum", "Newton", "RMSProp",
                    "SGD"),
    "river.optim.initializers": ("Constant", "Normal", "Zeros"),
    "river.optim.losses": ("Absolute", "BinaryFocalLoss", "Cauchy", "CrossEntropy",
                           "EpsilonInsensitiveHinge", "Hinge", "Huber", "Log", "Poisson",
                           "Quantile", "Squared"),
    "river.optim.schedulers": ("Constant", "InverseScaling", "Optimal"),
    "river.preprocessing": ("AdaptiveStandardScaler", "Binarizer", "FeatureHasher",
                            "MaxAbsScaler", "MinMaxScaler", "Normalizer", "OneHotEncoder",
                            "OrdinalEncoder", "PredClipper", "PreviousImputer", "RobustScaler",
                            "StandardScaler", "StatImputer", "TargetMinMaxScaler",
                            "TargetStandardScaler"),
    "river.stats": ("Count", "EWMean", "EWVar", "Max", "Mean", "Min", "Quantile", "Sum", "Var"),
    "river.tree": ("ExtremelyFastDecisionTreeClassifier", "HoeffdingAdaptiveTreeClassifier",
                   "HoeffdingAdaptiveTreeRegressor", "HoeffdingTreeClassifier",
                   "HoeffdingTreeRegressor", "ISOUPTreeRegressor", "LASTClassifier",
                   "SGTClassifier", "SGTRegressor"),
    "river.tree.splitter": ("DynamicQuantizer", "EBSTSplitter", "ExhaustiveSplitter",
                            "GaussianSplitter", "HistogramSplitter", "QOSplitter",
                            "StaticQuantizer", "TEBSTSplitter"),
}
"""The River classes a specification may name, by public module (the fixed allow-list)."""

#: Classes whose positional steps are kept in a ``{name: step}`` mapping (named steps).
_NAMED_STEPS = {"river.compose.Pipeline": "steps", "river.compose.TransformerUnion": "transformers",
                "river.compose.TransformerProduct": "transformers"}
_SPEC_KEYS = frozenset({"class", "params", "args", "steps"})


def _error(path: str, where: str) -> OnlineSpecError:
    return OnlineSpecError(path, sorted(ALLOWED), where)


def _class_at(path: str) -> type:
    """The allow-listed class at ``path``; imports only allow-listed River modules."""
    module, _, name = path.rpartition(".")
    if name not in ALLOWED.get(module, ()):
        raise _error(path, "")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise OnlineSpecError(path, sorted(ALLOWED), "",
                              f"the installed River has no {path} ({exc})") from exc
    if not isinstance(cls, type):
        raise _error(path, "")
    return cls


def _path_of(obj: object, ctx: str = "") -> str:
    """The allow-list path of ``type(obj)``, or :class:`OnlineSpecError`."""
    cls = type(obj)
    for module, names in ALLOWED.items():
        if cls.__name__ in names and cls.__module__.startswith(module):
            try:
                if getattr(importlib.import_module(module), cls.__name__) is cls:
                    return f"{module}.{cls.__name__}"
            except ImportError:
                continue
    raise _error(f"{cls.__module__}.{cls.__qualname__}", ctx.removesuffix(" -> "))


# -- estimator -> spec --------------------------------------------------------------
def spec_of(estimator: Any) -> dict[str, Any]:
    """The JSON-able specification of a River estimator (hyperparameters only).

    A parameter whose value cannot be written (a function, a metric...) is
    written as ``None`` when its default is ``None`` and the estimator built
    from the spec gets the very same value by itself (e.g. the distance
    function ``neighbors.KNNClassifier`` gives its search engine); otherwise
    it is refused.

    Raises
    ------
    OnlineSpecError
        A class off :data:`ALLOWED`, or a parameter value that is not a plain
        value or an allow-listed estimator (e.g. a function).
    """
    defaulted: list[OnlineSpecError] = []
    spec = _spec(estimator, "", defaulted)
    if defaulted and _fingerprint(build(spec)) != _fingerprint(estimator):
        raise defaulted[0]
    return spec


def _spec(obj: Any, ctx: str, defaulted: list[OnlineSpecError]) -> dict[str, Any]:
    path = _path_of(obj, ctx)
    if path in _NAMED_STEPS:
        steps = getattr(obj, _NAMED_STEPS[path])
        return {"class": path, "steps": [[str(name), _spec(step, ctx, defaulted)]
                                         for name, step in steps.items()]}
    out: dict[str, Any] = {"class": path}
    params: dict[str, Any] = {}
    owner = type(obj).__name__
    for name, param in inspect.signature(type(obj).__init__).parameters.items():
        if name == "self":
            continue
        if param.kind == param.VAR_POSITIONAL:
            out["args"] = _value(getattr(obj, name, ()), param, f"{ctx}{owner}(*{name})",
                                 defaulted)
        elif param.kind == param.VAR_KEYWORD:
            for key, value in dict(getattr(obj, name, {})).items():
                params[str(key)] = _value(value, None, f"{ctx}{owner}.{key}", defaulted)
        else:
            params[name] = _value(getattr(obj, name), param, f"{ctx}{owner}.{name}", defaulted)
    out["params"] = params
    return out


def _value(value: Any, param: inspect.Parameter | None, where: str,
           defaulted: list[OnlineSpecError]) -> Any:
    from river import base

    if value is None or isinstance(value, bool | int | float | str):
        return value
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    if isinstance(value, list | tuple):
        return [_value(v, None, where, defaulted) for v in value]
    if isinstance(value, set | frozenset):
        items = [_value(v, None, where, defaulted) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) for k in value) or "class" in value:
            raise OnlineSpecError(where, sorted(ALLOWED), where,
                                  "a dict value needs string keys other than 'class'")
        return {k: _value(v, None, f"{where}[{k!r}]", defaulted) for k, v in value.items()}
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    if isinstance(value, base.Base):
        try:
            return _spec(value, f"{where} -> ", defaulted)
        except OnlineSpecError as exc:
            if param is None or param.default is not None or exc.name != kind:
                raise
            defaulted.append(exc)  # e.g. a metric the class would create itself
            return None
    error = OnlineSpecError(kind, sorted(ALLOWED), where,
                            "only None, booleans, numbers, strings, lists, dicts and "
                            "allow-listed River estimators can be parameter values")
    if param is None or param.default is not None:
        raise error
    defaulted.append(error)  # e.g. a distance function the class would pick itself
    return None


def _fingerprint(obj: Any) -> Any:
    """A comparable picture of an estimator's construction (classes, parameters, functions)."""
    from river import base

    if isinstance(obj, base.Base):
        cls = type(obj)
        params = {name: _fingerprint(getattr(obj, name, None))
                  for name in inspect.signature(cls.__init__).parameters if name != "self"}
        return (cls.__module__, cls.__qualname__, sorted(params.items(), key=lambda kv: kv[0]))
    if isinstance(obj, Mapping):
        return sorted(((str(k), _fingerprint(v)) for k, v in obj.items()), key=lambda kv: kv[0])
    if isinstance(obj, list | tuple | set | frozenset):
        return [_fingerprint(v) for v in obj]
    if callable(obj):
        return ("callable", getattr(obj, "__module__", None), getattr(obj, "__qualname__",
                                                                      repr(obj)))
    return repr(obj)


# -- spec -> estimator ----------------------------------------------------------------
def build(spec: Mapping[str, Any]) -> Any:
    """A fresh River estimator from a specification written by :func:`spec_of`.

    Only the classes of :data:`ALLOWED` are imported and constructed, with the
    plain values of the spec.

    Raises
    ------
    OnlineSpecError
        The spec names a class off the allow-list, has an unexpected shape,
        or the class refuses its parameters.
    """
    if not isinstance(spec, Mapping) or not isinstance(spec.get("class"), str):
        raise OnlineSpecError(repr(spec)[:80], sorted(ALLOWED), "",
                              "a spec is a dict with a 'class' string")
    extra = set(spec) - _SPEC_KEYS
    path = spec["class"]
    if extra:
        raise OnlineSpecError(path, sorted(ALLOWED), "", f"unexpected keys {sorted(extra)}")
    cls = _class_at(path)
    if "steps" in spec:
        if path not in _NAMED_STEPS:
            raise OnlineSpecError(path, sorted(ALLOWED), "", "only compositions have 'steps'")
        steps = spec["steps"]
        if not isinstance(steps, list) or not all(
                isinstance(s, list) and len(s) == 2 and isinstance(s[0], str) for s in steps):
            raise OnlineSpecError(path, sorted(ALLOWED), "", "'steps' is a list of [name, spec]")
        args: list[Any] = [(name, build(step)) for name, step in steps]
        params: dict[str, Any] = {}
    else:
        raw_args = spec.get("args", [])
        raw_params = spec.get("params", {})
        if not isinstance(raw_args, list) or not isinstance(raw_params, Mapping):
            raise OnlineSpecError(path, sorted(ALLOWED), "",
                                  "'args' is a list and 'params' a dict")
        if any(not isinstance(k, str) or k.startswith("_") for k in raw_params):
            raise OnlineSpecError(path, sorted(ALLOWED), "",
                                  "parameter names are strings not starting with '_'")
        args = [_decode(v) for v in raw_args]
        params = {k: _decode(v) for k, v in raw_params.items()}
    try:
        return cls(*args, **params)
    except Exception as exc:  # wrong parameters for this River version
        raise OnlineSpecError(path, sorted(ALLOWED), "",
                              f"River refused the parameters: {exc}") from exc


def _decode(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, Mapping):
        if "class" in value:
            return build(value)
        return {str(k): _decode(v) for k, v in value.items()}
    raise OnlineSpecError(type(value).__name__, sorted(ALLOWED), "",
                          "spec values are None, booleans, numbers, strings, lists or dicts")


# -- bytes ------------------------------------------------------------------------------
def dumps(estimator: Any) -> bytes:
    """The specification of ``estimator`` as canonical JSON bytes (the ``river-spec`` artifact).

    Examples
    --------
    >>> from river import linear_model
    >>> dumps(linear_model.LinearRegression(l2=0.5))[:60]
    b'{"format":"modelog.river-spec/1","spec":{"class":"river.line'
    """
    doc = {"format": SPEC_FORMAT, "spec": spec_of(estimator)}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def loads(data: bytes) -> Any:
    """The fresh estimator the bytes of :func:`dumps` specify (see :func:`build`).

    Examples
    --------
    >>> from river import linear_model
    >>> loads(dumps(linear_model.LinearRegression(l2=0.5))).l2
    0.5
    """
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise OnlineSpecError("<artifact>", sorted(ALLOWED), "",
                              f"not a JSON specification ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != SPEC_FORMAT:
        raise OnlineSpecError("<artifact>", sorted(ALLOWED), "",
                              f"not a {SPEC_FORMAT} document")
    try:
        return build(doc["spec"])
    except RecursionError:
        raise OnlineSpecError("<artifact>", sorted(ALLOWED), "",
                              "the specification nests too deeply to build") from None
