"""Lifecycle queries: runs, datasets, lineage and the registry's history.

What MLflow's tracking server and model registry answer, read from the
projection (:mod:`modelog.store.schema`) through a :class:`~modelog.store.reader.Reader`
-- or anything with the same ``query(sql, params) -> pyarrow.Table`` method. Every
query is parameterised SQL; the decisions (pivoting params and metrics into
columns, resolving references, walking the lineage graph) are pure functions
of the rows, tested without a database.

References
----------
``lineage`` and friends accept:

* ``model@vN`` -- a registered model version; ``model@alias`` -- the version the
  alias points to now; a bare model name -- its latest version;
* ``dataset@N`` (or ``@vN``) -- a dataset version number; ``dataset@<hex>`` -- the
  version whose digest starts so; a bare dataset name -- its latest version;
* a run id (or a unique prefix of one); ``git:<commit>``.

An unknown run, dataset, version or model raises :class:`~modelog.store.errors.NotFoundError`
naming what exists ("dataset churn-train has versions 1, 2, 3").

Examples
--------
>>> rows = [{"version": 1, "digest": "ab12" * 8}, {"version": 2, "digest": "cd34" * 8}]
>>> pick_version("churn-train", rows, "2")["digest"][:4], pick_version("churn-train", rows,
...     "ab1")["version"]
('cd34', 1)
>>> pick_version("churn-train", rows, "7")
Traceback (most recent call last):
...
modelog.store.errors.NotFoundError: dataset churn-train has no version 7: it has versions 1, 2
>>> edges = [LineageEdge(Node("dataset", "d@1"), Node("run", "r1"), "used:training"),
...          LineageEdge(Node("run", "r1"), Node("model", "m@v1"), "produced")]
>>> tree = walk(edges, Node("model", "m@v1"), direction="up")
>>> print(tree.render())
model m@v1
└── upstream
    └── run r1  produced
        └── dataset d@1  used:training
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import pandas as pd
import pyarrow as pa

from modelog.models.errors import ProfileError
from modelog.models.profile import ProfileDiff, diff_profiles
from modelog.models.registry import ModelState, fold
from modelog.models.registry import as_of as registry_as_of
from modelog.store.errors import NotFoundError, QueryError
from modelog.store.filters import select_runs

__all__ = [
    "Direction",
    "LineageEdge",
    "LineageTree",
    "Node",
    "QuerySource",
    "compare_runs",
    "dataset_diff",
    "lineage",
    "lineage_of_prediction",
    "list_datasets",
    "list_runs",
    "parse_time",
    "pick_version",
    "pivot_runs",
    "registry_history",
    "registry_state",
    "show_run",
    "walk",
]

Direction = Literal["up", "down", "both"]
RUN_COLUMNS = ("run_id", "experiment", "name", "status", "started", "ended")
"""The attribute columns :func:`list_runs` returns before ``params.*`` and ``metrics.*``."""
_REGISTRY_TYPES = ("ModelVersionRegistered", "AliasSet", "AliasRemoved", "AliasChangeRejected")
_VERSION_REF = re.compile(r"v?(\d{1,6})")


class QuerySource(Protocol):
    """What the queries need: read-only SQL with ``?`` parameters (a ``Reader`` is one)."""

    def query(self, sql: str, params: Any = None) -> pa.Table:
        """Run ``sql`` with ``params`` and return the result."""
        ...


def _rows(source: QuerySource, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    return source.query(sql, list(params)).to_pylist()  # type: ignore[no-any-return]


def _frame(source: QuerySource, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
    df: pd.DataFrame = source.query(sql, list(params)).to_pandas()
    return df


def _listing(values: Iterable[Any], most: int = 20) -> str:
    shown = [str(v) for v in values]
    more = f" and {len(shown) - most} more" if len(shown) > most else ""
    return ", ".join(shown[:most]) + more if shown else "none"


def _json(value: Any) -> Any:
    """A JSON column's value (text through the query server, or already parsed)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


