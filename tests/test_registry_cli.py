"""`modelog registry register|alias|promote|rollback` and `modelog traffic set|show` end to end:
the real CLI, a registry worker (a thread) and the session broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sklearn.tree import DecisionTreeClassifier
from typer.testing import CliRunner

import modelog
from modelog.cli import app
from modelog.config import Settings
from modelog.models import flavors
from modelog.streams.registry_agent import RegistryService
from modelog.streams.topics import ensure_topics

pytestmark = pytest.mark.broker
runner = CliRunner()


@pytest.fixture(scope="module")
def settings(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    s = Settings(broker=broker, data_dir=tmp_path_factory.mktemp("registry-cli") / "data",
                 topic_prefix=f"rc{uuid.uuid4().hex[:10]}.", partitions=2,
                 producer_name="pytest")
    s.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_topics(s)
    with RegistryService(s):
        yield s


def run(settings: Settings, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--broker", settings.bootstrap_servers, "--data-dir",
                                 str(settings.data_dir), "--topic-prefix",
                                 settings.topic_prefix, *args])
    return result.exit_code, " ".join(result.output.split())


def test_register_alias_promote_rollback_and_traffic(settings: Settings,
                                                     tmp_path: Path) -> None:
    train = pd.DataFrame({"age": [25, 41, 33, 58], "tenure": [1, 7, 3, 12], "y": [1, 0, 1, 0]})
    train.to_csv(tmp_path / "train.csv", index=False)
    x = train[["age", "tenure"]]
    for depth in (1, 2):
        model = DecisionTreeClassifier(max_depth=depth).fit(x, train["y"])
        (tmp_path / f"tree{depth}.skops").write_bytes(flavors.dump(model).data)
    name = f"cli{uuid.uuid4().hex[:6]}"

    code, out = run(settings, "registry", "register", name, str(tmp_path / "tree1.skops"),
                    "--dataset", str(tmp_path / "train.csv"), "--target", "y")
    assert code == 0 and f"registered {name} v1 (sklearn" in out, out
    code, out = run(settings, "registry", "register", name, str(tmp_path / "tree2.skops"),
                    "--description", "deeper")
    assert code == 0 and f"registered {name} v2" in out, out
    (tmp_path / "model.bin").write_bytes(b"\x00")
    code, out = run(settings, "registry", "register", name, str(tmp_path / "model.bin"))
    assert code == 1 and "cannot tell the flavor of model.bin" in out and "--flavor" in out
    (tmp_path / "river.pkl").write_bytes(b"\x80\x04K\x01.")
    code, out = run(settings, "registry", "register", name, str(tmp_path / "river.pkl"))
    assert code == 1 and "--allow-pickle" in out, out
    (tmp_path / "broken.skops").write_bytes(b"not a zip")
    code, out = run(settings, "registry", "register", name, str(tmp_path / "broken.skops"))
    assert code == 1 and "does not load as a sklearn model" in out, out

    code, out = run(settings, "registry", "promote", name, "1")
    assert code == 0 and f"{name}@production -> v1" in out, out
    code, out = run(settings, "registry", "rollback", name)
    assert code == 1 and "has had only v1 in production" in out and "registry promote" in out
    code, out = run(settings, "registry", "alias", "set", name, "candidate", "2")
    assert code == 0 and f"{name}@candidate -> v2" in out, out
    code, out = run(settings, "registry", "alias", "set", name, "production", "7",
                    "--reason", "typo")
    assert code == 1 and "version 7 of" in out and "does not exist" in out, out
    code, out = run(settings, "registry", "promote", name, "2", "--reason", "deeper is better")
    assert code == 0 and f"{name}@production -> v2 (was v1)" in out, out
    code, out = run(settings, "registry", "rollback", name, "-r", "incident 42")
    assert code == 0 and f"{name}@production -> v1 (rolled back from v2)" in out, out

    code, out = run(settings, "traffic", "set", name, "production=0.9", "candidate=0.1",
                    "--shadow", "shadow")
    assert code == 1 and "alias shadow of" in out and "is not set" in out, out
    code, out = run(settings, "registry", "alias", "set", name, "shadow", "2")
    assert code == 0, out
    code, out = run(settings, "traffic", "set", name, "production=0.9", "candidate=0.1",
                    "--shadow", "shadow", "--reason", "ramp up")
    assert code == 0 and "production=0.9 candidate=0.1 shadows=shadow" in out, out
    code, out = run(settings, "traffic", "set", name, "production=lots")
    assert code == 1 and "'arms.production' = 'lots'" in out, out
    code, out = run(settings, "traffic", "show", name)
    assert code == 0, out
    assert "production=0.9 candidate=0.1 shadows=shadow" in out and "ramp up" in out
    assert "arm production 90.0% -> v1" in out and "shadow shadow -> v2" in out, out
    code, out = run(settings, "registry", "alias", "remove", name, "shadow")
    assert code == 0 and f"{name}@shadow removed (was v2)" in out, out

    with modelog.connect(settings=settings) as client:
        state = client.registry(name)
        production = [(c.version, c.previous_version, c.reason)
                      for c in state.history(name) if c.alias == "production"]
        assert production[1:] == [(2, 1, "deeper is better"), (1, 2, "incident 42")]
        assert state.history(name)[0].reason.startswith("promoted from the command line by ")
        assert state.versions(name)[1].signature[0].name == "age"
        assert state.versions(name)[2].description == "deeper"
        assert client.load_model(name, alias="production").predict(x).tolist() == [1, 0, 1, 0]
