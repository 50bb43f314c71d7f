"""Capture which code produced a run: git state, entry point, Python and packages.

:func:`capture_code_version` asks ``git`` (through a subprocess with a short
timeout) for the commit, branch and remote of the repository around a path,
whether tracked files have uncommitted changes, and the SHA-256 of
``git diff HEAD`` -- the exact patch on top of the commit, which it can store
in an artifact store so the run can be reproduced byte for byte. Outside a
git repository, or without ``git``, it still returns a :class:`CodeVersion`,
with a ``note`` saying why the git fields are empty.

Credentials embedded in remote URLs (``https://user:token@host/...``) are
removed before anything is recorded.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
import sys
import urllib.parse
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Protocol

import msgspec

from modelog.models.events import CodeVersion
from modelog.streams.errors import GitError, GitUnusableError

__all__ = ["KEY_PACKAGES", "BytesStore", "capture_code_version", "entry_point", "strip_credentials"]

KEY_PACKAGES: tuple[str, ...] = ("numpy", "pandas", "scikit-learn", "torch", "river", "modelog")
"""Distributions whose installed versions are recorded when present."""

GIT_TIMEOUT = 5.0
"""Seconds any single ``git`` call may take."""


class BytesStore(Protocol):
    """Anything that can keep bytes content-addressed (e.g. ``ArtifactStore``)."""

    def put_bytes(self, data: bytes, suffix: str = "") -> tuple[str, str]: ...


def _git(cwd: Path, *args: str) -> bytes:
    try:
        done = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, timeout=GIT_TIMEOUT, check=False,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"},
        )
    except FileNotFoundError:
        raise GitUnusableError("git is not installed") from None
    except subprocess.TimeoutExpired:
        raise GitUnusableError(f"git {args[0]} took longer than {GIT_TIMEOUT:g}s") from None
    if done.returncode != 0:
        raise GitError(done.stderr.decode(errors="replace").strip() or f"git {args[0]} failed")
    return done.stdout


def _git_text(cwd: Path, *args: str) -> str | None:
    try:
        return _git(cwd, *args).decode(errors="replace").strip() or None
    except GitError:
        return None


def strip_credentials(url: str) -> str:
    """Remove a user name, password or token from a remote URL.

    Examples
    --------
    >>> strip_credentials("https://alice:s3cr3t@github.com/acme/churn.git")
    'https://github.com/acme/churn.git'
    >>> strip_credentials("https://ghp_token@github.com/acme/churn.git?private_token=x")
    'https://github.com/acme/churn.git'
    >>> strip_credentials("git@github.com:acme/churn.git")
    'git@github.com:acme/churn.git'
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme and parts.netloc:
        host = parts.netloc.rsplit("@", 1)[-1]
        return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))
    # scp-like syntax (user@host:path): only the conventional "git" user carries no secret.
    m = re.match(r"^(?P<user>[^@/]+)@(?P<rest>[^/]+:.*)$", url)
    if m and m.group("user") != "git":
        return m.group("rest")
    return url


def entry_point(root: Path | None = None) -> str | None:
    """The program being run: ``sys.argv[0]`` (relative to ``root`` when inside
    it), or ``notebook:<name>`` inside Jupyter."""
    if "ipykernel" in sys.modules:
        name = os.environ.get("JPY_SESSION_NAME")
        return f"notebook:{Path(name).name}" if name else "notebook"
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else None
    if argv0 is None or argv0 == "-c":
        return argv0
    path = Path(argv0).absolute()
    if root is not None and path.is_relative_to(root):
        return path.relative_to(root).as_posix()
    return argv0


