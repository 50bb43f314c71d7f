"""Runs started from a notebook keep a checkpoint of its content (a real IPython shell)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelog.store.artifacts import ArtifactStore
from modelog.streams.codeversion import capture_code_version, notebook_checkpoint

interactiveshell = pytest.importorskip("IPython.core.interactiveshell")


@pytest.fixture
def shell() -> Iterator[object]:
    sh = interactiveshell.InteractiveShell.instance()
    try:
        yield sh
    finally:
        interactiveshell.InteractiveShell.clear_instance()


def test_outside_ipython_there_is_no_checkpoint(tmp_path: Path) -> None:
    assert notebook_checkpoint() is None
    cv = capture_code_version(tmp_path, artifact_store=ArtifactStore(tmp_path / "a"))
    assert cv.notebook_uri is None and cv.notebook_digest is None


def test_executed_cells_are_checkpointed(shell: object, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    shell.run_cell("import math\nradius = 2.0", store_history=True)  # type: ignore[attr-defined]
    shell.run_cell("area = math.pi * radius ** 2", store_history=True)  # type: ignore[attr-defined]
    store = ArtifactStore(tmp_path / "artifacts")
    cv = capture_code_version(tmp_path, artifact_store=store)
    assert cv.notebook_uri is not None and cv.notebook_uri.endswith(".py")
    stored = store.get_bytes(cv.notebook_uri)
    assert hashlib.sha256(stored).hexdigest() == cv.notebook_digest
    text = stored.decode()
    assert text.index("# In[1]:\nimport math\nradius = 2.0") < text.index(
        "# In[2]:\narea = math.pi * radius ** 2")
    assert cv.note == "not a git repository"  # the rest of the code version is unchanged


def test_the_notebook_file_itself_when_its_path_is_known(shell: object, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    notebook = tmp_path / "train.ipynb"
    notebook.write_text(json.dumps({"cells": [{"cell_type": "code", "source": ["x = 1"]}],
                                    "nbformat": 4, "nbformat_minor": 5, "metadata": {}}))
    shell.user_ns["__vsc_ipynb_file__"] = str(notebook)  # type: ignore[attr-defined]
    store = ArtifactStore(tmp_path / "artifacts")
    cv = capture_code_version(tmp_path, artifact_store=store)
    assert cv.notebook_uri is not None and cv.notebook_uri.endswith(".ipynb")
    assert store.get_bytes(cv.notebook_uri) == notebook.read_bytes()
    del shell.user_ns["__vsc_ipynb_file__"]  # type: ignore[attr-defined]
    monkeypatch.setenv("JPY_SESSION_NAME", str(notebook))  # what Jupyter sets
    again = capture_code_version(tmp_path, artifact_store=store)
    assert again.notebook_digest == cv.notebook_digest
