"""Model flavors: turn fitted models into bytes and back, safely where possible.

A *flavor* knows how to serialize one family of models. Four are built in:

========== ===================== ======================================================
flavor     format                loading executes code?
========== ===================== ======================================================
sklearn    ``skops``             no -- ``skops.io`` rebuilds objects from an allow-list
                                 of types; anything outside ``sklearn.``, ``numpy.``,
                                 ``scipy.`` is refused unless the caller trusts it
pytorch    ``torch-state-dict``  no -- only the ``state_dict()`` tensors are stored and
                                 read back with ``torch.load(weights_only=True)``; the
                                 caller builds the module
river      ``pickle``            **yes** -- River models only pickle; load only
                                 artifacts whose digest matches the registry event
                                 (:func:`load_verified` does that check first)
river-spec ``json``              no -- allow-listed River classes and their
                                 hyperparameters (:mod:`modelog.models.online_spec`);
                                 loading builds a fresh, untrained estimator. Never
                                 detected: the SDK writes it for online models
========== ===================== ======================================================

Artifacts are identified by :func:`digest` (the SHA-256 of the bytes, as the
artifact store and the registry events record it). :func:`load_verified`
compares the digest *before* deserializing anything.

Examples
--------
>>> from sklearn.datasets import make_classification
>>> from sklearn.linear_model import LogisticRegression
>>> X, y = make_classification(n_samples=60, random_state=0)
>>> model = LogisticRegression().fit(X, y)
>>> art = dump(model)
>>> art.flavor, art.format, "scikit-learn" in art.library_versions
('sklearn', 'skops', True)
>>> expected = digest(art.data)
>>> again = load_verified(art.data, expected, art.flavor)
>>> bool((again.predict(X) == model.predict(X)).all())
True
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import pickle
import platform
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from modelog.models.errors import (
    ArtifactDigestMismatch,
    ModelLoadError,
    ModelSerializationError,
    UnknownFlavorError,
    UntrustedTypesError,
)

__all__ = [
    "FLAVORS",
    "SKLEARN_TRUSTED_PREFIXES",
    "Flavor",
    "PytorchFlavor",
    "RiverFlavor",
    "RiverSpecFlavor",
    "SerializedModel",
    "SklearnFlavor",
    "detect_flavor",
    "digest",
    "dump",
    "fitted_columns",
    "infer_signature",
    "load",
    "load_verified",
    "register_flavor",
]

SKLEARN_TRUSTED_PREFIXES: tuple[str, ...] = ("sklearn.", "numpy.", "scipy.")
"""Module prefixes whose types the ``sklearn`` flavor trusts without being asked."""


def _versions(*distributions: str) -> dict[str, str]:
    """Installed versions of ``distributions`` (missing ones are left out), plus Python."""
    out = {"python": platform.python_version()}
    for dist in distributions:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _top_packages(obj: object) -> list[str]:
    """Top-level package of every class in ``type(obj)``'s MRO, most derived first."""
    return [cls.__module__.partition(".")[0] for cls in type(obj).__mro__]


# -- the protocol and the built-in flavors ----------------------------------------------
@runtime_checkable
class Flavor(Protocol):
    """How one family of models is serialized.

    ``name`` is what :class:`SerializedModel` and registry events record,
    ``format`` names the byte format. ``matches`` must not import heavy
    libraries: it is asked about every model :func:`detect_flavor` sees.
    """

    name: str
    format: str

    def matches(self, model: object) -> bool:
        """Whether this flavor serializes ``model``."""
        ...

    def dump(self, model: Any) -> bytes:
        """The model as bytes."""
        ...

    def load(self, data: bytes, **options: Any) -> Any:
        """The model (or what the flavor stores of it) from ``data``."""
        ...

    def library_versions(self) -> dict[str, str]:
        """Versions of the libraries the bytes depend on."""
        ...


