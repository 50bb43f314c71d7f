"""Event identifiers: UUIDv7 strings, unique and sortable by creation time.

:func:`new_id` makes a fresh id for an event an application produces.
:func:`derived_id` makes a *deterministic* id for an event a processor derives
from others (an alert from a window of predictions), so that reprocessing the
same input after a crash yields the same id and every downstream consumer
ignores the duplicate.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import threading
import time

__all__ = ["derived_id", "epoch_ms", "id_time_ms", "new_id"]

_lock = threading.Lock()
_last_ms = 0
_seq = 0


def _format(value: int) -> str:
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _pack(ms: int, rand_a: int, rand_b: int) -> int:
    return (
        ((ms & 0xFFFF_FFFF_FFFF) << 80)
        | (0x7 << 76)
        | ((rand_a & 0xFFF) << 64)
        | (0b10 << 62)
        | (rand_b & 0x3FFF_FFFF_FFFF_FFFF)
    )


def new_id(now_ms: int | None = None) -> str:
    """Return a new UUIDv7 string; ids made in one process are strictly increasing.

    Examples
    --------
    >>> a, b = new_id(), new_id()
    >>> a < b and len(a) == 36 and a[14] == "7"
    True
    """
    global _last_ms, _seq
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    with _lock:
        if ms <= _last_ms:
            # Same (or earlier) millisecond: keep order with a 12-bit counter,
            # borrowing the next millisecond when it overflows.
            _seq += 1
            if _seq > 0xFFF:
                _last_ms += 1
                _seq = 0
            ms = _last_ms
        else:
            _last_ms = ms
            _seq = 0
        seq = _seq
    return _format(_pack(ms, seq, int.from_bytes(os.urandom(8), "big")))


def derived_id(time_ms: int, *parts: str) -> str:
    """Return a deterministic UUIDv7-shaped id for an event derived from ``parts``.

    Examples
    --------
    >>> derived_id(1_700_000_000_000, "drift", "churn", "p-42") == derived_id(
    ...     1_700_000_000_000, "drift", "churn", "p-42")
    True
    """
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=10).digest()
    rand = int.from_bytes(digest, "big")
    return _format(_pack(time_ms, rand >> 64, rand))


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def epoch_ms(time: dt.datetime) -> int:
    """Milliseconds since the Unix epoch of a timezone-aware ``time`` (what ids embed).

    Examples
    --------
    >>> epoch_ms(dt.datetime(1970, 1, 1, 0, 0, 1, 500, tzinfo=dt.UTC))
    1000
    """
    return (time - _EPOCH) // dt.timedelta(milliseconds=1)


def id_time_ms(event_id: str) -> int:
    """The millisecond timestamp embedded in a UUIDv7 string."""
    return int(event_id.replace("-", "")[:12], 16)
