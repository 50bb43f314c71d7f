"""A small PyTorch model, trained in a git repository, through the SDK, the registry and the views.

What the lifecycle issue's "done means" asks of PyTorch: the run records the code
version (commit), the model is registered as a ``state_dict`` artifact and loads back
with ``weights_only=True`` into a fresh module, and lineage leads from the registered
version back to the dataset version and the commit.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import modelog
from modelog.cli import app
from modelog.config import Settings
from modelog.store.reader import Reader
from modelog.streams.projector import Projector
from modelog.streams.registry_agent import RegistryService
from modelog.streams.topics import ensure_topics

pytestmark = [pytest.mark.broker, pytest.mark.slow]

torch = pytest.importorskip("torch")


def _net() -> object:
    return torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))


def _repo(path: Path) -> str:
    """A git repository with one commit; its commit id."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=path, check=True, capture_output=True,
                              text=True).stdout.strip()

    path.mkdir()
    git("init", "-q")
    git("config", "user.email", "ci@example.com")
    git("config", "user.name", "ci")
    (path / "train.py").write_text("# trains the price model\n")
    git("add", "train.py")
    git("commit", "-q", "-m", "training script")
    return git("rev-parse", "HEAD")


def test_pytorch_model_from_a_git_repo_to_lineage(settings: Settings, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_topics(settings)
    commit = _repo(tmp_path / "repo")
    monkeypatch.chdir(tmp_path / "repo")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(256, 3)), columns=["sqm", "rooms", "age"])
    frame["price"] = frame @ np.array([2.0, 1.0, -0.5])
    x = torch.tensor(frame[["sqm", "rooms", "age"]].to_numpy(), dtype=torch.float32)
    y = torch.tensor(frame[["price"]].to_numpy(), dtype=torch.float32)

    torch.manual_seed(0)
    net = _net()
    with modelog.connect(settings=settings) as client, RegistryService(settings):
        ds = client.log_dataset("houses", frame)
        with client.start_run("price", "mlp") as run:
            run.use_dataset(ds)
            opt = torch.optim.Adam(net.parameters(), lr=0.05)
            for step in range(60):
                opt.zero_grad()
                loss = torch.nn.functional.mse_loss(net(x), y)
                loss.backward()
                opt.step()
                run.log_metric("mse", loss.item(), step=step)
        assert loss.item() < 0.5
        version = client.register_model("price", net, run=run, dataset=ds, target="price")
        assert version == 1
        loaded = client.load_model("price", version, model=_net())
        assert torch.equal(loaded(x), net(x))
        state = client.load_model("price", version)  # no module: the verified state dict
        assert set(state) == set(net.state_dict())
        client.flush()

    with Projector(settings, serve=False) as projector:
        for _ in range(60):
            projector.project_once(timeout=0.5)
            n = projector.connection.execute(
                "select count(*) from model_versions where model = 'price'").fetchall()[0][0]
            if n == 1:
                break
    reader = Reader(settings)
    [mv] = reader.query("select flavor, run_id, signature from model_versions "
                        "where model = 'price'").to_pylist()
    assert mv["flavor"] == "pytorch" and mv["run_id"] == run.run_id
    assert "sqm" in str(mv["signature"]) and "price" not in str(mv["signature"])
    [code] = reader.query("select code_commit, code_dirty from runs "
                          f"where run_id = '{run.run_id}'").to_pylist()
    assert code == {"code_commit": commit, "code_dirty": False}

    monkeypatch.setenv("MODELOG_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MODELOG_TOPIC_PREFIX", settings.topic_prefix)
    out = CliRunner().invoke(app, ["lineage", "price@v1", "--up"])
    assert out.exit_code == 0, out.output
    assert "houses" in out.output and commit[:12] in out.output and run.run_id in out.output