class SklearnFlavor:
    """scikit-learn estimators and pipelines via ``skops.io`` (no code runs on load).

    On load, the types skops does not trust by default are listed with
    ``skops.io.get_untrusted_types``; those in modules starting with one of
    ``trusted_prefixes`` are accepted, everything else must be named in the
    ``trusted`` option of :meth:`load`, or :class:`UntrustedTypesError` is
    raised and nothing is built.

    Parameters
    ----------
    trusted_prefixes
        Module prefixes trusted without asking (default
        :data:`SKLEARN_TRUSTED_PREFIXES`).

    Examples
    --------
    >>> from sklearn.preprocessing import StandardScaler
    >>> flavor = SklearnFlavor()
    >>> scaler = flavor.load(flavor.dump(StandardScaler().fit([[0.0], [2.0]])))
    >>> scaler.transform([[2.0]]).tolist()
    [[1.0]]
    """

    name = "sklearn"
    format = "skops"

    def __init__(self, trusted_prefixes: Sequence[str] = SKLEARN_TRUSTED_PREFIXES) -> None:
        self.trusted_prefixes = tuple(trusted_prefixes)

    def matches(self, model: object) -> bool:
        return "sklearn" in _top_packages(model)

    def dump(self, model: Any) -> bytes:
        import skops.io

        try:
            return bytes(skops.io.dumps(model))
        except Exception as exc:  # skops raises TypeError, pickling errors, ...
            raise ModelSerializationError(self.name, type(model), exc) from exc

    def load(self, data: bytes, *, trusted: Iterable[str] = (), **options: Any) -> Any:
        """Rebuild the estimator; ``trusted`` names extra types to allow (``"module.Name"``)."""
        import skops.io

        if options:
            raise TypeError(f"unexpected options for the sklearn flavor: {sorted(options)}")
        extra = set(trusted)
        try:
            untrusted = skops.io.get_untrusted_types(data=data)
        except Exception as exc:  # not a skops archive: BadZipFile, KeyError, JSON errors
            raise ModelLoadError(self.name, exc) from exc
        refused = sorted(
            t for t in untrusted if not t.startswith(self.trusted_prefixes) and t not in extra
        )
        if refused:
            raise UntrustedTypesError(refused, self.trusted_prefixes)
        try:
            return skops.io.loads(data, trusted=list(untrusted))
        except Exception as exc:
            raise ModelLoadError(self.name, exc) from exc

    def library_versions(self) -> dict[str, str]:
        return _versions("scikit-learn", "numpy", "scipy", "skops")


class PytorchFlavor:
    """PyTorch modules as their ``state_dict()`` (no code runs on load).

    :meth:`dump` accepts a ``torch.nn.Module`` or a state dict. :meth:`load`
    reads the tensors with ``torch.load(weights_only=True)``; pass the module
    to fill as ``model=`` (it is returned, its training/eval mode untouched),
    or get the state dict back. torch is imported only when needed.

    Examples
    --------
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> net = torch.nn.Linear(3, 1)
    >>> flavor = PytorchFlavor()
    >>> data = flavor.dump(net)
    >>> sorted(flavor.load(data))
    ['bias', 'weight']
    >>> clone = flavor.load(data, model=torch.nn.Linear(3, 1))
    >>> bool(torch.equal(clone.weight, net.weight))
    True
    """

    name = "pytorch"
    format = "torch-state-dict"

    def matches(self, model: object) -> bool:
        if "torch" in _top_packages(model):
            return True
        torch = sys.modules.get("torch")  # a state dict: only possible if torch is loaded
        return (
            torch is not None
            and isinstance(model, Mapping)
            and len(model) > 0
            and all(isinstance(v, torch.Tensor) for v in model.values())
        )

    def dump(self, model: Any) -> bytes:
        import torch

        state = model.state_dict() if hasattr(model, "state_dict") else model
        if not isinstance(state, Mapping):
            raise ModelSerializationError(
                self.name, type(model),
                TypeError("expected a torch.nn.Module or a state dict (mapping of tensors)"),
            )
        buf = io.BytesIO()
        try:
            torch.save(dict(state), buf)
        except Exception as exc:
            raise ModelSerializationError(self.name, type(model), exc) from exc
        return buf.getvalue()

    def load(
        self, data: bytes, *, model: Any = None, strict: bool = True,
        map_location: str = "cpu", **options: Any,
    ) -> Any:
        """The state dict, or ``model`` with it loaded (``strict`` as in ``load_state_dict``)."""
        import torch

        if options:
            raise TypeError(f"unexpected options for the pytorch flavor: {sorted(options)}")
        try:
            state = torch.load(io.BytesIO(data), weights_only=True, map_location=map_location)
        except Exception as exc:  # UnpicklingError for anything but tensors, RuntimeError
            raise ModelLoadError(self.name, exc) from exc
        if model is None:
            return state
        try:
            model.load_state_dict(state, strict=strict)
        except Exception as exc:  # shape or key mismatch
            raise ModelLoadError(self.name, exc) from exc
        return model

    def library_versions(self) -> dict[str, str]:
        return _versions("torch")