# -- runs --------------------------------------------------------------------------------
def pivot_runs(runs: pd.DataFrame, values: pd.DataFrame) -> pd.DataFrame:
    """Add one ``params.<k>``/``metrics.<k>`` column per key to ``runs``, in ``runs``' order.

    Parameters
    ----------
    runs
        One row per run with a ``run_id`` column.
    values
        ``run_id``, ``column`` (``params.lr``...), ``value`` rows.

    Examples
    --------
    >>> runs = pd.DataFrame({"run_id": ["a", "b"]})
    >>> vals = pd.DataFrame({"run_id": ["b", "a", "a"], "column": ["metrics.f1", "params.lr",
    ...                      "metrics.f1"], "value": [0.9, "0.1", 0.8]})
    >>> pivot_runs(runs, vals).values.tolist()
    [['a', '0.1', 0.8], ['b', None, 0.9]]
    """
    out = runs.reset_index(drop=True).copy()
    columns = sorted(set(values["column"]) if len(values) else set(),
                     key=lambda c: (not c.startswith("params."), c))
    for col in columns:
        part = values[values["column"] == col]
        mapping = dict(zip(part["run_id"], part["value"], strict=True))
        series = [mapping.get(r) for r in out["run_id"]]
        out[col] = pd.Series(series, dtype=float if col.startswith("metrics.") else object)
        if not col.startswith("metrics."):
            out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out


def _run_values(source: QuerySource, run_ids: Sequence[str]) -> pd.DataFrame:
    """``run_id``, ``column``, ``value`` of the params and latest metrics of ``run_ids``."""
    ids = list(run_ids)
    params = _rows(source, "SELECT run_id, 'params.' || key AS column, value FROM run_params "
                           "WHERE list_contains(?, run_id)", [ids])
    metrics = _rows(source, "SELECT run_id, 'metrics.' || key AS column, value "
                            "FROM run_latest_metrics WHERE list_contains(?, run_id)", [ids])
    return pd.DataFrame(params + metrics, columns=["run_id", "column", "value"])


def list_runs(
    reader: QuerySource,
    filter: str = "",
    order_by: str | Sequence[str] = (),
    experiment: str | None = None,
    limit: int = 100,
) -> pd.DataFrame:
    """Runs matching an MLflow-style filter, with their params and latest metrics as columns.

    Parameters
    ----------
    filter
        ``"metrics.f1 > 0.8 and params.model = 'rf'"`` (see :mod:`modelog.store.filters`).
    order_by
        ``"metrics.f1 DESC"`` or several; default: newest first.
    experiment
        Only this experiment's runs.
    limit
        At most this many runs.

    Returns
    -------
    pandas.DataFrame
        ``run_id, experiment, name, status, started, ended``, then ``params.<k>``
        (text) and ``metrics.<k>`` (float) columns, sorted by key.
    """
    sql, params = select_runs(filter, order_by, limit=limit)
    if experiment is not None:
        # Shadow ``runs`` with the experiment's runs, so the compiled query is used untouched.
        sql = "WITH runs AS (SELECT * FROM main.runs WHERE experiment = ?) " + sql
        params = [experiment, *params]
    runs: pd.DataFrame = reader.query(sql, params).select(list(RUN_COLUMNS)).to_pandas()
    if runs.empty:
        return runs
    return pivot_runs(runs, _run_values(reader, list(runs["run_id"])))


def _resolve_run(source: QuerySource, ref: str) -> dict[str, Any]:
    """The ``runs`` row of run ``ref`` (an id or a unique prefix of one)."""
    rows = _rows(source, "SELECT * FROM runs WHERE starts_with(run_id, ?) ORDER BY run_id "
                         "LIMIT 11", [ref])
    exact = [r for r in rows if r["run_id"] == ref]
    if exact:
        return exact[0]
    if len(rows) == 1:
        return rows[0]
    if rows:
        raise NotFoundError(f"run id prefix {ref!r} is ambiguous: it matches "
                            f"{_listing((r['run_id'] for r in rows), 10)}; give more of the id")
    info = _rows(source, "SELECT count(*) AS n, list(run_id ORDER BY started DESC NULLS LAST)"
                         "[1:5] AS newest FROM runs")[0]
    raise NotFoundError(
        f"no run {ref!r}: there are {info['n']} runs"
        + (f" (newest: {_listing(info['newest'])}); `modelog runs list` shows them"
           if info["n"] else " (nothing was logged yet)"))


