"""MLflow's model-registry routes: registered models, versions, aliases, tags, search.

Version numbers and aliases are the registry's single writer's decisions:
``model-versions/create`` sends a ``ModelVersionRequested`` command (flavor
``mlflow``, the MLflow ``source`` as artifact URI) and answers with the
version the registry worker assigned -- created ``READY``; ``alias`` sends an
``AliasChangeRequested`` with who asked (the basic-auth user at the client's
address) and the reason ``set through the MLflow API`` (modelog requires a
reason to move ``production``); a rejection is MLflow's
``INVALID_PARAMETER_VALUE`` with the registry's reason. Descriptions, tags,
stages and deletions are MLflow metadata
(:class:`~modelog.models.mlflow_events.RegisteredModelChanged`,
:class:`~modelog.models.mlflow_events.ModelVersionChanged`).

May import :mod:`modelog.models`, :mod:`modelog.store` and :mod:`modelog.streams`.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from modelog.models import codec
from modelog.models import mlflow_events as me
from modelog.models.events import (
    AliasChangeRejected,
    AliasChangeRequested,
    ModelVersionRegistered,
    ModelVersionRequested,
)
from modelog.models.mlflow_fold import MlflowFold, RegisteredModel, VersionRecord
from modelog.store.filter_syntax import Field
from modelog.streams import mlflow_search as search
from modelog.streams.errors import MlflowApiError, RegistryTimeoutError
from modelog.streams.mlflow_common import (
    check_key,
    check_name,
    integer,
    invalid,
    missing,
    tag_list,
    tags_of,
    text,
)
from modelog.streams.mlflow_state import MlflowState

__all__ = ["ROUTES", "model_json", "version_json"]

Args = dict[str, Any]
ALIAS_REASON = "set through the MLflow API"
_MODEL_ID_TAG = "modelog.mlflow.model_id"
_SOURCE_TAG = "modelog.mlflow.source"


def _storage(fold: MlflowFold, source: str) -> str:
    """Where a version's files are: ``runs:/`` and ``models:/<id>`` resolved like MLflow's server.

    ``runs:/<run>/<name>/...`` is the run's MLflow 3 logged model called ``<name>``
    when there is one (the newest), else that path under the run's artifact root;
    anything else is kept as given.
    """
    if source.startswith("runs:/"):
        run_id, _, path = source.removeprefix("runs:/").strip("/").partition("/")
        head, _, rest = path.partition("/")
        models = [m for m in fold.logged_models.values()
                  if m.source_run_id == run_id and m.name == head and not m.deleted]
        if models:
            newest = max(models, key=lambda m: m.created_ms)
            return newest.artifact_location + (f"/{rest}" if rest else "")
        run = fold.runs.get(run_id)
        if run is not None:
            root = f"mlflow-artifacts:/{fold.experiment_id_of(run.experiment)}/{run_id}/artifacts"
            return f"{root}/{path}" if path else root
    elif source.startswith("models:/m-"):
        found = fold.logged_models.get(source.removeprefix("models:/").split("/")[0])
        if found is not None:
            return found.artifact_location
    elif source.startswith("models:/"):  # a copy of another version: its files
        ref = source.removeprefix("models:/").strip("/")
        name, _, version = ref.rpartition("/") if "@" not in ref else ref.partition("@")
        model = fold.models.get(name)
        if model is not None:
            number = model.aliases.get(version) if "@" in ref else (
                int(version) if version.isdigit() else None)
            held = model.versions.get(number) if number is not None else None
            if held is not None:
                return held.source
    return source


def version_json(model: RegisteredModel, v: VersionRecord) -> Args:
    """A model version as MLflow's JSON (always ``READY``: the registry decided it)."""
    out: Args = {"name": v.model, "version": str(v.version), "creation_timestamp": v.created_ms,
                 "last_updated_timestamp": v.updated_ms, "current_stage": v.stage,
                 "description": v.description, "source": v.tags.get(_SOURCE_TAG, v.source),
                 "run_id": v.run_id or "",
                 "status": "READY", "tags": tag_list(v.tags),
                 "aliases": sorted(a for a, n in model.aliases.items() if n == v.version)}
    if _MODEL_ID_TAG in v.tags:
        out["model_id"] = v.tags[_MODEL_ID_TAG]
    return out


def model_json(m: RegisteredModel) -> Args:
    """A registered model as MLflow's JSON, with its latest version per stage."""
    latest: dict[str, VersionRecord] = {}
    for v in _live_versions(m):
        if v.stage not in latest or v.version > latest[v.stage].version:
            latest[v.stage] = v
    return {"name": m.name, "creation_timestamp": m.created_ms,
            "last_updated_timestamp": m.updated_ms, "description": m.description,
            "tags": tag_list(m.tags),
            "aliases": [{"alias": a, "version": str(n)} for a, n in sorted(m.aliases.items())],
            "latest_versions": [version_json(m, v) for v in latest.values()]}


