"""Event identifiers: UUIDv7 strings, unique and sortable by creation time.

:class:`UuidV7` is the one generator of fresh ids (the SDK keeps one per
client: it is its hot path); :func:`new_id` draws from a process-wide one.
:func:`derived_id` makes a *deterministic* id for an event a processor derives
from others (an alert from a window of predictions), so that reprocessing the
same input after a crash yields the same id and every downstream consumer
ignores the duplicate.

Pure: the standard library only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import os
import threading
import weakref
from random import getrandbits
from time import time_ns

__all__ = ["UuidV7", "derived_id", "epoch_ms", "id_time_ms", "new_id"]

_UTC = dt.UTC


class UuidV7:
    """UUIDv7 strings, increasing within one generator, cheap enough for the SDK's hot path.

    Layout (RFC 9562): 48-bit Unix milliseconds, version 7, variant ``10``, 26
    bits random per generator (re-drawn after ``fork``) and a 48-bit counter
    whose top bit is set and whose start is random (46 bits) -- the "monotonic
    random" method: ids made in the same millisecond stay unique and ordered
    without a lock (``next`` on an ``itertools.count`` is atomic), and two
    processes collide only if they draw the same 26 bits *and* overlapping
    counter ranges in the same millisecond.

    Examples
    --------
    >>> gen = UuidV7()
    >>> a, b = gen(), gen()
    >>> a < b, a[14], a[19] in "89ab"
    (True, '7', True)
    """

    def __init__(self) -> None:
        self._ms = 0
        self._prefix = ""
        #: The millisecond of the last id, as an aware UTC ``datetime`` (shared by
        #: every id of that millisecond; the SDK uses it as the event time).
        self.time = dt.datetime.fromtimestamp(0, _UTC)
        self._reseed()
        ref = weakref.ref(self)

        def reseed_in_child() -> None:  # a forked child must not repeat the parent's ids
            gen = ref()
            if gen is not None:
                gen._reseed()

        os.register_at_fork(after_in_child=reseed_in_child)

    def _reseed(self) -> None:
        r = getrandbits(26)
        self._mid = f"{r >> 14:03x}-{0x8000 | (r & 0x3FFF):04x}-"
        # The counter's top bit is set, so ``hex`` always gives 12 digits: 2**46
        # ids per generator before it would carry out of its 48 bits.
        self._suffix = map(hex, itertools.count((1 << 47) | getrandbits(46)))
        self._ms = 0

    def __call__(self) -> str:
        ms = time_ns() // 1_000_000
        if ms > self._ms:  # a clock stepping back keeps the last prefix: still increasing
            self._ms = ms
            self._prefix = f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7{self._mid}"
            self.time = dt.datetime.fromtimestamp(ms / 1000, _UTC)
        return self._prefix + next(self._suffix)[2:]


_lock = threading.Lock()
_process_ids = UuidV7()


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


def new_id() -> str:
    """Return a new UUIDv7 string; ids made in one process are strictly increasing.

    Drawn from one process-wide :class:`UuidV7` under a lock, so that ids made
    by different threads are ordered too.

    Examples
    --------
    >>> a, b = new_id(), new_id()
    >>> a < b and len(a) == 36 and a[14] == "7"
    True
    """
    with _lock:
        return _process_ids()


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
