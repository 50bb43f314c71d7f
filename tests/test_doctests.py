"""Every docstring example in the package runs, and so does the README's SDK example."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import modelog
from modelog.config import Settings
from modelog.streams.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[1]
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# Entry points that run the program on import are not documentation.
SKIP = {"modelog.__main__", "modelog.cli.__main__", "modelog.dashboard.app"}


def _modules() -> list[str]:
    names = ["modelog", "modelog.config", "modelog.errors"]
    for sub in ("streams", "models", "store", "dashboard", "cli"):
        pkg = importlib.import_module(f"modelog.{sub}")
        names.append(pkg.__name__)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=f"{pkg.__name__}.")]
    return [n for n in names if n not in SKIP]


@pytest.mark.parametrize("name", _modules())
def test_module_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=FLAGS, verbose=False)
    assert result.failed == 0


@pytest.mark.broker
def test_readme_sdk_example(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_topics(settings)
    monkeypatch.setenv("MODELOG_BROKER", settings.bootstrap_servers)
    monkeypatch.setenv("MODELOG_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("MODELOG_DATA_DIR", str(settings.data_dir))
    result = doctest.testfile(str(ROOT / "README.md"), module_relative=False,
                              optionflags=FLAGS, globs={"modelog": modelog})
    assert result.attempted > 5
    assert result.failed == 0