def _live_versions(m: RegisteredModel) -> list[VersionRecord]:
    return [v for _, v in sorted(m.versions.items()) if not v.deleted]


def _model(fold: MlflowFold, name: str) -> RegisteredModel:
    found = fold.models.get(name)
    if found is None or found.deleted or (not found.created_ms and not found.versions):
        raise missing(f"Registered Model with name={name} not found")
    return found


def _version(fold: MlflowFold, name: str, version: Any) -> tuple[RegisteredModel, VersionRecord]:
    model = _model(fold, name)
    try:
        number = int(str(version))
    except ValueError:
        raise invalid(f"Parameter 'version' must be an integer, got '{version}'.") from None
    found = model.versions.get(number)
    if found is None or found.deleted:
        raise missing(f"Model Version (name={name}, version={number}) not found")
    return model, found


# -- registered models --------------------------------------------------------------------
def create_model(state: MlflowState, args: Args, caller: Any) -> Args:
    name = check_name(text(args, "name"), "registered model")
    state.catch_up()
    with state.creating:
        with state.reading() as fold:
            found = fold.models.get(name)
            if found is not None and not found.deleted and (found.created_ms or found.versions):
                raise MlflowApiError("RESOURCE_ALREADY_EXISTS",
                                     f"Registered Model (name={name}) already exists.")
        state.write(state.new(me.RegisteredModelChanged, name, model=name, created=True,
                              description=str(args.get("description") or ""),
                              set_tags=tags_of(args)))
    with state.reading() as fold:
        return {"registered_model": model_json(fold.models[name])}


def get_model(state: MlflowState, args: Args, caller: Any) -> Args:
    with state.reading() as fold:
        return {"registered_model": model_json(_model(fold, text(args, "name")))}


def _change_model(state: MlflowState, args: Args, **change: Any) -> Args:
    name = text(args, "name")
    with state.reading() as fold:
        _model(fold, name)
    state.write(state.new(me.RegisteredModelChanged, name, model=name, **change))
    with state.reading() as fold:
        m = fold.models[name]
        return {"registered_model": model_json(m)} if not m.deleted else {}


def update_model(state: MlflowState, args: Args, caller: Any) -> Args:
    return _change_model(state, args, description=str(args.get("description") or ""))


def delete_model(state: MlflowState, args: Args, caller: Any) -> Args:
    _change_model(state, args, deleted=True)
    return {}


def rename_model(state: MlflowState, args: Args, caller: Any) -> Args:
    """Refused with a reason (not ``ENDPOINT_NOT_FOUND``): the registry keys a model by name."""
    name = text(args, "name")
    new_name = text(args, "new_name")
    with state.reading() as fold:
        _model(fold, name)
    raise invalid(
        f"Renaming registered model {name!r} to {new_name!r} is not supported: modelog's "
        "registry identifies a model's versions, aliases and their audit trail by its name "
        "(predictors serve models:/<name>@<alias>); register new versions under the new "
        "name instead (copy_model_version)")


def _tagging(change: Any) -> tuple[Any, Any]:
    """The set-tag and delete-tag handlers of what ``change`` changes."""

    def set_tag(state: MlflowState, args: Args, caller: Any) -> Args:
        key = check_key(text(args, "key"), "tag")
        change(state, args, set_tags={key: str(args.get("value") or "")})
        return {}

    def delete_tag(state: MlflowState, args: Args, caller: Any) -> Args:
        change(state, args, removed_tags=[text(args, "key")])
        return {}

    return set_tag, delete_tag


def search_models(state: MlflowState, args: Args, caller: Any) -> Args:
    expr = search.parse(args.get("filter"))
    order = _order(args.get("order_by"), "name")
    with state.reading() as fold:
        found = [m for m in fold.models.values()
                 if not m.deleted and (m.created_ms or m.versions)]

        def lookup(kind: str, key: str, m: RegisteredModel) -> Any:
            if kind == "tag":
                return m.tags.get(key)
            return {"name": m.name, "creation_timestamp": m.created_ms,
                    "last_updated_timestamp": m.updated_ms}.get(key)

        hits = [m for m in found if search.matches(expr, partial(lookup, m=m), absent_differs=True)]
        hits.sort(key=lambda m: search.sort_key(order, lambda k, f: lookup(k, f, m)))
        chunk, token = search.page(hits, integer(args, "max_results", 100),
                                   args.get("page_token"), limit=1000)
        answer: Args = {"registered_models": [model_json(m) for m in chunk]}
    if token:
        answer["next_page_token"] = token
    return answer