class RiverFlavor:
    """River models via :mod:`pickle` -- **loading executes code**.

    River has no code-free format, so the bytes are a pickle and unpickling
    can run arbitrary code. Only load artifacts you produced, and only after
    checking their digest against the ``ModelVersionRegistered`` event:
    use :func:`load_verified`, which refuses mismatching bytes before
    unpickling.

    Examples
    --------
    >>> from river import linear_model
    >>> model = linear_model.LogisticRegression()
    >>> model.learn_one({"x": 1.0}, True)
    >>> flavor = RiverFlavor()
    >>> clone = flavor.load(flavor.dump(model))
    >>> clone.predict_proba_one({"x": 1.0}) == model.predict_proba_one({"x": 1.0})
    True
    """

    name = "river"
    format = "pickle"

    def matches(self, model: object) -> bool:
        return "river" in _top_packages(model)

    def dump(self, model: Any) -> bytes:
        try:
            return pickle.dumps(model, protocol=5)
        except Exception as exc:  # lambdas, local classes, open handles
            raise ModelSerializationError(self.name, type(model), exc) from exc

    def load(self, data: bytes, **options: Any) -> Any:
        """Unpickle ``data`` (trusted bytes only: see the class docstring)."""
        if options:
            raise TypeError(f"unexpected options for the river flavor: {sorted(options)}")
        try:
            return pickle.loads(data)  # documented: callers verify the digest first
        except Exception as exc:
            raise ModelLoadError(self.name, exc) from exc

    def library_versions(self) -> dict[str, str]:
        return _versions("river", "numpy")


class RiverSpecFlavor:
    """River models as a JSON specification of allow-listed classes (no code runs on load).

    :meth:`dump` writes :func:`modelog.models.online_spec.dumps` (hyperparameters
    only, not learned state) and refuses a model built from classes off the
    allow-list (:class:`~modelog.models.errors.OnlineSpecError`); :meth:`load`
    builds a fresh estimator, importing only allow-listed River classes. It
    never matches a model by itself: ask for it by name (the SDK does for
    online registrations).

    Examples
    --------
    >>> from river import linear_model, preprocessing
    >>> flavor = RiverSpecFlavor()
    >>> data = flavor.dump(preprocessing.StandardScaler() | linear_model.LinearRegression())
    >>> flavor.load(data)["LinearRegression"].l2
    0.0
    """

    name = "river-spec"
    format = "json"

    def matches(self, model: object) -> bool:
        return False

    def dump(self, model: Any) -> bytes:
        from modelog.models.online_spec import dumps

        return dumps(model)

    def load(self, data: bytes, **options: Any) -> Any:
        """A fresh estimator built from the specification (see :func:`~.online_spec.build`)."""
        from modelog.models.online_spec import loads

        if options:
            raise TypeError(f"unexpected options for the river-spec flavor: {sorted(options)}")
        return loads(data)

    def library_versions(self) -> dict[str, str]:
        return _versions("river")


FLAVORS: dict[str, Flavor] = {}
"""The registered flavors by name, asked in insertion order by :func:`detect_flavor`."""


def register_flavor(flavor: Flavor, *, first: bool = False) -> None:
    """Add (or replace) a flavor; ``first=True`` makes :func:`detect_flavor` ask it first.

    Examples
    --------
    >>> class Echo:
    ...     name, format = "echo", "raw"
    ...     def matches(self, model): return isinstance(model, bytes)
    ...     def dump(self, model): return model
    ...     def load(self, data, **options): return data
    ...     def library_versions(self): return {}
    >>> register_flavor(Echo())
    >>> dump(b"abc").flavor
    'echo'
    >>> del FLAVORS["echo"]
    """
    if not isinstance(flavor, Flavor):
        raise TypeError(f"{flavor!r} does not implement the Flavor protocol")
    FLAVORS.pop(flavor.name, None)
    if first:
        rest = dict(FLAVORS)
        FLAVORS.clear()
        FLAVORS[flavor.name] = flavor
        FLAVORS.update(rest)
    else:
        FLAVORS[flavor.name] = flavor


# PyTorch and River before sklearn: their sklearn-compatible wrappers derive from
# sklearn's BaseEstimator but hold objects skops would not rebuild.
for _builtin in (PytorchFlavor(), RiverFlavor(), SklearnFlavor(), RiverSpecFlavor()):
    register_flavor(_builtin)


def _get_flavor(name: str) -> Flavor:
    try:
        return FLAVORS[name]
    except KeyError:
        raise UnknownFlavorError(repr(name), sorted(FLAVORS)) from None


# -- the functions -------------------------------------------------------------------
@dataclass(frozen=True)
class SerializedModel:
    """A model as bytes, with what is needed to load it again.

    ``flavor`` and ``format`` say how to read ``data``; ``library_versions``
    records the versions it was written with (to report, not enforced).
    """

    flavor: str
    data: bytes = field(repr=False)
    format: str
    library_versions: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """The SHA-256 hex digest of :attr:`data`."""
        return digest(self.data)


