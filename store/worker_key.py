"""The worker's secret key in its data directory (``<data_dir>/worker.key``).

The monitoring worker signs the checkpoints of its online models with this key
(:func:`modelog.models.online_models.checkpoint_mac`) and restores only those
whose MAC verifies, so a forged ``OnlineModelCheckpointed`` cannot make it
unpickle a file someone else put in the artifact store. The key is 32 random
bytes, written hex-encoded with mode ``0600`` the first time it is asked for;
workers sharing a data directory share the key (and each other's checkpoints).

Imports only the standard library and :mod:`modelog.store.errors`.

Examples
--------
>>> import pathlib, tempfile
>>> data_dir = pathlib.Path(tempfile.mkdtemp())
>>> key = worker_key(data_dir)
>>> len(key), worker_key(data_dir) == key, oct((data_dir / KEY_FILE).stat().st_mode & 0o777)
(32, True, '0o600')
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from modelog.store.errors import WorkerKeyError

__all__ = ["KEY_FILE", "worker_key"]

KEY_FILE = "worker.key"
"""The key's file name inside the data directory."""

_log = logging.getLogger(__name__)


def worker_key(data_dir: Path) -> bytes:
    """The worker key of ``data_dir``, created (32 random bytes, mode 0600) when missing.

    Raises
    ------
    WorkerKeyError
        The file exists but does not hold a hex key of at least 32 bytes.
    """
    path = Path(data_dir) / KEY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    if path.stat().st_mode & 0o077:
        _log.warning("%s is readable by other users; restrict it with chmod 600 %s", path, path)
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError:
        key = b""
    if len(key) < 32:
        raise WorkerKeyError(
            f"{path} does not hold a hex key of at least 32 bytes; delete it to have a new one "
            "created (checkpoints signed with the old key are then not restored)")
    return key