def show_run(reader: QuerySource, run_id: str) -> dict[str, Any]:
    """Everything about one run.

    Returns
    -------
    dict
        The ``runs`` attributes (``run_id``, ``experiment``, ``name``, ``status``,
        ``started``, ``ended``, ``parent_run_id``, ``producer``), and ``tags``,
        ``code`` (the code version), ``failure`` (``{"error", "traceback"}`` or
        ``None``), ``params`` (key -> text), ``metrics`` (key -> latest value),
        ``metric_history`` (key -> ``{"points", "first_step", "last_step"}``),
        ``datasets``, ``artifacts``, ``children`` and ``models`` (lists of dicts).

    Raises
    ------
    NotFoundError
        No run has that id (or prefix), or the prefix is ambiguous.
    """
    run = _resolve_run(reader, run_id)
    rid = run["run_id"]
    out: dict[str, Any] = {k: run.get(k) for k in (*RUN_COLUMNS, "parent_run_id", "producer")}
    out["tags"] = _json(run.get("tags")) or {}
    code = _json(run.get("code")) or {}
    out["code"] = {k: v for k, v in code.items() if v not in (None, {}, "")} if isinstance(
        code, dict) else code
    out["failure"] = ({"error": run.get("error"), "traceback": run.get("traceback") or ""}
                      if run.get("status") == "failed" else None)
    out["params"] = {r["key"]: r["value"] for r in _rows(
        reader, "SELECT key, value FROM run_params WHERE run_id = ? ORDER BY key", [rid])}
    out["metrics"] = {r["key"]: r["value"] for r in _rows(
        reader, "SELECT key, value FROM run_latest_metrics WHERE run_id = ? ORDER BY key", [rid])}
    out["metric_history"] = {r.pop("key"): r for r in _rows(
        reader, "SELECT key, count(*) AS points, min(step) AS first_step, max(step) AS last_step "
                "FROM run_metrics WHERE run_id = ? GROUP BY key ORDER BY key", [rid])}
    out["datasets"] = _rows(reader, "SELECT dataset, digest, context, time FROM run_datasets "
                                    "WHERE run_id = ? ORDER BY time, dataset", [rid])
    out["artifacts"] = _rows(reader, "SELECT path, uri, digest, size, time FROM run_artifacts "
                                     "WHERE run_id = ? ORDER BY path", [rid])
    out["children"] = _rows(reader, "SELECT run_id, name, status, started FROM runs "
                                    "WHERE parent_run_id = ? ORDER BY started, run_id", [rid])
    out["models"] = _rows(reader, "SELECT model, model_version, time FROM model_versions "
                                  "WHERE run_id = ? ORDER BY model, model_version", [rid])
    return out


def compare_table(values: pd.DataFrame, run_ids: Sequence[str]) -> pd.DataFrame:
    """Params and metrics side by side: one row per ``params.<k>``/``metrics.<k>``, one
    column per run, and ``differs`` (a missing value differs from any value).

    Examples
    --------
    >>> vals = pd.DataFrame({"run_id": ["a", "b", "a"], "column": ["params.lr", "params.lr",
    ...                      "metrics.f1"], "value": ["0.1", "0.1", 0.8]})
    >>> compare_table(vals, ["a", "b"]).values.tolist()
    [['params.lr', '0.1', '0.1', False], ['metrics.f1', 0.8, None, True]]
    """
    ids = [str(r) for r in run_ids]
    cells: dict[str, dict[str, Any]] = defaultdict(dict)
    for rid, col, value in zip(values["run_id"], values["column"], values["value"], strict=True):
        cells[col][rid] = None if value is None or value != value else value
    rows = []
    for col in sorted(cells, key=lambda c: (not c.startswith("params."), c)):
        row = {"key": col, **{rid: cells[col].get(rid) for rid in ids}}
        row["differs"] = len({repr(cells[col].get(rid)) for rid in ids}) > 1
        rows.append(row)
    out = pd.DataFrame(rows, columns=["key", *ids, "differs"], dtype=object)
    out["differs"] = out["differs"].astype(bool)
    return out


def compare_runs(reader: QuerySource, run_ids: Sequence[str]) -> pd.DataFrame:
    """Compare runs' params and latest metrics (see :func:`compare_table`).

    Run ids may be unique prefixes; the columns are the full ids.
    """
    if not run_ids:
        raise QueryError("give at least one run id to compare")
    ids = [_resolve_run(reader, r)["run_id"] for r in run_ids]
    return compare_table(_run_values(reader, ids), ids)