def detect_flavor(model: object) -> str:
    """The name of the first registered flavor that matches ``model``.

    Examples
    --------
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> from river import tree
    >>> detect_flavor(DecisionTreeClassifier()), detect_flavor(tree.HoeffdingTreeClassifier())
    ('sklearn', 'river')
    >>> detect_flavor(42)
    Traceback (most recent call last):
    ...
    modelog.models.errors.UnknownFlavorError: ...
    """
    for flavor in FLAVORS.values():
        if flavor.matches(model):
            return flavor.name
    raise UnknownFlavorError(f"a {type(model).__module__}.{type(model).__qualname__}",
                             sorted(FLAVORS))


def dump(model: Any, flavor: str | None = None) -> SerializedModel:
    """Serialize ``model`` with ``flavor`` (detected when ``None``)."""
    chosen = _get_flavor(flavor if flavor is not None else detect_flavor(model))
    data = chosen.dump(model)
    return SerializedModel(chosen.name, data, chosen.format, chosen.library_versions())


def load(data: bytes, flavor: str, **options: Any) -> Any:
    """Deserialize ``data`` written by ``flavor``; ``options`` go to the flavor's ``load``.

    ``sklearn`` takes ``trusted=[...]``, ``pytorch`` takes ``model=``,
    ``strict=`` and ``map_location=``. Prefer :func:`load_verified`.
    """
    return _get_flavor(flavor).load(bytes(data), **options)


def digest(data: bytes) -> str:
    """The SHA-256 hex digest of ``data``, as the artifact store and registry record it.

    Examples
    --------
    >>> digest(b"hello")[:16]
    '2cf24dba5fb0a30e'
    """
    return hashlib.sha256(data).hexdigest()


def load_verified(data: bytes, expected_digest: str, flavor: str, **options: Any) -> Any:
    """:func:`load` after checking ``digest(data) == expected_digest``.

    The check happens before any byte is deserialized, so tampered or
    truncated artifacts never reach ``pickle`` or ``torch.load``.

    Examples
    --------
    >>> load_verified(b"not a model", "0" * 64, "river")
    Traceback (most recent call last):
    ...
    modelog.models.errors.ArtifactDigestMismatch: ...
    """
    actual = digest(data)
    if actual != expected_digest.strip().lower():
        raise ArtifactDigestMismatch(expected_digest, actual)
    return load(data, flavor, **options)


def fitted_columns(model: Any) -> list[str] | None:
    """The input columns ``model`` was fit on, in order, when it knows them (else ``None``).

    A scikit-learn estimator or pipeline fit on a DataFrame records them
    (``feature_names_in_``) and refuses any other set or order of columns, so
    its signature, its holdout and its serving frame are those columns.

    Examples
    --------
    >>> import pandas as pd
    >>> from sklearn.linear_model import LinearRegression
    >>> X = pd.DataFrame({"rooms": [1.0, 2.0, 3.0], "sqft": [50.0, 70.0, 90.0]})
    >>> fitted_columns(LinearRegression().fit(X[["sqft", "rooms"]], [1.0, 2.0, 3.0]))
    ['sqft', 'rooms']
    >>> fitted_columns(LinearRegression().fit(X.to_numpy(), [1.0, 2.0, 3.0])) is None
    True
    """
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return None
    try:
        return [str(n) for n in names]
    except TypeError:  # not a sequence: not scikit-learn's attribute
        return None


def infer_signature(data: Any) -> list[tuple[str, str]]:
    """The input signature of a model: ``(column, Arrow type)`` of a DataFrame or Table.

    ``data`` is the training dataset (features only) as a pandas DataFrame or
    a pyarrow Table or RecordBatch. Types are named as in the dataset's
    ``DatasetVersionCreated`` event: the canonical form of
    :func:`modelog.models.tabular.canonical_table` (``large_string`` and
    dictionary-encoded strings are ``string``, and so on), so a signature
    compares equal to the columns of the dataset it was trained on.

    Examples
    --------
    >>> import pandas as pd
    >>> infer_signature(pd.DataFrame({"age": [42], "plan": ["pro"], "score": [0.5]}))
    [('age', 'int64'), ('plan', 'string'), ('score', 'double')]
    """
    import pyarrow as pa

    from modelog.models.tabular import canonical_table

    if isinstance(data, pa.RecordBatch):
        table = pa.Table.from_batches([data])
    elif isinstance(data, pa.Table):
        table = data
    elif _is_dataframe(data):
        table = pa.Table.from_pandas(data, preserve_index=False)
    else:
        raise TypeError(
            f"infer_signature needs a pandas DataFrame or a pyarrow Table, "
            f"got {type(data).__name__}; convert it first (e.g. pd.DataFrame(X, columns=...))"
        )
    schema = canonical_table(table.slice(0, 0)).schema  # types only: no rows are copied
    return [(f.name, str(f.type)) for f in schema]


def _is_dataframe(data: object) -> bool:
    pd = sys.modules.get("pandas")
    return pd is not None and isinstance(data, pd.DataFrame)
