"""The registry from the command line: ``modelog registry show|register|alias|promote|rollback``.

``show`` reads the durable ledger (what the projector wrote); the others send a
registry command and wait for the registry worker's answer (``modelog up`` or
``modelog worker`` must run), exactly like the SDK calls they use.

Top layer: may import all of modelog.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from modelog.cli.common import (
    cell,
    checked_name,
    exit_on_error,
    fail,
    print_frame,
    reader_of,
    settings_of,
)
from modelog.errors import ModelogError

__all__ = ["registry_app"]

registry_app = typer.Typer(
    help="The model registry: versions, aliases, their history; register, promote, roll back.",
    no_args_is_help=True)
alias_app = typer.Typer(help="Point an alias at a version, or remove it.", no_args_is_help=True)
registry_app.add_typer(alias_app, name="alias")

SUFFIX_FLAVORS = {".skops": "sklearn", ".pkl": "river", ".pickle": "river",
                  ".json": "river-spec", ".pt": "pytorch", ".pth": "pytorch"}
"""The flavor a model file's suffix implies (``--flavor`` overrides it)."""

ModelArg = Annotated[str, typer.Argument(help="The model.", callback=checked_name)]
ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why (kept in the history).")]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds to wait for the registry's answer.")]


class CliUsageError(ModelogError):
    """A command line that cannot work as given (the message says what to pass instead)."""


@registry_app.command("show")
def registry_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The registered model.")],
    as_of: Annotated[str | None, typer.Option(
        "--as-of", help="ISO date or time (naive = UTC): the registry as it stood then.")
    ] = None,
) -> None:
    """A model's versions, where its aliases point (since when, who, why), its traffic
    policy and the full alias history.

    With --as-of: "what was in production on March 3rd at 14:00, and why":

        modelog registry show churn --as-of "2026-03-03 14:00"
    """
    from modelog.store.queries import parse_time
    from modelog.store.registry import registry_history, registry_state

    with exit_on_error():  # a time in the future or before the first event is refused
        reader = reader_of(ctx, as_of)
        when = parse_time(as_of) if as_of else None
        state = registry_state(reader, name, as_of=when)
        history = registry_history(reader, name)
    if when is not None:
        history = history[history["time"] <= when]
    at = f" as of {when.isoformat()}" if when is not None else ""
    versions = ", ".join(f"v{v}" for v in sorted(state.versions)) or "none"
    typer.echo(f"model {name}{at}: versions {versions}")
    typer.echo("aliases:" if state.aliases else "aliases: none")
    for alias in sorted(state.aliases):
        info = state.aliases[alias]
        who = f" by {info.actor}" if info.actor else ""
        why = f": {info.reason}" if info.reason else ""
        was = f" (was v{info.previous_version})" if info.previous_version is not None else ""
        typer.echo(f"  {alias} -> v{info.version} since {cell(info.since)}{who}{why}{was}")
    typer.echo(f"traffic: {state.traffic}" + (
        f" (since {cell(state.traffic.since)})" if state.traffic.since is not None else ""))
    if len(history):
        print_frame(history.drop(columns=["command_id", "event_id"]), "table",
                    title="alias history")
    if state.unverified:
        typer.echo(f"ignored {len(state.unverified)} registry record(s) that are not the "
                   "registry worker's answer to a recorded command:", err=True)
        for refused in state.unverified:
            typer.echo(f"  {refused}", err=True)


def _dataset(client: Any, spec: str) -> Any:
    """A data file (.csv/.parquet) or a logged dataset ``NAME[@VERSION]``."""
    if Path(spec).is_file():
        return Path(spec)
    name, _, version = spec.partition("@")
    return client.get_dataset(name, version or "latest")


def _flavor_of(path: Path, flavor: str | None) -> str:
    from modelog.models.flavors import FLAVORS

    chosen = flavor or SUFFIX_FLAVORS.get(path.suffix.lower())
    if chosen is None:
        raise CliUsageError(
            f"cannot tell the flavor of {path.name} from its suffix (known: "
            f"{', '.join(sorted(SUFFIX_FLAVORS))}); pass --flavor ({', '.join(FLAVORS)})")
    return chosen


def _check_loadable(data: bytes, flavor: str, allow_pickle: bool, trust: list[str]) -> None:
    """Load the file the way servers will, so a bad file is refused now, not in production."""
    from modelog.models.flavors import load

    if flavor == "river" and not allow_pickle:
        raise CliUsageError(
            "a River model file is a pickle: loading it runs whatever code it holds. Pass "
            "--allow-pickle if you wrote it yourself, or register the model from Python with "
            "client.register_model(name, model, online=True) (a safe specification)")
    if flavor in ("sklearn", "river", "river-spec"):
        load(data, flavor, **({"trusted": trust} if flavor == "sklearn" else {}))