def latest_versions(state: MlflowState, args: Args, caller: Any) -> Args:
    stages = args.get("stages") or []
    stages = [stages] if isinstance(stages, str) else list(stages)
    with state.reading() as fold:
        m = _model(fold, text(args, "name"))
        latest = model_json(m)["latest_versions"]
    return {"model_versions": [v for v in latest
                               if not stages or v["current_stage"].lower() in
                               {s.lower() for s in stages}]}


# -- model versions ---------------------------------------------------------------------------
def create_version(state: MlflowState, args: Args, caller: Any) -> Args:
    name = text(args, "name")
    source = text(args, "source")
    tags = tags_of(args)
    run_id = args.get("run_id") or None
    with state.reading() as fold:
        _model(fold, name)
        logged = fold.logged_models.get(str(args.get("model_id") or ""))
        if run_id is None and logged is not None:  # MLflow 3: the logged model knows its run
            run_id = logged.source_run_id
        storage = _storage(fold, source)
    if storage != source:
        tags[_SOURCE_TAG] = source
    command_id = state.client.new_id()
    command = ModelVersionRequested(
        id=command_id, time=codec.utcnow(), aggregate=name,
        producer=state.client.settings.producer_name, command_id=command_id, model=name,
        run_id=run_id, flavor="mlflow", artifact_uri=storage,
        description=str(args.get("description") or ""), actor=caller.actor)
    try:
        answer = state.command(command)
    except RegistryTimeoutError as exc:
        raise MlflowApiError("TEMPORARILY_UNAVAILABLE", str(exc), 503) from None
    assert isinstance(answer, ModelVersionRegistered)
    if args.get("model_id"):
        tags[_MODEL_ID_TAG] = str(args["model_id"])
    if tags:
        state.write(state.new(me.ModelVersionChanged, name, model=name,
                              model_version=answer.model_version, set_tags=tags))
    with state.reading() as fold:
        m, v = _version(fold, name, answer.model_version)
        return {"model_version": version_json(m, v)}


def get_version(state: MlflowState, args: Args, caller: Any) -> Args:
    with state.reading() as fold:
        m, v = _version(fold, text(args, "name"), text(args, "version"))
        return {"model_version": version_json(m, v)}


def _change_version(state: MlflowState, args: Args, **change: Any) -> Args:
    name, number = text(args, "name"), text(args, "version")
    with state.reading() as fold:
        _, v = _version(fold, name, number)
    state.write(state.new(me.ModelVersionChanged, name, model=name, model_version=v.version,
                          **change))
    with state.reading() as fold:
        m = fold.models[name]
        return {"model_version": version_json(m, m.versions[v.version])}


def update_version(state: MlflowState, args: Args, caller: Any) -> Args:
    return _change_version(state, args, description=str(args.get("description") or ""))


def delete_version(state: MlflowState, args: Args, caller: Any) -> Args:
    _change_version(state, args, deleted=True)
    return {}


def transition_stage(state: MlflowState, args: Args, caller: Any) -> Args:
    stage = text(args, "stage")
    canonical = {s.lower(): s for s in ("None", "Staging", "Production", "Archived")}
    if stage.lower() not in canonical:
        raise invalid(f"invalid model version stage {stage!r}: one of None, Staging, "
                      "Production, Archived")
    return _change_version(state, args, stage=canonical[stage.lower()])


def download_uri(state: MlflowState, args: Args, caller: Any) -> Args:
    with state.reading() as fold:
        _, v = _version(fold, text(args, "name"), text(args, "version"))
        return {"artifact_uri": v.source}


def search_versions(state: MlflowState, args: Args, caller: Any) -> Args:
    expr = search.parse(args.get("filter"), _VERSION_FIELDS)
    order = _order(args.get("order_by"), "last_updated_timestamp", descending=True)
    with state.reading() as fold:
        found = [(m, v) for m in fold.models.values() if not m.deleted
                 for v in _live_versions(m)]

        def lookup(kind: str, key: str, mv: tuple[RegisteredModel, VersionRecord]) -> Any:
            v = mv[1]
            if kind == "tag" and key.startswith(search.EXTRA):
                kind, key = "attribute", key.removeprefix(search.EXTRA)
            elif kind == "tag":
                return v.tags.get(key)
            return {"name": v.model, "run_id": v.run_id, "version": v.version,
                    "version_number": v.version,
                    "source_path": v.tags.get(_SOURCE_TAG, v.source),
                    "creation_timestamp": v.created_ms,
                    "last_updated_timestamp": v.updated_ms}.get(key)

        hits = [mv for mv in found if search.matches(expr, partial(lookup, mv=mv),
                                                         absent_differs=True)]
        hits.sort(key=lambda mv: (search.sort_key(order, lambda k, f: lookup(k, f, mv)),
                                  -mv[1].version))
        chunk, token = search.page(hits, integer(args, "max_results", 10_000),
                                   args.get("page_token"), limit=200_000)
        answer: Args = {"model_versions": [version_json(m, v) for m, v in chunk]}
    if token:
        answer["next_page_token"] = token
    return answer