# -- datasets ----------------------------------------------------------------------------
def list_datasets(reader: QuerySource, name: str | None = None) -> pd.DataFrame:
    """Datasets (one row per name), or the versions of dataset ``name``.

    Without ``name``: ``name, versions, latest_version, latest_digest, num_rows,
    updated``. With it: ``version, digest, num_rows, parents, uri, description,
    time, producer, has_profile``, oldest first.
    """
    if name is None:
        return _frame(reader, """
SELECT name, count(*) AS versions, max(version) AS latest_version,
       arg_max(digest, version) AS latest_digest, arg_max(num_rows, version) AS num_rows,
       max(time) AS updated
FROM datasets GROUP BY name ORDER BY name""")
    df = _frame(reader, """
SELECT version, digest, num_rows, parents, uri, description, time, producer,
       profile IS NOT NULL AND json_type(profile) <> 'NULL' AS has_profile
FROM datasets WHERE name = ? ORDER BY version""", [name])
    if df.empty:
        _unknown_dataset(reader, name)
    return df


def _unknown_dataset(source: QuerySource, name: str) -> None:
    names = [r["name"] for r in _rows(source, "SELECT DISTINCT name FROM datasets ORDER BY 1")]
    raise NotFoundError(f"no dataset {name!r}; datasets: {_listing(names)}")


def pick_version(name: str, rows: Sequence[Mapping[str, Any]], ref: str | int) -> Mapping[str, Any]:
    """The version row of dataset ``name`` that ``ref`` designates.

    ``ref`` is a version number (``2``, ``"2"``, ``"v2"``) or a digest prefix
    (``"9f3a"``); ``rows`` are the dataset's versions (``version``, ``digest``...).

    Raises
    ------
    NotFoundError
        No such version (the message lists the versions), or an ambiguous prefix.
    """
    text = str(ref).strip().lower()
    versions = ", ".join(str(r["version"]) for r in rows)
    match = _VERSION_REF.fullmatch(text)
    if match:
        found = [r for r in rows if int(r["version"]) == int(match.group(1))]
        what = f"version {int(match.group(1))}"
    else:
        found = [r for r in rows if text and str(r["digest"]).startswith(text)]
        what = f"version with a digest starting {text!r}"
    if len(found) > 1:
        raise NotFoundError(f"digest prefix {text!r} of dataset {name} matches versions "
                            f"{', '.join(str(r['version']) for r in found)}; give more digits")
    if not found:
        raise NotFoundError(f"dataset {name} has no {what}: it has versions {versions}")
    return found[0]


def _dataset_version(source: QuerySource, name: str, ref: str | int) -> Mapping[str, Any]:
    rows = _rows(source, "SELECT name, version, digest, num_rows, profile, time FROM datasets "
                         "WHERE name = ? ORDER BY version", [name])
    if not rows:
        _unknown_dataset(source, name)
    return pick_version(name, rows, ref)


def dataset_diff(reader: QuerySource, name: str, v1: str | int, v2: str | int) -> ProfileDiff:
    """What changed from version ``v1`` to ``v2`` of dataset ``name`` (profiles' diff).

    ``v1``/``v2`` are version numbers or digest prefixes; render the result with
    ``.render()``.

    Raises
    ------
    NotFoundError
        Unknown dataset or version.
    ProfileError
        A version was logged without a profile.
    """
    old, new = _dataset_version(reader, name, v1), _dataset_version(reader, name, v2)
    profiles = []
    for row in (old, new):
        profile = _json(row["profile"])
        if not isinstance(profile, dict):
            raise ProfileError(
                f"dataset {name} version {row['version']} (digest {str(row['digest'])[:12]}) "
                "has no profile, so there is nothing to compare; log that version again "
                "with a profile (modelog.models.profile.profile_table) to diff it")
        profiles.append(profile)
    return diff_profiles(profiles[0], profiles[1], old_rows=old["num_rows"],
                         new_rows=new["num_rows"])


