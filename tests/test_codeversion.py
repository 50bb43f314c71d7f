"""Code-version capture: inside a real temporary git repository, and outside one."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from modelog.store.artifacts import ArtifactStore
from modelog.streams.codeversion import capture_code_version, strip_credentials

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo, check=True, capture_output=True, text=True,
    )
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    (root / "train.py").write_text("print('v1')\n")
    _git(root, "add", "train.py")
    _git(root, "commit", "-q", "-m", "first")
    _git(root, "remote", "add", "origin", "https://alice:ghp_SECRET@git.example.com/acme/churn.git")
    return root


def test_clean_repository(repo: Path) -> None:
    cv = capture_code_version(repo)
    assert cv.commit == _git(repo, "rev-parse", "HEAD")
    assert len(cv.commit or "") == 40
    assert cv.branch == "main"
    assert cv.remote == "https://git.example.com/acme/churn.git"
    assert "SECRET" not in repr(cv) and "alice" not in repr(cv)
    assert cv.dirty is False and cv.diff_digest is None
    assert cv.note is None
    assert cv.python and cv.packages.get("modelog")


def test_dirty_repository_digests_and_stores_the_diff(repo: Path, tmp_path: Path) -> None:
    (repo / "train.py").write_text("print('v2')\n")
    store = ArtifactStore(tmp_path / "artifacts")
    cv = capture_code_version(repo, artifact_store=store)
    diff = subprocess.run(
        ["git", "diff", "HEAD", "--binary", "--no-color", "--no-ext-diff"],
        cwd=repo, check=True, capture_output=True,
    ).stdout
    assert cv.dirty is True
    assert cv.diff_digest == hashlib.sha256(diff).hexdigest()
    assert cv.diff_digest is not None and store.exists(cv.diff_digest)
    assert b"print('v2')" in store.get_bytes(cv.diff_digest)
    # Same change -> same digest; another change -> another digest.
    assert capture_code_version(repo).diff_digest == cv.diff_digest
    (repo / "train.py").write_text("print('v3')\n")
    assert capture_code_version(repo).diff_digest != cv.diff_digest


def test_subdirectory_and_untracked_files(repo: Path) -> None:
    sub = repo / "pkg"
    sub.mkdir()
    (sub / "new.py").write_text("x = 1\n")  # untracked: not part of `git diff HEAD`
    cv = capture_code_version(sub)
    assert cv.commit is not None and cv.dirty is False


def test_repository_without_commits(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    cv = capture_code_version(tmp_path)
    assert cv.commit is None and cv.note == "repository has no commits yet"


def test_outside_a_repository(tmp_path: Path) -> None:
    cv = capture_code_version(tmp_path)
    assert cv.note == "not a git repository"
    assert cv.commit is None and cv.branch is None and cv.remote is None
    assert cv.python is not None and cv.entry_point


def test_missing_directory_does_not_raise(tmp_path: Path) -> None:
    cv = capture_code_version(tmp_path / "nope")
    assert cv.commit is None and cv.note is not None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:pw@host/a.git", "https://host/a.git"),
        ("https://token@host:8443/a.git?x=1", "https://host:8443/a.git"),
        ("ssh://git@host/a.git", "ssh://host/a.git"),
        ("git@github.com:acme/a.git", "git@github.com:acme/a.git"),
        ("deploy@host:acme/a.git", "host:acme/a.git"),
        ("/srv/git/a.git", "/srv/git/a.git"),
    ],
)
def test_strip_credentials(url: str, expected: str) -> None:
    assert strip_credentials(url) == expected
