"""modelog: event-sourced ML model management.

``import modelog`` is cheap: the SDK (and confluent-kafka under it) is loaded
on first use of :func:`connect` and friends.

Examples
--------
>>> import modelog
>>> issubclass(modelog.ModelogError, Exception)
True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from modelog.errors import ModelogError

if TYPE_CHECKING:
    from modelog.streams.async_client import AsyncClient, connect_async
    from modelog.streams.registry_client import registry_as_of
    from modelog.streams.run import DatasetVersion, Run
    from modelog.streams.sdk import Client, connect

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "DatasetVersion",
    "ModelogError",
    "Run",
    "__version__",
    "connect",
    "connect_async",
    "registry_as_of",
]

_LAZY = {
    "AsyncClient": "modelog.streams.async_client",
    "Client": "modelog.streams.sdk",
    "DatasetVersion": "modelog.streams.run",
    "Run": "modelog.streams.run",
    "connect": "modelog.streams.sdk",
    "connect_async": "modelog.streams.async_client",
    "registry_as_of": "modelog.streams.registry_client",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'modelog' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
