"""The lineage graph: which datasets, runs and commits produced a model, and what came of them.

Reads the ``lineage_edges`` projection (:mod:`modelog.store.schema`) through a
:class:`~modelog.store.queries.QuerySource`; walking the graph and rendering it
are pure functions of the edges, tested without a database.

References
----------
``lineage`` and friends accept:

* ``model@vN`` -- a registered model version; ``model@alias`` -- the version the
  alias points to now; a bare model name -- its latest version (resolved by
  :func:`modelog.store.registry.resolve_version`);
* ``dataset@N`` (or ``@vN``) -- a dataset version number; ``dataset@<hex>`` -- the
  version whose digest starts so; a bare dataset name -- its latest version;
* a run id (or a unique prefix of one); ``git:<commit>``;
* the id of an alert (``DriftDetected``...) or of a retrain request: what it caused.

Retraining adds three edges (:data:`modelog.store.views.VIEWS`): ``alert`` ->
``retrain`` (the request's ``trigger_id``), ``retrain`` -> ``run`` (the job's runs,
tagged ``retrain_request`` by the runner; the relation names the reason and window)
and ``retrain`` -> ``dataset`` (the data window the job recorded), so
``lineage(r, "churn@v2", "up")`` walks from a candidate back to its drift alert.

An unknown run, dataset, version or model raises :class:`~modelog.store.errors.NotFoundError`
naming what exists.

Imports :mod:`modelog.models` and :mod:`modelog.store` only.

Examples
--------
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
import re
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from modelog.models.registry import fold
from modelog.store.errors import NotFoundError, QueryError
from modelog.store.queries import QuerySource, fetch_rows, listing, pick_version, resolve_run
from modelog.store.registry import read_registry_events, resolve_version

__all__ = [
    "Direction",
    "LineageEdge",
    "LineageTree",
    "Node",
    "lineage",
    "lineage_of_prediction",
    "resolve_ref",
    "walk",
]

Direction = Literal["up", "down", "both"]
_MODEL_VERSION = re.compile(r"v(\d+)")


@dataclass(frozen=True, slots=True, order=True)
class Node:
    """A lineage node: ``kind`` (dataset, run, git, model, alias, predictions, prediction,
    retrain, alert) and ``id`` (``name@digest12``, a run id, ``git:<commit>``, ``model@vN``,
    an event id...)."""

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
            for r in fetch_rows(source, "SELECT * FROM lineage_edges")]


def resolve_ref(reader: QuerySource, ref: str) -> Node:
    """The lineage node ``ref`` names (see the module docstring for the forms)."""
    ref = ref.strip()
    if ref.startswith("git:"):
        return Node("git", ref)
    name, _, tail = ref.rpartition("@") if "@" in ref else (ref, "", "")
    registry = fold(read_registry_events(reader, name))
    model = registry.model(name)
    versions = sorted(model.versions) if model is not None else []
    aliases = sorted(model.aliases) if model is not None else []
    is_dataset = bool(fetch_rows(reader, "SELECT 1 FROM datasets WHERE name = ? LIMIT 1", [name]))
    number = _MODEL_VERSION.fullmatch(tail)
    if versions and (not tail or number or tail in aliases):
        info = resolve_version(registry, name, int(number.group(1)) if number else None,
                               alias=tail if tail and not number else None)
        return Node("model", f"{name}@v{info.version}")
    if is_dataset:
        rows = fetch_rows(reader, "SELECT version, digest FROM datasets WHERE name = ? "
                             "ORDER BY version", [name])
        row = pick_version(name, rows, tail) if tail else rows[-1]
        return Node("dataset", f"{name}@{str(row['digest'])[:12]}")
    if versions:
        raise NotFoundError(f"model {name} has no version or alias {tail!r}: versions "
                            f"{listing('v' + str(v) for v in versions)}, aliases "
                            f"{listing(aliases)}")
    if not tail:
        return _alert_node(reader, ref) or Node("run", resolve_run(reader, ref)["run_id"])
    raise NotFoundError(
        f"{ref!r} names no model version, alias, dataset version or run; models: "
        + listing(r["model"] for r in fetch_rows(
            reader, "SELECT DISTINCT model FROM model_versions ORDER BY 1"))
        + "; datasets: "
        + listing(r["name"] for r in fetch_rows(reader, "SELECT DISTINCT name FROM datasets "
                                                      "ORDER BY 1")))


def _alert_node(reader: QuerySource, event_id: str) -> Node | None:
    """The retrain request (``retrain``) or other alert (``alert``) with id ``event_id``."""
    rows = fetch_rows(reader, "SELECT type FROM alerts WHERE event_id = ? LIMIT 1", [event_id])
    if not rows:
        return None
    return Node("retrain" if rows[0]["type"] == "RetrainRequested" else "alert", event_id)


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
    rows = fetch_rows(reader, "SELECT model, model_version, code_version, time FROM predictions "
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
