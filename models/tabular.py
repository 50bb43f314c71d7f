"""Pure tabular helpers shared by the ML side and the store: canonical tables, PSI, tests.

No I/O here: :func:`canonical_table` defines the form whose digest names a
dataset version (the store hashes and writes it), and :func:`psi` /
:func:`rebin` compare binned distributions (dataset profiles, drift windows);
:func:`ks_p_value`, :func:`ks_critical_value` and :func:`chi2_homogeneity` are the
two-sample tests of data drift.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import special

from modelog.models.errors import InvalidParameterError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["PSI_EPSILON", "canonical_table", "chi2_critical_value", "chi2_homogeneity",
           "ks_critical_value", "ks_p_value", "psi", "rebin"]

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
    e = [float(x) for x in expected]  # a few dozen bins: plain floats beat numpy's calls
    a = [float(x) for x in actual]
    if len(e) != len(a):
        raise InvalidParameterError(
            "psi", "actual", len(a),
            f"expected and actual need the same bins, got {len(e)} and {len(a)}; rebin the "
            "actual counts onto the reference edges first (see rebin)")
    e_sum, a_sum = math.fsum(e), math.fsum(a)
    if e_sum <= 0 or a_sum <= 0:
        return 0.0
    total = 0.0
    log = math.log
    for x, y in zip(e, a, strict=True):
        ep = max(x / e_sum, epsilon)
        ap = max(y / a_sum, epsilon)
        if ap != ep:
            total += (ap - ep) * log(ap / ep)
    return total


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
    return _kolmogi(alpha) * math.sqrt((n + m) / (n * m))


@functools.lru_cache(maxsize=64)
def _kolmogi(alpha: float) -> float:
    return float(special.kolmogi(alpha))


@functools.lru_cache(maxsize=256)
def chi2_critical_value(dof: int, alpha: float) -> float:
    """The chi-squared statistic above which a test with ``dof`` degrees rejects at ``alpha``.

    Examples
    --------
    >>> round(chi2_critical_value(1, 0.05), 3)
    3.841
    """
    return float(special.chdtri(dof, alpha))


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
    pairs = [(float(r), float(w)) for r, w in zip(reference, window, strict=True) if r + w > 0]
    n_r = math.fsum(r for r, _ in pairs)
    n_w = math.fsum(w for _, w in pairs)
    if len(pairs) < 2 or n_r <= 0 or n_w <= 0:
        return 0.0, 1.0, 0
    share_r, share_w = n_r / (n_r + n_w), n_w / (n_r + n_w)
    stat = 0.0
    for r, w in pairs:
        total = r + w
        e_r, e_w = total * share_r, total * share_w
        stat += (r - e_r) ** 2 / e_r + (w - e_w) ** 2 / e_w
    dof = len(pairs) - 1
    return stat, float(special.chdtrc(dof, stat)), dof