# -- registry ----------------------------------------------------------------------------
def _unknown_model(source: QuerySource, model: str) -> NotFoundError:
    models = [r["model"] for r in _rows(
        source, "SELECT model FROM model_versions UNION SELECT model FROM alias_history "
                "ORDER BY 1")]
    return NotFoundError(f"no model {model!r} in the registry; models: {_listing(models)}")


def registry_history(reader: QuerySource, model: str) -> pd.DataFrame:
    """Every alias change of ``model``, oldest first (the ``alias_history`` rows).

    Columns: ``time, alias, action, model_version, previous_version, actor,
    reason, command_id, event_id``.
    """
    df = _frame(reader, """
SELECT time, alias, action, model_version, previous_version, actor, reason, command_id, event_id
FROM alias_history WHERE model = ? ORDER BY time, event_id""", [model])
    if df.empty and not _rows(reader, "SELECT 1 FROM model_versions WHERE model = ? LIMIT 1",
                              [model]):
        raise _unknown_model(reader, model)
    return df


def registry_state(reader: QuerySource, model: str,
                   as_of: dt.datetime | None = None) -> ModelState:
    """The registry's state of ``model``, folded from its registry events in the ledger.

    Parameters
    ----------
    as_of
        Fold only the events at or before this time (naive = UTC): "what was in
        production on March 3rd at 14:00, and why".

    Returns
    -------
    ModelState
        Versions, aliases (with since/who/why) and history; empty when
        ``as_of`` predates the model.
    """
    from modelog.models.codec import decode

    placeholders = ", ".join("?" for _ in _REGISTRY_TYPES)
    rows = _rows(reader, f"SELECT payload FROM events WHERE aggregate = ? AND type IN "
                         f"({placeholders}) ORDER BY time, id", [model, *_REGISTRY_TYPES])
    events = [decode(r["payload"]) for r in rows]
    if not events:
        raise _unknown_model(reader, model)
    state = fold(events) if as_of is None else registry_as_of(events, _utc(as_of))
    return state.model(model) or ModelState(name=model)


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t


def parse_time(text: str) -> dt.datetime:
    """An ISO date or time as an aware datetime (naive means UTC; a date means midnight).

    Examples
    --------
    >>> parse_time("2026-03-03 14:00").isoformat()
    '2026-03-03T14:00:00+00:00'
    >>> parse_time("2026-03-03").isoformat(), parse_time("2026-03-03T14:00+01:00").hour
    ('2026-03-03T00:00:00+00:00', 14)
    """
    try:
        return _utc(dt.datetime.fromisoformat(text.strip()))
    except ValueError:
        raise QueryError(f"{text!r} is not an ISO date or time; write e.g. 2026-03-03, "
                         "2026-03-03T14:00 (UTC) or 2026-03-03T14:00+01:00") from None


# -- lineage -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, order=True)
class Node:
    """A lineage node: ``kind`` (dataset, run, git, model, alias, predictions, prediction)
    and ``id`` (``name@digest12``, a run id, ``git:<commit>``, ``model@vN``...)."""

    kind: str
    id: str

    @property
    def key(self) -> str:
        """``kind:id``, unique across kinds."""
        return f"{self.kind}:{self.id}"

    def __str__(self) -> str:
        return f"{self.kind} {self.id}"


@dataclass(frozen=True, slots=True)
class LineageEdge:
    """``src`` fed ``dst`` (``relation``); ``time``/``until`` bound alias periods and
    served predictions, ``n`` counts predictions."""

    src: Node
    dst: Node
    relation: str
    time: dt.datetime | None = None
    until: dt.datetime | None = None
    n: int | None = None

    def label(self) -> str:
        """The edge as text: relation, then period or count when known."""
        text = self.relation
        if self.n is not None:
            text += f" {self.n:,} predictions"
        if self.until is not None or self.relation == "aliased":
            text += f" {_fmt_time(self.time)} -> {_fmt_time(self.until) if self.until else 'now'}"
        return text


def _fmt_time(t: dt.datetime | None) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M") if t is not None else "?"


