r"""Strings from events in Streamlit markdown, shown verbatim.

Every string an event carries (a reason, an actor, a tag, a column or feature
name, an error message, an id) is untrusted input: in a markdown call it could
render a link, an image fetched from anywhere (``![](http://...)``), a
Streamlit colour or icon directive, or break out of a code span. Pages put such
values through :func:`plain` (escaped text) or :func:`code` (an inline code
span) and never interpolate them raw. Pure: no Streamlit import.

Examples
--------
>>> print(plain("see ![x](http://evil/p.png) *now*"))
see !\[x\](http://evil/p.png) \*now\*
>>> code("a`b")
"`a'b`"
>>> plain(None), code(None)
('—', '`—`')
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

__all__ = ["code", "missing", "plain"]

_SPECIAL = "\\`*_[]<>#|~$"
"""Characters markdown or Streamlit's extensions (``:red[...]``, ``$math$``) give a
meaning to; each is escaped with a backslash. Without ``[`` and ``]`` no link, image
or colour directive can form; an emoji code (``:bomb:``) stays harmless."""

_ESCAPED = str.maketrans({**{c: "\\" + c for c in _SPECIAL}, "\n": " ", "\r": " "})
_CODE = str.maketrans({"`": "'", "\n": " ", "\r": " "})


def missing(value: Any) -> bool:
    """Whether a cell holds no value (``None``, NaN, ``NaT``, ``NA``)."""
    if value is None or value is pd.NaT or value is pd.NA:
        return True
    return isinstance(value, float) and math.isnan(value)


def plain(value: Any, default: str = "—") -> str:
    """``value`` as markdown text that renders exactly as the string (``default`` if missing
    or empty)."""
    if missing(value) or value == "":
        return default
    return str(value).translate(_ESCAPED)


def code(value: Any, default: str = "—") -> str:
    """``value`` as an inline code span (backticks in it become quotes, newlines spaces)."""
    text = default if missing(value) or value == "" else str(value)
    return f"`{text.translate(_CODE)}`"
