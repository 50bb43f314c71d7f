"""Training-serving skew: serving inputs that disagree with the training signature.

:class:`SkewMonitor` compares each input mapping with a *signature* (feature
name -> Arrow type name, as in ``ModelVersionRegistered.signature``) and with
reference null shares (a profile's ``null_fraction``, or the warm-up window):

* ``missing``: a signature feature absent from the inputs;
* ``unexpected``: an input feature the signature does not name;
* ``type``: a value of another type than the signature's -- a string where
  ``double`` is expected, a float with a fraction where ``int64`` is
  expected, a boolean where a number is expected (an ``int`` is a valid
  ``double``, an integral float a valid ``int64``);
* ``nulls``: the share of nulls in the last ``window`` inputs is more than
  ``nulls_tolerance`` away from the reference share.

:class:`SkewMonitor` follows River's drift-detector protocol
(:class:`~modelog.models.processor.Detector`): ``update(x)`` per input; every
``block`` inputs it closes a block of the null-share window and checks, and
``drift_detected`` and ``findings`` tell what it found. Every condition
(feature, kind) is reported once, by the first check after it was first seen,
with the keys (prediction ids) of up to ``max_keys`` inputs showing it; later
occurrences are counted only. This module owns the skew checks; it imports
only :mod:`modelog.models.errors`.

Examples
--------
>>> m = SkewMonitor({"age": "int64", "plan": "string"}, block=2)
>>> m.update({"age": "42", "extra": 1.0}, key="p1")
>>> m.drift_detected
False
>>> m.update({"age": "43", "plan": "a"}, key="p2")
>>> for f in m.findings:
...     print(f.feature, f.kind, f.expected, f.observed, f.keys)
age type int64 str ('p1', 'p2')
extra unexpected None float ('p1',)
plan missing string None ('p1',)
>>> m.update({"age": "44", "plan": "b"}, key="p3")
>>> m.update({"age": "45", "plan": "c"}, key="p4")
>>> m.findings  # already reported
()
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from mypy_extensions import mypyc_attr

from modelog.models.errors import InvalidParameterError
from modelog.models.pickled import FrozenState

__all__ = ["SkewFinding", "SkewKind", "SkewMonitor", "accepted_types", "type_family"]

SkewKind = Literal["missing", "unexpected", "type", "nulls"]

_INTEGER = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
_FLOATING = ("halffloat", "float", "double", "float16", "float32", "float64")


def type_family(arrow_type: str) -> str | None:
    """``"integer"``, ``"floating"``, ``"string"``, ``"boolean"`` or ``None`` (not checked).

    Examples
    --------
    >>> type_family("int64"), type_family("double"), type_family("large_string")
    ('integer', 'floating', 'string')
    >>> type_family("decimal128(10, 2)"), type_family("timestamp[us]")
    ('floating', None)
    """
    t = arrow_type.strip().lower()
    if t in _INTEGER:
        return "integer"
    if t in _FLOATING or t.startswith("decimal"):
        return "floating"
    if t in ("string", "large_string", "utf8", "large_utf8", "string_view"):
        return "string"
    if t in ("bool", "boolean"):
        return "boolean"
    return None


def accepted_types(arrow_type: str) -> frozenset[type] | None:
    """The Python value types accepted without a check for a signature type (``None``: any)."""
    family = type_family(arrow_type)
    return {
        "integer": frozenset({int}),
        "floating": frozenset({float, int}),
        "string": frozenset({str}),
        "boolean": frozenset({bool}),
        None: None,
    }[family]


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass(frozen=True)
class SkewFinding(FrozenState):
    """One skew condition, as first reported."""

    feature: str
    kind: SkewKind
    expected: str | None
    observed: str | None
    count: int
    keys: tuple[str, ...]


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
@dataclasses.dataclass
class _Condition:
    expected: str | None
    observed: str | None
    count: int = 0
    keys: list[str] = dataclasses.field(default_factory=list)


MAX_CLEAN_SHAPES = 64
"""Input shapes a :class:`SkewMonitor` remembers as clean (beyond them, inputs are checked
feature by feature: the same outcome, more slowly)."""


@mypyc_attr(allow_interpreted_subclasses=True)  # unpickled without __init__ (compiled)
class SkewMonitor:
    """Check inputs against a signature and reference null shares.

    Parameters
    ----------
    signature
        Feature name -> Arrow type name; ``None`` or empty: no missing,
        unexpected or type checks.
    null_reference
        Feature name -> reference share of nulls; features not in it take
        their share from the first ``reference_size`` inputs.
    reference_size
        Inputs of the warm-up null-share reference.
    window
        Inputs over which the live null share is measured (in blocks of
        ``block``: the share is updated in O(1) per input).
    block
        Inputs per block of the null-share window, and between two checks (an
        attribute: may change at run time).
    nulls_tolerance
        Largest accepted distance between live and reference null shares.
    max_keys
        Most keys a finding carries.
    """

    def __init__(self, signature: Mapping[str, str] | None = None,
                 null_reference: Mapping[str, float] | None = None, *,
                 reference_size: int = 1_000, window: int = 500, block: int = 100,
                 nulls_tolerance: float = 0.1, max_keys: int = 20,
                 max_features: int = 200) -> None:
        for name, value in (("reference_size", reference_size), ("window", window),
                            ("block", block), ("max_features", max_features)):
            if value < 1:
                raise InvalidParameterError("SkewMonitor", name, value, "must be >= 1")
        if not 0.0 < nulls_tolerance < 1.0:
            raise InvalidParameterError("SkewMonitor", "nulls_tolerance", nulls_tolerance,
                                        "must be strictly between 0 and 1")
        self.signature = dict(signature or {})
        self._accept = {name: accepted_types(t) for name, t in self.signature.items()}
        self.null_reference: dict[str, float] = dict(null_reference or {})
        self.reference_size = reference_size
        self.block = block
        self.blocks = max(1, -(-window // block))
        self.nulls_tolerance = nulls_tolerance
        self.max_keys = max_keys
        self.max_features = max_features
        self.n_observations = 0
        self._block_n = 0
        self._nulls: collections.Counter[str] = collections.Counter()
        self._warm_nulls: collections.Counter[str] | None = collections.Counter()
        self._history: collections.deque[tuple[int, collections.Counter[str]]] = \
            collections.deque(maxlen=self.blocks)
        self._conditions: dict[tuple[str, SkewKind], _Condition] = {}
        self._reported: set[tuple[str, SkewKind]] = set()
        self.counts: collections.Counter[SkewKind] = collections.Counter()
        self._findings: tuple[SkewFinding, ...] = ()
        #: Shapes (feature names, value types) of inputs found clean: nothing to count.
        self._clean: set[tuple[tuple[str, ...], tuple[type, ...]]] = set()

    @property
    def drift_detected(self) -> bool:
        """Whether the last :meth:`update` checked and found a new condition."""
        return bool(self._findings)

    @property
    def findings(self) -> Sequence[SkewFinding]:
        """The conditions the last :meth:`update` reported (each only once, ever)."""
        return self._findings

    def _seen(self, feature: str, kind: SkewKind, expected: str | None, observed: str | None,
              key: str) -> None:
        self.counts[kind] += 1
        cond = self._conditions.get((feature, kind))
        if cond is None:
            if (feature, kind) in self._reported or len(self._conditions) >= self.max_features:
                return
            cond = self._conditions[feature, kind] = _Condition(expected, observed)
        cond.count += 1
        if len(cond.keys) < self.max_keys:
            cond.keys.append(key)

    def update(self, x: Mapping[str, Any], key: str | None = None) -> None:
        """Check one input mapping; ``key`` (its prediction id; by default its number) is
        kept as evidence. Every ``block``-th input closes a block and reports."""
        self._findings = ()
        self.n_observations += 1
        if key is None:
            key = str(self.n_observations)
        self._block_n += 1
        accept = self._accept
        # an input shaped as one seen clean (every feature, of an accepted type, no null)
        # has nothing to count
        shape = (tuple(x), tuple(map(type, x.values()))) if accept else None
        if shape is None or shape not in self._clean:
            self._check_input(x, key, accept, shape)
        warm = self._warm_nulls
        if warm is not None and self.n_observations <= self.reference_size:
            for name, value in x.items():
                if value is None:
                    warm[name] += 1
                elif name not in warm:
                    warm[name] += 0
            if self.n_observations == self.reference_size:
                for name, count in warm.items():
                    self.null_reference.setdefault(name, count / self.reference_size)
                self._warm_nulls = None
        if self.n_observations % self.block == 0:
            self._findings = tuple(self._check())

    def _check_input(self, x: Mapping[str, Any], key: str, accept: dict[str, Any],
                     shape: tuple[tuple[str, ...], tuple[type, ...]] | None) -> None:
        """Count the nulls, unexpected, missing and mistyped features of one input."""
        present = 0
        clean = True
        for name, value in x.items():
            if value is None:
                self._nulls[name] += 1
                clean = False
            if not accept:
                continue
            if name not in accept:
                self._seen(name, "unexpected", None, type(value).__name__, key)
                clean = False
                continue
            present += 1
            ok = accept[name]
            if value is None or ok is None or type(value) in ok:
                continue
            clean = False
            if int in ok and type(value) is float and value.is_integer():
                continue  # an integral float is a valid integer
            self._seen(name, "type", self.signature[name], type(value).__name__, key)
        if present < len(accept):
            clean = False
            for name in accept:
                if name not in x:
                    self._seen(name, "missing", self.signature[name], None, key)
        if clean and shape is not None and len(self._clean) < MAX_CLEAN_SHAPES:
            self._clean.add(shape)

    def null_shares(self) -> dict[str, float]:
        """Live share of nulls per feature over the window (of the blocks closed so far)."""
        n = sum(size for size, _ in self._history)
        if n == 0:
            return {}
        total: collections.Counter[str] = collections.Counter()
        for _, nulls in self._history:
            total.update(nulls)
        return {name: total.get(name, 0) / n for name in self.null_reference}

    def _check(self) -> list[SkewFinding]:
        """Close the current block; the conditions never reported before (then reported)."""
        self._history.append((self._block_n, self._nulls))
        self._block_n, self._nulls = 0, collections.Counter()
        out = [SkewFinding(f, k, c.expected, c.observed, c.count, tuple(c.keys))
               for (f, k), c in sorted(self._conditions.items())]
        self._reported.update(self._conditions)
        self._conditions.clear()
        if len(self._history) == self.blocks and self._warm_nulls is None:
            out.extend(self._null_findings())
        return out

    def _null_findings(self) -> Iterable[SkewFinding]:
        for name, live in sorted(self.null_shares().items()):
            ref = self.null_reference[name]
            if abs(live - ref) > self.nulls_tolerance and (name, "nulls") not in self._reported:
                self._reported.add((name, "nulls"))
                self.counts["nulls"] += 1
                yield SkewFinding(name, "nulls", f"{ref:.1%} nulls", f"{live:.1%} nulls",
                                  round(live * sum(s for s, _ in self._history)), ())
