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

__all__ = ["code", "plain"]

_SPECIAL = "\\`*_[]<>#|~$"
"""Characters markdown or Streamlit's extensions (``:red[...]``, ``$math$``) give a
meaning to; each is escaped with a backslash. Without ``[`` and ``]`` no link, image
or colour directive can form; an emoji code (``:bomb:``) stays harmless."""


def _text(value: Any, default: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return default
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return default
    except ImportError:  # pragma: no cover - pandas comes with Streamlit
        pass
    return str(value)


def plain(value: Any, default: str = "—") -> str:
    """``value`` as markdown text that renders exactly as the string (``default`` if missing)."""
    text = _text(value, default)
    if text is default:
        return text
    out = []
    for char in text:
        out.append("\\" + char if char in _SPECIAL else char)
    return "".join(out).replace("\n", " ")


def code(value: Any, default: str = "—") -> str:
    """``value`` as an inline code span (backticks in it become quotes, newlines spaces)."""
    text = _text(value, default).replace("`", "'").replace("\n", " ").replace("\r", " ")
    return f"`{text}`"
