"""MLflow's proxied artifact API (``mlflow-artifacts:``) over modelog's content-addressed store.

``PUT /api/2.0/mlflow-artifacts/artifacts/<path>`` stores the body
content-addressed (:class:`~modelog.store.artifacts.ArtifactStore`) and records
:class:`~modelog.models.mlflow_events.ArtifactStored` (path -> digest); under a
run's artifact root (``<experiment>/<run id>/artifacts/...``) it also records
the run's ``ArtifactLogged``, so the file is in the run's lineage. ``GET`` of
the same path streams the bytes back after checking them against their digest;
``GET .../artifacts?path=<dir>`` lists a directory. Paths are checked: no
absolute paths, no ``..``, no backslashes.

May import :mod:`modelog.models`, :mod:`modelog.store` and :mod:`modelog.streams`.
"""

from __future__ import annotations

import posixpath
import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from modelog.models import mlflow_events as me
from modelog.models.events import ArtifactLogged
from modelog.models.validation import artifact_suffix
from modelog.streams.errors import MlflowApiError
from modelog.streams.mlflow_state import MlflowState

__all__ = ["check_path", "routes"]

_PREFIX = "/api/2.0/mlflow-artifacts/artifacts"
_RUN_ARTIFACT = re.compile(r"^[^/]+/(?P<run>[0-9a-f]{32})/artifacts/(?P<rel>.+)$")
MAX_UPLOAD = 2 * 1024**3


def check_path(path: str) -> str:
    """A relative, normalised artifact path, or ``INVALID_PARAMETER_VALUE``.

    >>> check_path("1/abc/artifacts/model/MLmodel")
    '1/abc/artifacts/model/MLmodel'
    >>> check_path("../etc/passwd")
    Traceback (most recent call last):
    ...
    modelog.streams.errors.MlflowApiError: invalid artifact path '../etc/passwd': ...
    """
    clean = posixpath.normpath(path) if path else ""
    if (path.startswith("/") or "\\" in path or "\x00" in path or clean.startswith("..")
            or ".." in path.split("/") or len(path) > 4096):
        raise MlflowApiError("INVALID_PARAMETER_VALUE",
                             f"invalid artifact path {path!r}: it must be relative, without "
                             "'..', backslashes or NUL")
    return "" if clean == "." else clean


def _error(exc: MlflowApiError) -> Response:
    return JSONResponse({"error_code": exc.error_code, "message": exc.message},
                        status_code=exc.status)


def routes(state: MlflowState) -> list[Route]:
    """The upload, download and list routes bound to ``state``."""

    async def upload(request: Request) -> Response:
        try:
            path = check_path(request.path_params["path"])
            if not path:
                raise MlflowApiError("INVALID_PARAMETER_VALUE", "an upload needs a file path")
            data = await request.body()
            if len(data) > MAX_UPLOAD:
                raise MlflowApiError("INVALID_PARAMETER_VALUE",
                                     f"{path} is larger than {MAX_UPLOAD} bytes")
            await run_in_threadpool(_store, state, path, data)
        except MlflowApiError as exc:
            return _error(exc)
        return JSONResponse({})

    async def download(request: Request) -> Response:
        try:
            path = check_path(request.path_params["path"])
            data = await run_in_threadpool(_read, state, path)
        except MlflowApiError as exc:
            return _error(exc)
        return Response(data, media_type="application/octet-stream")

    async def listing(request: Request) -> Response:
        try:
            root = check_path(request.query_params.get("path", ""))
        except MlflowApiError as exc:
            return _error(exc)
        with state.reading() as fold:
            files = _children(fold.artifacts, root)
        return JSONResponse({"files": files})

    async def delete(request: Request) -> Response:
        return _error(MlflowApiError(
            "INVALID_PARAMETER_VALUE", "modelog keeps every artifact: the artifact store is "
            "content-addressed and the log append-only, so artifacts cannot be deleted"))

    return [Route(_PREFIX, listing, methods=["GET"]),
            Route(_PREFIX + "/{path:path}", upload, methods=["PUT"]),
            Route(_PREFIX + "/{path:path}", download, methods=["GET"]),
            Route(_PREFIX + "/{path:path}", delete, methods=["DELETE"])]


def _store(state: MlflowState, path: str, data: bytes) -> None:
    suffix = posixpath.splitext(path)[1][1:]
    try:
        suffix = artifact_suffix(suffix)
    except Exception:  # an odd extension: store without one, the digest is what counts
        suffix = ""
    digest, uri = state.artifacts.put_bytes(data, suffix)
    events: list[Any] = [state.new(me.ArtifactStored, path[:128] or "artifact", path=path,
                                   uri=uri, digest=digest, size=len(data))]
    hit = _RUN_ARTIFACT.match(path)
    if hit is not None:
        with state.reading() as fold:
            known = hit["run"] in fold.runs
        if known:
            events.append(state.new(ArtifactLogged, hit["run"], run_id=hit["run"],
                                    path=hit["rel"], uri=uri, digest=digest, size=len(data)))
    state.write(*events)


def _read(state: MlflowState, path: str) -> bytes:
    with state.reading() as fold:
        found = fold.artifacts.get(path)
    if found is None:
        raise MlflowApiError("RESOURCE_DOES_NOT_EXIST", f"artifact {path} not found", 404)
    data: bytes = state.artifacts.get_bytes(found[0])
    return data


def _children(artifacts: dict[str, tuple[str, int]], root: str) -> list[dict[str, Any]]:
    prefix = f"{root}/" if root else ""
    files: dict[str, dict[str, Any]] = {}
    for path, (_, size) in artifacts.items():
        if not path.startswith(prefix):
            continue
        rest = path[len(prefix):]
        head, sep, _ = rest.partition("/")
        if sep:
            files.setdefault(head, {"path": head, "is_dir": True})
        else:
            files[head] = {"path": head, "is_dir": False, "file_size": size}
    return sorted(files.values(), key=lambda f: f["path"])