# -- aliases -------------------------------------------------------------------------------
def _alias_command(state: MlflowState, name: str, alias: str, version: int | None,
                   caller: Any) -> None:
    command_id = state.client.new_id()
    command = AliasChangeRequested(
        id=command_id, time=codec.utcnow(), aggregate=name,
        producer=state.client.settings.producer_name, command_id=command_id, model=name,
        alias=alias, model_version=version, actor=caller.actor, reason=ALIAS_REASON)
    try:
        answer = state.command(command)
    except RegistryTimeoutError as exc:
        raise MlflowApiError("TEMPORARILY_UNAVAILABLE", str(exc), 503) from None
    if isinstance(answer, AliasChangeRejected):
        raise invalid(f"the registry refused: {answer.reason}")


def _check_alias(alias: str) -> str:
    if alias.lower() == "latest" or (alias[:1].lower() == "v" and alias[1:].isdigit()):
        raise invalid(f"invalid alias {alias!r}: 'latest' and 'v<number>' are reserved")
    return check_name(alias, "alias")


def set_alias(state: MlflowState, args: Args, caller: Any) -> Args:
    name, alias = text(args, "name"), _check_alias(text(args, "alias"))
    with state.reading() as fold:
        _, v = _version(fold, name, text(args, "version"))
    _alias_command(state, name, alias, v.version, caller)
    return {}


def delete_alias(state: MlflowState, args: Args, caller: Any) -> Args:
    name, alias = text(args, "name"), text(args, "alias")
    with state.reading() as fold:
        m = _model(fold, name)
        if alias not in m.aliases:
            return {}  # MLflow: deleting an absent alias is a no-op
    _alias_command(state, name, alias, None, caller)
    return {}


def get_by_alias(state: MlflowState, args: Args, caller: Any) -> Args:
    name, alias = text(args, "name"), text(args, "alias")
    with state.reading() as fold:
        m = _model(fold, name)
        if alias not in m.aliases:
            raise invalid(f"Registered model alias {alias} not found.")
        _, v = _version(fold, name, m.aliases[alias])
        return {"model_version": version_json(m, v)}


_VERSION_FIELDS = ("source_path", "version_number", "creation_timestamp",
                   "last_updated_timestamp")


def _order(order_by: Any, default: str, *, descending: bool = False,
           ) -> list[tuple[Field, bool]]:
    items = [order_by] if isinstance(order_by, str) else list(order_by or [])
    out: list[tuple[Field, bool]] = []
    for item in items:
        words = str(item).split()
        if not words or len(words) > 2 or (len(words) == 2 and words[1].upper() not in (
                "ASC", "DESC")):
            raise invalid(f"invalid order_by clause {item!r}: <field> [ASC|DESC]")
        field = words[0].removeprefix("attributes.").removeprefix("attribute.")
        if field == "timestamp":
            field = "creation_timestamp"
        out.append((Field("attribute", field), len(words) == 2 and words[1].upper() == "DESC"))
    return out or [(Field("attribute", default), descending)]


set_model_tag, delete_model_tag = _tagging(_change_model)
set_version_tag, delete_version_tag = _tagging(_change_version)

ROUTES: tuple[tuple[str, str, Any], ...] = (
    ("POST", "/registered-models/create", create_model),
    ("GET", "/registered-models/get", get_model),
    ("PATCH", "/registered-models/update", update_model),
    ("POST", "/registered-models/rename", rename_model),
    ("DELETE", "/registered-models/delete", delete_model),
    ("GET", "/registered-models/search", search_models),
    ("POST", "/registered-models/get-latest-versions", latest_versions),
    ("GET", "/registered-models/get-latest-versions", latest_versions),
    ("POST", "/registered-models/set-tag", set_model_tag),
    ("DELETE", "/registered-models/delete-tag", delete_model_tag),
    ("POST", "/registered-models/alias", set_alias),
    ("DELETE", "/registered-models/alias", delete_alias),
    ("GET", "/registered-models/alias", get_by_alias),
    ("POST", "/model-versions/create", create_version),
    ("GET", "/model-versions/get", get_version),
    ("PATCH", "/model-versions/update", update_version),
    ("DELETE", "/model-versions/delete", delete_version),
    ("GET", "/model-versions/search", search_versions),
    ("GET", "/model-versions/get-download-uri", download_uri),
    ("POST", "/model-versions/transition-stage", transition_stage),
    ("POST", "/model-versions/set-tag", set_version_tag),
    ("DELETE", "/model-versions/delete-tag", delete_version_tag),
)
"""``(method, path under /api/2.0/mlflow, handler)`` of every registry route."""
