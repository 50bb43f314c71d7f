"""Snapshots of a worker's per-partition state, so a replacement replays only the tail.

The monitoring worker's state follows its partitions: a worker that takes a
partition over rebuilds the detectors by replaying the partition up to the
committed positions. :class:`PartitionSnapshots` bounds that replay: every few
seconds, right after a commit, the worker saves each owned partition's router
state (:meth:`~modelog.models.processor.Processor.snapshot` of its processors)
with the positions it ends at; a replacement on the same data directory
restores the latest snapshot that is not ahead of the committed positions and
replays only the records after it.

A snapshot is local state: written and read by the workers of one data
directory only, never put on the broker. Each file carries an HMAC-SHA256 under
the worker key (:func:`~modelog.store.worker_key.worker_key`), and a file that
does not verify is ignored (the partition is replayed from the beginning), so
nothing but a worker of this deployment can make a worker load one.

May import ``modelog.store``.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> snaps = PartitionSnapshots(Path(tempfile.mkdtemp()), key=b"k" * 32)
>>> snaps.save(3, {"acme.serving": 42}, b"state")
>>> snaps.load(3)
({'acme.serving': 42}, b'state')
>>> snaps.load(4) is None
True
>>> PartitionSnapshots(snaps.directory, key=b"x" * 32).load(3) is None  # another key
True
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import tempfile
from pathlib import Path

__all__ = ["PartitionSnapshots"]

log = logging.getLogger("modelog.worker")

# The layout of the pickled processor state: a new version makes older files be ignored
# (replayed from the beginning) instead of restored into classes that changed.
# v2: Half-Space Trees as arrays (models/hst.py), no River trees.
# v3: numeric drift windows as arrays, outlier score tables, remembered clean skew shapes,
# the join's expiry horizon, the online learner's offsets by partition number.
_MAGIC = b"modelog-partition-state-v3\n"


class PartitionSnapshots:
    """The latest snapshot of each partition, one file each in ``directory``.

    Parameters
    ----------
    directory
        Where the files live (``<data dir>/worker-state/<consumer group>``).
    key
        The worker key the files are signed with.
    """

    def __init__(self, directory: Path, *, key: bytes) -> None:
        self.directory = Path(directory)
        self._key = key

    def _path(self, partition: int) -> Path:
        return self.directory / f"partition-{int(partition)}.state"

    def _mac(self, header: bytes, state: bytes) -> bytes:
        return hmac.new(self._key, header + b"\n" + state, hashlib.sha256).hexdigest().encode()

    def save(self, partition: int, positions: dict[str, int], state: bytes) -> None:
        """Replace ``partition``'s snapshot (atomically: a crash leaves the old one)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        header = json.dumps(positions, sort_keys=True).encode()
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(_MAGIC + self._mac(header, state) + b"\n" + header + b"\n" + state)
            os.replace(tmp, self._path(partition))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def load(self, partition: int) -> tuple[dict[str, int], bytes] | None:
        """``(positions, state)`` of ``partition``'s snapshot; ``None`` if none verifies."""
        path = self._path(partition)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            if not data.startswith(_MAGIC):
                raise ValueError("not a partition state file of this version")
            mac, header, state = data[len(_MAGIC):].split(b"\n", 2)
            if not hmac.compare_digest(mac, self._mac(header, state)):
                raise ValueError("its signature does not match this worker's key")
            positions = {str(t): int(o) for t, o in json.loads(header).items()}
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("ignoring the state snapshot %s (%s); the partition is replayed from "
                        "the beginning", path, exc)
            return None
        return positions, state

    def discard(self, partition: int) -> None:
        """Forget ``partition``'s snapshot."""
        with contextlib.suppress(OSError):
            self._path(partition).unlink()
