"""``modelog replay``: a slice of the archived log as JSON lines, or into a topic.

The command line of :mod:`modelog.streams.replay` (which owns the logic); imports
it and :mod:`modelog.cli.common`.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from modelog.cli.common import exit_on_error, settings_of

__all__ = ["replay"]


def replay(
    ctx: typer.Context,
    since: Annotated[str | None, typer.Option(
        "--since", "--from", help="Start (inclusive, event time): ISO date or time (naive = "
        "UTC) or an age such as 2h, 30m, 7d.")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", "--to", help="End (exclusive), like --since.")] = None,
    topic: Annotated[list[str] | None, typer.Option(
        "--topic", help="Stream family or topic (serving, monitoring, registry, runs, ...; "
        "repeatable).")] = None,
    type_: Annotated[list[str] | None, typer.Option(
        "--type", help="Event type, e.g. PredictionMade (repeatable).")] = None,
    model: Annotated[str | None, typer.Option(help="Only events of this model.")] = None,
    version: Annotated[int | None, typer.Option(
        help="Only events of this model version.")] = None,
    aggregate: Annotated[str | None, typer.Option(
        help="Only events of this aggregate (model name, run id, ...).")] = None,
    to_topic: Annotated[str | None, typer.Option(
        "--to-topic", help="Produce into this topic instead of printing JSON lines.")] = None,
    to_broker: Annotated[str | None, typer.Option(
        "--to-broker", help="host:port of the broker --to-topic lives on (default: this "
        "deployment's).")] = None,
    append: Annotated[bool, typer.Option(
        "--append", help="Allow --to-topic to be a topic that already holds records.")] = False,
    rate: Annotated[float, typer.Option(
        help="At most this many events per second (0: as fast as possible).")] = 0.0,
    limit: Annotated[int | None, typer.Option(help="At most this many events.")] = None,
    fmt: Annotated[str, typer.Option(
        "--format", help="Output on stdout: jsonl (the only one).")] = "jsonl",
    progress: Annotated[bool, typer.Option(
        "--progress/--no-progress", help="Progress bar on stderr (when it is a terminal).")]
    = True,
) -> None:
    """Replay archived events (from the DuckDB ledger) by event time then id: as JSON lines
    on stdout, or with --to-topic into a topic, ids, times and keys kept.

    Example: `modelog replay --model demo-churn --type PredictionMade --since 2h | wc -l`."""
    from modelog.streams import replay as replaying
    from modelog.streams.errors import ReplayError

    s = settings_of(ctx)
    with exit_on_error():
        if fmt != "jsonl":
            raise ReplayError(f"--format={fmt!r} is not supported: use jsonl")
        if to_broker and not to_topic:
            raise ReplayError("--to-broker needs --to-topic (the topic to replay into)")
        query = replaying.ReplayQuery.build(s, since=since, until=until, topics=topic or (),
                                  types=type_ or (), model=model, version=version,
                                  aggregate=aggregate, limit=limit)
        with replaying.stderr_progress("replaying", enabled=progress) as bar:
            if to_topic:
                n = replaying.to_topic(s, query, to_topic, broker=to_broker, append=append,
                                       rate=rate, progress=bar)
            else:
                n = replaying.write_lines(s, query, sys.stdout, rate=rate, progress=bar)
    if n == 0:
        typer.echo(f"no events match: {query.describe()}", err=True)
    elif to_topic:
        typer.echo(f"replayed {n:,} events into {to_topic}", err=True)