@registry_app.command("register")
def registry_register(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The model to add a version to.",
                                        callback=checked_name)],
    file: Annotated[Path, typer.Argument(
        exists=True, dir_okay=False, readable=True,
        help="The model file: .skops (scikit-learn), .json (River specification, online), "
             ".pkl (River pickle, needs --allow-pickle), .pt (PyTorch state_dict).")],
    dataset: Annotated[str | None, typer.Option(
        help="Training data for the input signature: a .csv/.parquet file or a logged "
             "dataset NAME[@VERSION].")] = None,
    target: Annotated[str | None, typer.Option(
        help="The label column of --dataset (left out of the signature).")] = None,
    run: Annotated[str | None, typer.Option(help="The run id that trained it.")] = None,
    flavor: Annotated[str | None, typer.Option(
        help="sklearn, river, river-spec or pytorch (default: from the file suffix).")] = None,
    online: Annotated[bool | None, typer.Option(
        "--online/--offline", help="Learn on the stream in the worker (default: on for "
                                   "river-spec files).")] = None,
    description: Annotated[str, typer.Option(help="Free text kept with the version.")] = "",
    trust: Annotated[list[str] | None, typer.Option(
        help="Extra module prefix skops may load (scikit-learn files; repeatable).")] = None,
    allow_pickle: Annotated[bool, typer.Option(
        help="Accept a River pickle (loading it runs its code).")] = False,
    timeout: TimeoutOpt = 30.0,
) -> None:
    """Store a model file content-addressed and register it as the next version.

        modelog registry register churn model.skops --dataset train.parquet --target churned
    """
    from modelog.models.flavors import digest
    from modelog.models.validation import artifact_suffix
    from modelog.streams.sdk import connect

    with exit_on_error(), connect(settings=settings_of(ctx)) as client:
        chosen = _flavor_of(file, flavor)
        data = file.read_bytes()
        try:
            _check_loadable(data, chosen, allow_pickle, list(trust or ()))
        except CliUsageError:
            raise
        except Exception as exc:  # skops/json/pickle errors: say which file and flavor
            raise CliUsageError(f"{file} does not load as a {chosen} model: {exc}") from exc
        stored_digest, uri = client.artifacts.put_bytes(data, artifact_suffix(
            file.suffix.lstrip(".")))
        assert stored_digest == digest(data)
        version = client.register_model(
            name, run=run, flavor=chosen, artifact_uri=uri, artifact_digest=stored_digest,
            dataset=_dataset(client, dataset) if dataset else None, target=target,
            description=description,
            online=online if online is not None else chosen == "river-spec", timeout=timeout)
    typer.echo(f"registered {name} v{version} ({chosen}, sha256 {stored_digest[:12]})")


@alias_app.command("set")
def alias_set(
    ctx: typer.Context,
    name: ModelArg,
    alias: Annotated[str, typer.Argument(help="The alias (production, candidate, shadow...).",
                                         callback=checked_name)],
    version: Annotated[int, typer.Argument(min=1, help="The version it should point at.")],
    reason: ReasonOpt = "",
    expected: Annotated[int | None, typer.Option(
        help="Only if the alias points at this version now (optimistic concurrency).")] = None,
    timeout: TimeoutOpt = 30.0,
) -> None:
    """Point ALIAS of NAME at VERSION (production needs --reason)."""
    from modelog.streams.sdk import connect

    with exit_on_error(), connect(settings=settings_of(ctx)) as client:
        answer = client.set_alias(name, alias, version, reason=reason, expected_version=expected,
                                  timeout=timeout)
    was = f" (was v{answer.previous_version})" if answer.previous_version is not None else ""
    typer.echo(f"{name}@{alias} -> v{answer.model_version}{was}")


@alias_app.command("remove")
def alias_remove(
    ctx: typer.Context,
    name: ModelArg,
    alias: Annotated[str, typer.Argument(help="The alias to remove.", callback=checked_name)],
    reason: ReasonOpt = "",
    timeout: TimeoutOpt = 30.0,
) -> None:
    """Remove ALIAS from NAME (production needs --reason)."""
    from modelog.streams.sdk import connect

    with exit_on_error(), connect(settings=settings_of(ctx)) as client:
        answer = client.remove_alias(name, alias, reason=reason, timeout=timeout)
    typer.echo(f"{name}@{alias} removed (was v{answer.previous_version})")


@registry_app.command("promote")
def promote(
    ctx: typer.Context,
    name: ModelArg,
    version: Annotated[int, typer.Argument(min=1, help="The version to put in production.")],
    reason: Annotated[str, typer.Option("--reason", "-r", help=(
        "Why (kept in the history). Default: 'promoted from the command line by <you>'."))
    ] = "",
    timeout: TimeoutOpt = 30.0,
) -> None:
    """Point production at VERSION (the alias history keeps who, when and why)."""
    from modelog.streams.registry_client import default_actor
    from modelog.streams.sdk import connect

    with exit_on_error(), connect(settings=settings_of(ctx)) as client:
        answer = client.set_alias(
            name, "production", version, timeout=timeout,
            reason=reason or f"promoted from the command line by {default_actor()}")
    was = f" (was v{answer.previous_version})" if answer.previous_version is not None else ""
    typer.echo(f"{name}@production -> v{answer.model_version}{was}")


@registry_app.command("rollback")
def rollback(
    ctx: typer.Context,
    name: ModelArg,
    reason: Annotated[str, typer.Option("--reason", "-r", help=(
        "Why (kept in the history). Default: 'rolled back from the command line by <you>'."))
    ] = "",
    timeout: TimeoutOpt = 30.0,
) -> None:
    """Move production back to the version it pointed at before (from the registry history).

    Conditional on production not having moved meanwhile.
    """
    from modelog.models.registry import rollback_target
    from modelog.streams.registry_client import default_actor
    from modelog.streams.sdk import connect

    with exit_on_error(), connect(settings=settings_of(ctx)) as client:
        state = client.registry(name)
        current = state.aliases(name).get("production")
        target = rollback_target(state, name)
        if current is None or target is None:
            now = ("has no production version" if current is None
                   else f"has had only v{current.version} in production")
            fail(CliUsageError(
                f"{name} {now}, so there is nothing to roll back to; put a version in "
                f"production with `modelog registry promote {name} VERSION --reason ...`"))
        answer = client.set_alias(
            name, "production", target, expected_version=current.version, timeout=timeout,
            reason=reason or f"rolled back from the command line by {default_actor()}")
    typer.echo(f"{name}@production -> v{answer.model_version} (rolled back from "
               f"v{answer.previous_version})")
