"""A dataset logged through the SDK carries its profile into DuckDB; `datasets diff` works."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import modelog
from modelog.cli import app
from modelog.config import Settings
from modelog.store.errors import NotFoundError
from modelog.store.queries import dataset_diff
from modelog.store.reader import Reader
from modelog.streams.projector import Projector
from modelog.streams.topics import ensure_topics

pytestmark = pytest.mark.broker


def test_logged_profiles_reach_the_views_and_diff(settings: Settings,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_topics(settings)
    rng = np.random.default_rng(0)
    v1 = pd.DataFrame({"age": rng.normal(40, 5, 2_000), "plan": rng.choice(["a", "b"], 2_000)})
    v2 = v1.assign(age=v1["age"] + 15)  # shifted
    with modelog.connect(settings=settings) as client:
        client.log_dataset("customers", v1)
        client.log_dataset("customers", v1)  # same content: same version, no duplicate
        client.log_dataset("customers", v2, parents=["customers@1"])
    with Projector(settings, serve=False) as projector:
        for _ in range(60):
            projector.project_once(timeout=0.5)
            n = projector.connection.execute("select count(*) from datasets").fetchall()[0][0]
            if n == 2:
                break
    reader = Reader(settings)
    rows = reader.query("select version, num_rows, profile is not null as has_profile "
                        "from datasets where name = 'customers' order by version").to_pylist()
    assert rows == [{"version": 1, "num_rows": 2_000, "has_profile": True},
                    {"version": 2, "num_rows": 2_000, "has_profile": True}]
    with modelog.connect(settings=settings) as client:
        assert client.get_dataset("customers", 1).num_rows == 2_000
        latest = client.get_dataset("customers").to_pandas()
        assert latest["age"].mean() == pytest.approx(v2["age"].mean())
        with pytest.raises(NotFoundError, match="versions 1, 2"):
            client.get_dataset("customers", 7)
        with pytest.raises(NotFoundError, match="no dataset named"):
            client.get_dataset("nope")
    diff = dataset_diff(reader, "customers", "1", "2")
    assert "age" in diff.drifted() and "plan" not in diff.drifted()
    monkeypatch.setenv("MODELOG_DATA_DIR", str(settings.data_dir))
    out = CliRunner().invoke(app, ["datasets", "diff", "customers", "1", "2"])
    assert out.exit_code == 0, out.output
    assert "age" in out.output