@dataclass(frozen=True)
class LineageTree:
    """The lineage around ``root``: the nodes and edges within reach, upstream (what it
    came from) and/or downstream (what came from it)."""

    root: Node
    direction: Direction
    edges: tuple[LineageEdge, ...]
    _up: Mapping[Node, list[LineageEdge]] = field(default_factory=dict, repr=False)
    _down: Mapping[Node, list[LineageEdge]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        up, down = _adjacency(self.edges)
        object.__setattr__(self, "_up", up)
        object.__setattr__(self, "_down", down)

    @property
    def nodes(self) -> list[Node]:
        """Every node, root first."""
        seen = {self.root: None}
        for e in self.edges:
            seen.setdefault(e.src)
            seen.setdefault(e.dst)
        return list(seen)

    def upstream(self, node: Node | None = None) -> list[Node]:
        """Every node ``node`` (default: the root) came from, nearest first."""
        return self._reach(node or self.root, self._up, _src)

    def downstream(self, node: Node | None = None) -> list[Node]:
        """Every node that came from ``node`` (default: the root), nearest first."""
        return self._reach(node or self.root, self._down, _dst)

    @staticmethod
    def _reach(start: Node, adj: Mapping[Node, list[LineageEdge]], nxt: Any) -> list[Node]:
        seen, queue, out = {start}, deque([start]), []
        while queue:
            for e in adj.get(queue.popleft(), []):
                n = nxt(e)
                if n not in seen:
                    seen.add(n)
                    out.append(n)
                    queue.append(n)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Nodes and edges for a graph (``id`` is ``kind:id``)."""
        return {
            "root": self.root.key,
            "direction": self.direction,
            "nodes": [{"id": n.key, "kind": n.kind, "label": n.id} for n in self.nodes],
            "edges": [{"source": e.src.key, "target": e.dst.key, "relation": e.relation,
                       "time": e.time.isoformat() if e.time else None,
                       "until": e.until.isoformat() if e.until else None, "n": e.n}
                      for e in self.edges],
        }

    def render(self, *, width: int = 120) -> str:
        """The tree as text: upstream and downstream branches under the root."""
        from rich.console import Console
        from rich.tree import Tree

        console = Console(width=width, record=True, force_terminal=False, color_system=None,
                          file=io.StringIO(), markup=False, highlight=False, emoji=False)
        top = Tree(str(self.root))
        for title, adj, nxt, wanted in (("upstream", self._up, _src, ("up", "both")),
                                        ("downstream", self._down, _dst, ("down", "both"))):
            if self.direction in wanted and adj.get(self.root):
                self._branch(top.add(title), self.root, adj, nxt, {self.root})
        console.print(top)
        return console.export_text()

    def _branch(self, tree: Any, node: Node, adj: Mapping[Node, list[LineageEdge]], nxt: Any,
                path: set[Node]) -> None:
        for e in sorted(adj.get(node, []), key=lambda e: (nxt(e).kind, nxt(e).id)):
            child = nxt(e)
            if child in path:  # a cycle: show it once
                tree.add(f"{child}  {e.label()}  (cycle)")
                continue
            self._branch(tree.add(f"{child}  {e.label()}"), child, adj, nxt, path | {child})


def _src(e: LineageEdge) -> Node:
    return e.src


def _dst(e: LineageEdge) -> Node:
    return e.dst


Adjacency = dict[Node, list[LineageEdge]]


def _adjacency(edges: Iterable[LineageEdge]) -> tuple[Adjacency, Adjacency]:
    """Edges by destination (to walk upstream) and by source (downstream)."""
    up: Adjacency = defaultdict(list)
    down: Adjacency = defaultdict(list)
    for e in edges:
        up[e.dst].append(e)
        down[e.src].append(e)
    return up, down


def walk(edges: Iterable[LineageEdge], root: Node, *, direction: Direction = "both",
         depth: int = 10) -> LineageTree:
    """The edges reachable from ``root`` within ``depth`` hops, upstream and/or downstream."""
    if depth < 1:
        raise QueryError(f"depth must be >= 1, got {depth}")
    up, down = _adjacency(edges)
    kept: dict[LineageEdge, None] = {}
    for adj, nxt, wanted in ((up, _src, ("up", "both")), (down, _dst, ("down", "both"))):
        if direction not in wanted:
            continue
        seen, frontier = {root}, [root]
        for _ in range(depth):
            following = []
            for node in frontier:
                for e in adj.get(node, []):
                    kept.setdefault(e)
                    if nxt(e) not in seen:
                        seen.add(nxt(e))
                        following.append(nxt(e))
            frontier = following
    return LineageTree(root=root, direction=direction, edges=tuple(kept))


def _edges(source: QuerySource) -> list[LineageEdge]:
    return [LineageEdge(Node(r["src_kind"], r["src_id"]), Node(r["dst_kind"], r["dst_id"]),
                        r["relation"], r["time"], r["until"], r["n"])
            for r in _rows(source, "SELECT * FROM lineage_edges")]


def resolve_ref(reader: QuerySource, ref: str) -> Node:
    """The lineage node ``ref`` names (see the module docstring for the forms)."""
    ref = ref.strip()
    if ref.startswith("git:"):
        return Node("git", ref)
    name, _, tail = ref.rpartition("@") if "@" in ref else (ref, "", "")
    versions = [r["model_version"] for r in _rows(
        reader, "SELECT DISTINCT model_version FROM model_versions WHERE model = ? ORDER BY 1",
        [name])]
    aliases = {r["alias"]: r["model_version"] for r in _rows(
        reader, "SELECT alias, model_version FROM aliases WHERE model = ?", [name])}
    is_dataset = bool(_rows(reader, "SELECT 1 FROM datasets WHERE name = ? LIMIT 1", [name]))
    if versions and not tail:
        return Node("model", f"{name}@v{versions[-1]}")
    if versions and re.fullmatch(r"v\d+", tail):
        if int(tail[1:]) not in versions:
            raise NotFoundError(f"model {name} has no version {tail[1:]}: it has versions "
                                f"{_listing(versions)}")
        return Node("model", f"{name}@{tail}")
    if versions and tail in aliases:
        return Node("model", f"{name}@v{aliases[tail]}")
    if is_dataset:
        rows = _rows(reader, "SELECT version, digest FROM datasets WHERE name = ? "
                             "ORDER BY version", [name])
        row = pick_version(name, rows, tail) if tail else rows[-1]
        return Node("dataset", f"{name}@{str(row['digest'])[:12]}")
    if versions:
        raise NotFoundError(f"model {name} has no version or alias {tail!r}: versions "
                            f"{_listing('v' + str(v) for v in versions)}, aliases "
                            f"{_listing(sorted(aliases))}")
    if not tail:
        return Node("run", _resolve_run(reader, ref)["run_id"])
    raise NotFoundError(
        f"{ref!r} names no model version, alias, dataset version or run; models: "
        + _listing(r["model"] for r in _rows(
            reader, "SELECT DISTINCT model FROM model_versions ORDER BY 1"))
        + "; datasets: "
        + _listing(r["name"] for r in _rows(reader, "SELECT DISTINCT name FROM datasets "
                                                      "ORDER BY 1")))


def lineage(reader: QuerySource, ref: str, direction: Direction = "both",
            depth: int = 10) -> LineageTree:
    """The lineage of ``ref``: ``direction="up"`` answers "which datasets and code produced
    the model serving now" (``lineage(r, "churn@production", "up")``), ``"down"`` "which
    models were trained on dataset X version 2" (``lineage(r, "churn-train@2", "down")``).
    """
    if direction not in ("up", "down", "both"):
        raise QueryError(f"direction must be up, down or both, got {direction!r}")
    return walk(_edges(reader), resolve_ref(reader, ref), direction=direction, depth=depth)


def lineage_of_prediction(reader: QuerySource, prediction_id: str, depth: int = 10) -> LineageTree:
    """Where a prediction came from: model version -> run -> datasets and code commit."""
    rows = _rows(reader, "SELECT model, model_version, code_version, time FROM predictions "
                         "WHERE prediction_id = ? ORDER BY time LIMIT 1", [prediction_id])
    if not rows:
        raise NotFoundError(f"no prediction {prediction_id!r} in the projection (is the "
                            "projector running, and is that the prediction_id it was logged "
                            "with?)")
    p = rows[0]
    model = Node("model", f"{p['model']}@v{p['model_version']}")
    root = Node("prediction", prediction_id)
    served = LineageEdge(model, root, "predicted", p["time"])
    edges = [served, *_edges(reader)]
    if p["code_version"]:
        edges.append(LineageEdge(Node("git", f"git:{p['code_version']}"), root, "served by",
                                 p["time"]))
    return walk(edges, root, direction="up", depth=depth + 1)
