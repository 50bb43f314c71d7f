"""Consumer positions kept with their effects.

A service that turns records into effects (the projector into DuckDB rows, alert
delivery into webhook calls) stores where to go on reading *in the same
transaction* as the effects, with the id of the broker's cluster it read from.
:func:`modelog.streams.kafka.resume_offset` decides from a :class:`StoredPosition`
where to resume. Pure data: no database, no broker.

Examples
--------
>>> StoredPosition(42, "cluster-a")
StoredPosition(next_offset=42, cluster_id='cluster-a')
"""

from __future__ import annotations

import dataclasses

__all__ = ["StoredPosition"]


@dataclasses.dataclass(frozen=True)
class StoredPosition:
    """The next offset to read of one partition, and the cluster it was read from."""

    next_offset: int
    cluster_id: str | None
