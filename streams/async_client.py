"""The SDK for asyncio code: :class:`AsyncClient` and :func:`connect_async`.

A thin layer over the synchronous :class:`~modelog.streams.sdk.Client`:
methods that only enqueue stay plain, everything that waits for the broker or
the disk runs in a thread.

May import :mod:`modelog.models`, :mod:`modelog.store` and :mod:`modelog.streams`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from modelog.models.events import AliasRemoved, AliasSet, Event
from modelog.models.registry import RegistryState
from modelog.models.validation import Scalar
from modelog.streams.errors import ClientClosedError
from modelog.streams.producer import ProducerStats
from modelog.streams.run import DatasetVersion, Run
from modelog.streams.sdk import Client, connect
from modelog.streams.serving import AsyncPredictor

__all__ = ["AsyncClient", "connect_async"]


class AsyncClient:
    """The :class:`Client` for asyncio code; get one from :func:`connect_async`.

    ``log_prediction``, ``log_label`` and ``emit`` only enqueue, so they stay
    plain methods; everything that waits for the broker or the disk is a
    coroutine running the blocking work in a thread.

    Examples
    --------
    >>> async def serve():                                          # doctest: +SKIP
    ...     async with modelog.connect_async() as client:
    ...         pid = client.log_prediction("churn", 3, {"age": 42}, 0.8)
    ...         await client.set_alias("churn", "production", 3)
    """

    def __init__(self, **connect_kwargs: Any) -> None:
        self._kwargs = connect_kwargs
        self._client: Client | None = None

    async def open(self) -> AsyncClient:
        """Connect (in a thread); ``async with`` and ``await`` call it for you."""
        if self._client is None:
            self._client = await asyncio.to_thread(connect, **self._kwargs)
        return self

    def __await__(self) -> Any:
        return self.open().__await__()

    async def __aenter__(self) -> AsyncClient:
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def client(self) -> Client:
        """The underlying synchronous client."""
        if self._client is None:
            raise ClientClosedError(
                "not connected yet: use `async with modelog.connect_async(...) as client` "
                "or `client = await modelog.connect_async(...)`"
            )
        return self._client

    @property
    def stats(self) -> ProducerStats:
        return self.client.stats

    def log_prediction(
        self, model: str, version: int, inputs: Mapping[str, Scalar], output: Any, *,
        prediction_id: str | None = None, code_version: str | None = None,
        time: dt.datetime | None = None, probabilities: Mapping[Any, float] | None = None,
    ) -> str:
        """See :meth:`Client.log_prediction` (only enqueues)."""
        return self.client.log_prediction(model, version, inputs, output,
                                          prediction_id=prediction_id,
                                          code_version=code_version, time=time,
                                          probabilities=probabilities)

    def log_label(
        self, model: str, prediction_id: str, label: Any, *, time: dt.datetime | None = None
    ) -> None:
        """See :meth:`Client.log_label` (only enqueues)."""
        self.client.log_label(model, prediction_id, label, time=time)

    def emit(self, event: Event) -> None:
        """See :meth:`Client.emit` (only enqueues)."""
        self.client.emit(event)

    def start_run(
        self, experiment: str, name: str = "", *, tags: Mapping[str, str] | None = None,
        parent: Run | str | None = None, capture_code: bool = True,
    ) -> Run:
        """See :meth:`Client.start_run`; enter the run with ``async with``."""
        return self.client.start_run(experiment, name, tags=tags, parent=parent,
                                     capture_code=capture_code)

    async def log_dataset(
        self, name: str, data: Any, *, parents: Sequence[str] = (), description: str = ""
    ) -> DatasetVersion:
        """See :meth:`Client.log_dataset`."""
        return await asyncio.to_thread(self.client.log_dataset, name, data, parents=parents,
                                       description=description)

    async def get_dataset(self, name: str, version: str | int = "latest") -> Any:
        """See :meth:`Client.get_dataset`."""
        return await asyncio.to_thread(self.client.get_dataset, name, version)

    async def register_model(self, name: str, model: Any = None, **options: Any) -> int:
        """See :meth:`Client.register_model` (same keyword options)."""
        return await asyncio.to_thread(self.client.register_model, name, model, **options)

    async def set_alias(
        self, model: str, alias: str, version: int, *, reason: str = "",
        actor: str | None = None, expected_version: int | None = None, timeout: float = 30.0,
    ) -> AliasSet:
        """See :meth:`Client.set_alias`."""
        return await asyncio.to_thread(self.client.set_alias, model, alias, version,
                                       reason=reason, actor=actor,
                                       expected_version=expected_version, timeout=timeout)

    async def remove_alias(
        self, model: str, alias: str, *, reason: str = "", actor: str | None = None,
        expected_version: int | None = None, timeout: float = 30.0,
    ) -> AliasRemoved:
        """See :meth:`Client.remove_alias`."""
        return await asyncio.to_thread(self.client.remove_alias, model, alias, reason=reason,
                                       actor=actor, expected_version=expected_version,
                                       timeout=timeout)

    async def registry(self, name: str | None = None, *,
                       as_of: dt.datetime | None = None) -> RegistryState:
        """See :meth:`Client.registry`."""
        return await asyncio.to_thread(self.client.registry, name, as_of=as_of)

    async def load_model(self, name: str, version: int | None = None, *,
                         alias: str | None = None, **flavor_kwargs: Any) -> Any:
        """See :meth:`Client.load_model`."""
        return await asyncio.to_thread(self.client.load_model, name, version, alias=alias,
                                       **flavor_kwargs)

    def predictor(self, model: str, **options: Any) -> AsyncPredictor:
        """See :meth:`Client.predictor`; its async face (``await p.predict(inputs)``)."""
        return self.client.predictor(model, **options).aio()

    async def flush(self, timeout: float = 30.0) -> None:
        """See :meth:`Client.flush`."""
        await asyncio.to_thread(self.client.flush, timeout)

    async def close(self, timeout: float = 30.0) -> None:
        """See :meth:`Client.close`."""
        if self._client is not None:
            await asyncio.to_thread(self._client.close, timeout)


def connect_async(broker: str | None = None, **options: Any) -> AsyncClient:
    """An :class:`AsyncClient`; takes the same keyword options as :func:`connect`.

    Use ``async with connect_async(...) as client`` or
    ``client = await connect_async(...)``; the connection is made in a thread.
    A misspelt option fails here, not later when connecting.

    Examples
    --------
    >>> connect_async("localhost:9092", buffer_sise=10)
    Traceback (most recent call last):
    ...
    TypeError: got an unexpected keyword argument 'buffer_sise'
    """
    inspect.signature(connect).bind(broker, **options)
    return AsyncClient(broker=broker, **options)
