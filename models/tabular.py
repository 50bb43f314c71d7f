"""Pure tabular helpers shared by the ML side and the store: canonical tables, PSI, tests.

No I/O here: :func:`canonical_table` defines the form whose digest names a
dataset version (the store hashes and writes it), and :func:`psi` /
:func:`rebin` compare binned distributions (dataset profiles, drift windows);
:func:`ks_p_value`, :func:`ks_critical_value` and :func:`chi2_homogeneity` are the
two-sample tests of data drift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import special

from modelog.models.errors import InvalidParameterError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["PSI_EPSILON", "canonical_table", "chi2_homogeneity", "ks_critical_value",
           "ks_p_value", "psi", "rebin"]

FloatArray = np.ndarray[Any, np.dtype[np.float64]]

PSI_EPSILON = 1e-4
"""Floor of a bin share in :func:`psi` (an empty bin would make it infinite)."""


def _canonical_type(t: pa.DataType) -> pa.DataType:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        return _canonical_type(t.value_type)
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_large_list(t) or pa.types.is_list(t):
        return pa.list_(_canonical_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct(
            [pa.field(f.name, _canonical_type(f.type), f.nullable) for f in t.fields]
        )
    return t


def canonical_table(table: pa.Table) -> pa.Table:
    """``table`` in canonical form: no metadata, 32-bit offsets, decoded dictionaries,
    one chunk per column, freshly laid-out buffers (no slice offsets or stale bitmaps)."""
    import numpy as np
    import pyarrow as pa

    schema = pa.schema(
        [pa.field(f.name, _canonical_type(f.type), f.nullable) for f in table.schema]
    )
    table = table.replace_schema_metadata(None).cast(schema)
    # ``take`` rebuilds every buffer at exactly the needed size from offset 0.
    return table.take(pa.array(np.arange(table.num_rows, dtype=np.int64))).combine_chunks()


def rebin(edges: Sequence[float], counts: Sequence[float], target_edges: Sequence[float]
          ) -> list[float]:
    """Redistribute a histogram onto ``target_edges`` (mass assumed uniform within each bin).

    Returns ``len(target_edges) + 1`` masses: one below the first target edge,
    one per target bin, one above the last edge, so nothing is lost.

    Examples
    --------
    >>> rebin([0, 2, 4], [10, 20], [1, 3])
    [5.0, 15.0, 10.0]
    """
    out = [0.0] * (len(target_edges) + 1)
    bounds = [-math.inf, *target_edges, math.inf]
    for lo, hi, c in zip(edges[:-1], edges[1:], counts, strict=True):
        if c == 0:
            continue
        width = hi - lo
        for j in range(len(out)):
            a, b = max(lo, bounds[j]), min(hi, bounds[j + 1])
            if width <= 0:  # degenerate bin: all mass at one point
                if bounds[j] <= lo < bounds[j + 1]:
                    out[j] += c
            elif b > a:
                out[j] += c * (b - a) / width
    return out


def psi(expected: Sequence[float], actual: Sequence[float], *, epsilon: float = PSI_EPSILON
        ) -> float:
    """Population stability index of ``actual`` against ``expected`` bin counts.

    ``sum((a - e) * ln(a / e))`` over bin shares, each floored at ``epsilon``.
    Rules of thumb: below 0.1 stable, 0.1-0.2 a moderate shift, above 0.2 a
    significant shift.

    Examples
    --------
    >>> psi([10, 20, 30], [10, 20, 30])
    0.0
    >>> round(psi([50, 50], [90, 10]), 3)
    0.879
    """
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.shape != a.shape:
        raise InvalidParameterError(
            "psi", "actual", a.size,
            f"expected and actual need the same bins, got {e.size} and {a.size}; rebin the "
            "actual counts onto the reference edges first (see rebin)")
    if e.sum() <= 0 or a.sum() <= 0:
        return 0.0
    ep = np.clip(e / e.sum(), epsilon, None)
    ap = np.clip(a / a.sum(), epsilon, None)
    return float(np.sum((ap - ep) * np.log(ap / ep)))


def ks_p_value(d: float, n: float, m: float) -> float:
    """Asymptotic two-sample Kolmogorov-Smirnov p-value of distance ``d`` (sizes ``n``, ``m``).

    Examples
    --------
    >>> round(ks_p_value(0.1, 1_000, 500), 4)
    0.0025
    """
    en = n * m / (n + m)
    return float(special.kolmogorov(math.sqrt(en) * d))


def ks_critical_value(alpha: float, n: float, m: float) -> float:
    """The distance above which the two-sample KS test rejects at level ``alpha``.

    Examples
    --------
    >>> round(ks_critical_value(0.001, 1_000, 500), 3)
    0.107
    """
    return float(special.kolmogi(alpha)) * math.sqrt((n + m) / (n * m))


def chi2_homogeneity(reference: Sequence[float] | FloatArray,
                     window: Sequence[float] | FloatArray) -> tuple[float, float, int]:
    """Chi-squared test that two count vectors come from one distribution.

    Returns ``(statistic, p_value, degrees_of_freedom)``; categories empty in
    both are dropped, and fewer than two categories give ``(0.0, 1.0, 0)``.

    Examples
    --------
    >>> stat, p, dof = chi2_homogeneity([50, 50], [80, 20])
    >>> round(stat, 2), dof, p < 0.001
    (19.78, 1, True)
    """
    r = np.asarray(reference, dtype=float)
    w = np.asarray(window, dtype=float)
    keep = (r + w) > 0
    r, w = r[keep], w[keep]
    if r.size < 2 or r.sum() <= 0 or w.sum() <= 0:
        return 0.0, 1.0, 0
    total = r + w
    n_r, n_w = r.sum(), w.sum()
    e_r = total * n_r / (n_r + n_w)
    e_w = total * n_w / (n_r + n_w)
    stat = float(np.sum((r - e_r) ** 2 / e_r) + np.sum((w - e_w) ** 2 / e_w))
    dof = int(r.size - 1)
    return stat, float(special.chdtrc(dof, stat)), dof