def notebook_checkpoint() -> tuple[bytes, str] | None:
    """The content of the running notebook and its suffix, or ``None`` outside IPython.

    The ``.ipynb`` file itself when its path is known (VS Code's
    ``__vsc_ipynb_file__``, Jupyter's ``JPY_SESSION_NAME``); otherwise the
    cells executed so far, in order, as Python text (``# In[n]:`` headers) --
    what actually ran, which a saved notebook may not even contain.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None  # type: ignore[attr-defined]
    if shell is None:
        return None
    namespace = getattr(shell, "user_ns", {}) or {}
    for candidate in (namespace.get("__vsc_ipynb_file__"), os.environ.get("JPY_SESSION_NAME")):
        if candidate and str(candidate).endswith(".ipynb"):
            path = Path(str(candidate))
            if path.is_file():
                return path.read_bytes(), ".ipynb"
    cells = list(namespace.get("In") or [])[1:]  # In[0] is an empty placeholder
    if not cells:
        return None
    text = "".join(f"# In[{i}]:\n{cell.rstrip()}\n\n" for i, cell in enumerate(cells, 1))
    return text.encode(), ".py"


def _packages(names: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def capture_code_version(
    path: Path | None = None,
    *,
    artifact_store: BytesStore | None = None,
    packages: Sequence[str] = KEY_PACKAGES,
) -> CodeVersion:
    """Describe the code at ``path`` (default: the current directory).

    Parameters
    ----------
    path
        A directory inside the repository to describe.
    artifact_store
        When given and the working tree is dirty, the ``git diff HEAD`` patch is
        stored there (as ``<diff_digest>.diff``), so it can be re-applied later.
    packages
        Distributions whose versions to record when installed.

    Inside IPython or Jupyter, a checkpoint of the notebook
    (:func:`notebook_checkpoint`) is stored in ``artifact_store`` too and its
    URI and SHA-256 recorded (``notebook_uri``, ``notebook_digest``).

    Returns
    -------
    CodeVersion
        ``dirty`` reflects tracked files only (untracked files are not in
        ``git diff HEAD``, so they cannot be part of ``diff_digest``).

    Examples
    --------
    >>> import tempfile
    >>> cv = capture_code_version(Path(tempfile.mkdtemp()))
    >>> cv.note, cv.commit, cv.python == platform.python_version()
    ('not a git repository', None, True)
    """
    version = _describe(Path.cwd() if path is None else Path(path), artifact_store, packages)
    checkpoint = notebook_checkpoint()
    if checkpoint is None:
        return version
    data, suffix = checkpoint
    digest = hashlib.sha256(data).hexdigest()
    uri = artifact_store.put_bytes(data, suffix=suffix)[1] if artifact_store is not None \
        else None
    return msgspec.structs.replace(version, notebook_digest=digest, notebook_uri=uri)


def _describe(cwd: Path, artifact_store: BytesStore | None,
              packages: Sequence[str]) -> CodeVersion:
    py, pkgs = platform.python_version(), _packages(packages)
    try:
        root = Path(_git(cwd, "rev-parse", "--show-toplevel").decode().strip())
    except GitUnusableError as exc:
        return CodeVersion(entry_point=entry_point(), note=str(exc), python=py, packages=pkgs)
    except GitError:
        return CodeVersion(entry_point=entry_point(), note="not a git repository", python=py,
                           packages=pkgs)
    except OSError as exc:  # cwd does not exist, permission denied
        return CodeVersion(entry_point=entry_point(), note=f"cannot run git: {exc}",
                           python=py, packages=pkgs)
    commit = _git_text(root, "rev-parse", "--verify", "--quiet", "HEAD")
    branch = _git_text(root, "symbolic-ref", "--short", "--quiet", "HEAD")
    remote = _git_text(root, "remote", "get-url", "origin")
    if remote is None:
        first = (_git_text(root, "remote") or "").split()
        remote = _git_text(root, "remote", "get-url", first[0]) if first else None
    note = None
    dirty = False
    diff_digest: str | None = None
    if commit is None:
        note = "repository has no commits yet"
    else:
        try:
            diff = _git(root, "diff", "HEAD", "--binary", "--no-color", "--no-ext-diff")
        except GitError as exc:
            note = f"could not diff the working tree: {exc}"
        else:
            if diff:
                dirty = True
                diff_digest = hashlib.sha256(diff).hexdigest()
                if artifact_store is not None:
                    artifact_store.put_bytes(diff, suffix=".diff")
    return CodeVersion(
        commit=commit,
        branch=branch,
        remote=strip_credentials(remote) if remote else None,
        dirty=dirty,
        diff_digest=diff_digest,
        entry_point=entry_point(root),
        python=py,
        packages=pkgs,
        note=note,
    )
