"""Pickling that works alike for plain and compiled classes of the pure core.

The monitoring hot path is compiled with mypyc when the package is installed
(``setup.py``). A compiled class keeps its attributes in slots it lists in
``__mypyc_attrs__``, not in ``__dict__``; a compiled frozen dataclass
refuses ``setattr`` even while it is being unpickled; and a compiled class
runs ``__init__`` whenever an instance is made (unpickling must not) unless it
is marked ``@mypyc_attr(allow_interpreted_subclasses=True)``, as every pickled
class of a compiled module is. These helpers read and write an instance's
attributes either way, so a snapshot or an artifact written by one build is
read by the other (``tests/test_compiled.py``).
"""

from __future__ import annotations

from typing import Any

from mypy_extensions import mypyc_attr

__all__ = ["FrozenState", "assign_state", "instance_state"]


def instance_state(obj: object) -> dict[str, Any]:
    """An instance's attributes by name, whether its class is compiled or plain Python.

    Attributes never set are left out, as ``vars`` would.

    >>> class Point:
    ...     def __init__(self) -> None:
    ...         self.x, self.y = 1, 2
    >>> instance_state(Point())
    {'x': 1, 'y': 2}
    """
    names: tuple[str, ...] | None = getattr(type(obj), "__mypyc_attrs__", None)
    if names is None:
        return dict(vars(obj))
    out: dict[str, Any] = {}
    for name in names:
        if name != "__dict__":
            try:
                out[name] = getattr(obj, name)
            except AttributeError:  # declared, never set
                continue
    out.update(getattr(obj, "__dict__", {}))  # an interpreted subclass's own attributes
    return out


def assign_state(obj: object, state: dict[str, Any]) -> None:
    """Set ``obj``'s attributes from ``state`` (:func:`instance_state`'s inverse)."""
    for name, value in state.items():
        setattr(obj, name, value)


@mypyc_attr(allow_interpreted_subclasses=True)
class FrozenState:
    """Base of a frozen dataclass that is pickled: its state is its fields, in both builds.

    >>> import copy, dataclasses
    >>> @dataclasses.dataclass(frozen=True)
    ... class Pair(FrozenState):
    ...     a: int
    ...     b: str
    >>> copy.deepcopy(Pair(1, "x"))  # as pickle does: state out, then back in
    Pair(a=1, b='x')
    """

    __slots__ = ()

    def __getstate__(self) -> dict[str, Any]:
        return instance_state(self)

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name, value in state.items():  # past the frozen dataclass's __setattr__
            object.__setattr__(self, name, value)
