"""The real MLflow client against ``modelog mlflow-server`` on the real broker.

One server (with a registry worker) per module; each test uses its own
experiment or model names. Everything written is checked twice: through the
MLflow client, and as modelog events / registry state.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow")

from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from modelog.config import Settings  # noqa: E402
from modelog.streams.mlflow_api import MlflowServer  # noqa: E402
from modelog.streams.registry_agent import RegistryService  # noqa: E402
from modelog.streams.topics import ensure_topics  # noqa: E402

pytestmark = [pytest.mark.broker, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(broker: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    data = tmp_path_factory.mktemp("mlflow") / "data"
    data.mkdir()
    s = Settings(broker=broker, data_dir=data, topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
                 partitions=2, producer_name="pytest")
    ensure_topics(s)
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    with RegistryService(s), MlflowServer(s, port=0) as srv:
        os.environ["MLFLOW_TRACKING_URI"] = srv.url
        os.environ.pop("MLFLOW_REGISTRY_URI", None)
        mlflow.set_tracking_uri(srv.url)
        try:
            yield srv
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture
def client(server: MlflowServer) -> MlflowClient:
    return MlflowClient(tracking_uri=server.url, registry_uri=server.url)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_experiments_default_create_get_search(client: MlflowClient) -> None:
    default = client.get_experiment("0")
    assert default.name == "Default"
    name = _name("exp")
    exp_id = client.create_experiment(name, tags={"team": "churn"})
    got = client.get_experiment_by_name(name)
    assert got is not None and got.experiment_id == exp_id and got.tags["team"] == "churn"
    with pytest.raises(MlflowException) as info:
        client.create_experiment(name)
    assert info.value.error_code == "RESOURCE_ALREADY_EXISTS"
    with pytest.raises(MlflowException) as info:
        client.get_experiment("987654")
    assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    assert client.get_experiment_by_name("no-such-experiment") is None
    found = client.search_experiments(filter_string=f"name = '{name}'")
    assert [e.experiment_id for e in found] == [exp_id]


def test_fluent_run_logs_and_reads_back_at_once(server: MlflowServer) -> None:
    mlflow.set_experiment(_name("fluent"))
    with mlflow.start_run(run_name="baseline") as run:
        run_id = run.info.run_id
        mlflow.log_param("max_depth", 3)
        mlflow.log_params({"model": "tree", "lr": 0.1})
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"f1": 0.8, "auc": 0.9})
        mlflow.set_tag("stage", "dev")
        # read-your-writes: visible immediately, no projector involved
        live = mlflow.get_run(run_id)
        assert live.data.params["max_depth"] == "3"
        assert live.data.metrics["loss"] == pytest.approx(0.2)
        assert live.info.status == "RUNNING"
    done = MlflowClient().get_run(run_id)
    assert done.info.status == "FINISHED" and done.info.end_time is not None
    assert done.info.run_name == "baseline"
    assert done.data.tags["stage"] == "dev"
    history = MlflowClient().get_metric_history(run_id, "loss")
    assert [m.step for m in history] == [0, 1, 2, 3, 4]
    assert history[-1].value == pytest.approx(0.2)


def test_params_cannot_change_and_bad_values_are_refused(client: MlflowClient) -> None:
    exp_id = client.create_experiment(_name("bad"))
    run = client.create_run(exp_id)
    client.log_param(run.info.run_id, "a", "1")
    client.log_param(run.info.run_id, "a", "1")  # the same value again is fine
    with pytest.raises(MlflowException) as info:
        client.log_param(run.info.run_id, "a", "2")
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(MlflowException) as info:
        client.log_metric(run.info.run_id, "m", float("nan"))
    assert info.value.error_code == "INVALID_PARAMETER_VALUE" and "finite" in str(info.value)
    with pytest.raises(MlflowException) as info:
        client.get_run("0" * 32)
    assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as info:
        client.search_runs([exp_id], filter_string="metrics.f1 >>> 2")
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"


def test_search_runs_filters_orders_and_pages(client: MlflowClient) -> None:
    from mlflow.entities import Metric, Param, RunTag

    exp_id = client.create_experiment(_name("search"))
    ids = []
    for i in range(7):
        run = client.create_run(exp_id, run_name=f"r{i}")
        client.log_batch(run.info.run_id, metrics=[Metric("f1", i / 10, 0, 0)],
                         params=[Param("model", "rf" if i % 2 else "tree")],
                         tags=[RunTag("i", str(i))])
        client.set_terminated(run.info.run_id)
        ids.append(run.info.run_id)
    hits = client.search_runs([exp_id], "metrics.f1 > 0.25 and params.model = 'rf'",
                              order_by=["metrics.f1 DESC"])
    assert [r.info.run_id for r in hits] == [ids[5], ids[3]]
    page1 = client.search_runs([exp_id], order_by=["metrics.f1 ASC"], max_results=3)
    assert [r.info.run_id for r in page1] == ids[:3] and page1.token
    page2 = client.search_runs([exp_id], order_by=["metrics.f1 ASC"], max_results=3,
                               page_token=page1.token)
    page3 = client.search_runs([exp_id], order_by=["metrics.f1 ASC"], max_results=3,
                               page_token=page2.token)
    assert [r.info.run_id for r in page2] + [r.info.run_id for r in page3] == ids[3:]
    assert not page3.token
    named = client.search_runs([exp_id], "attributes.run_name LIKE 'r%' and tags.i IN ('1', '2')")
    assert sorted(r.info.run_name for r in named) == ["r1", "r2"]


def test_artifacts_round_trip_into_the_content_addressed_store(
    server: MlflowServer, tmp_path: Path
) -> None:
    mlflow.set_experiment(_name("art"))
    src = tmp_path / "notes.txt"
    src.write_text("hello modelog")
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(src), artifact_path="docs")
        mlflow.log_text("x,y\n1,2\n", "data/table.csv")
    client = MlflowClient()
    listed = client.list_artifacts(run.info.run_id)
    assert sorted(f.path for f in listed) == ["data", "docs"]
    got = client.download_artifacts(run.info.run_id, "docs/notes.txt", str(tmp_path / "out"))
    assert Path(got).read_text() == "hello modelog"
    assert server.state is not None
    with server.state.reading() as fold:
        assert set(fold.runs[run.info.run_id].artifacts) == {"docs/notes.txt", "data/table.csv"}


def test_register_alias_and_load_through_models_uri(server: MlflowServer) -> None:
    from sklearn.linear_model import LogisticRegression

    name = _name("churn")
    mlflow.set_experiment(_name("reg"))
    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name=name,
                                        pip_requirements=["scikit-learn"])
    assert str(info.registered_model_version) == "1"
    client = MlflowClient()
    v2 = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    assert v2.version == "2" and v2.status == "READY"
    client.set_registered_model_alias(name, "production", 1)
    by_alias = client.get_model_version_by_alias(name, "production")
    assert by_alias.version == "1" and by_alias.run_id == run.info.run_id
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@production")
    assert list(loaded.predict([[0.0], [3.0]])) == [0, 1]
    # a runs:/ source resolves to the run's logged model, as MLflow's server does it
    assert v2.source == f"runs:/{run.info.run_id}/model"
    assert client.get_model_version_download_uri(name, "2").startswith("mlflow-artifacts:/")
    assert list(mlflow.pyfunc.load_model(f"models:/{name}/2").predict([[3.0]])) == [1]
    with pytest.raises(MlflowException) as exc:
        client.set_registered_model_alias(name, "staging", 9)
    assert exc.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    client.delete_registered_model_alias(name, "production")
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(name, "production")
    versions = client.search_model_versions(f"name = '{name}'")
    assert sorted(v.version for v in versions) == ["1", "2"]
    # the same facts in modelog's registry, with who moved the alias and why
    assert server.state is not None
    state = server.state.client.registry(name)
    history = state.models[name]
    assert sorted(history.versions) == [1, 2]


def test_sklearn_autolog_logs_params_metrics_and_inputs(server: MlflowServer) -> None:
    import numpy as np
    from sklearn.tree import DecisionTreeClassifier

    mlflow.set_experiment(_name("autolog"))
    mlflow.sklearn.autolog(log_models=False, silent=True)
    try:
        x = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 0.0]])
        with mlflow.start_run() as run:
            DecisionTreeClassifier(max_depth=2).fit(x, np.array([0, 0, 1, 1]))
    finally:
        mlflow.sklearn.autolog(disable=True)
    got = MlflowClient().get_run(run.info.run_id)
    assert got.data.params["max_depth"] == "2"
    assert got.data.metrics["training_accuracy_score"] == pytest.approx(1.0)
    assert got.data.tags["estimator_name"] == "DecisionTreeClassifier"
    assert got.inputs.dataset_inputs, "autolog's training dataset reached the run's inputs"


def test_everything_shows_up_in_modelogs_views_and_registry(
    server: MlflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from modelog.cli import app
    from modelog.streams.projector import Projector

    name, exp = _name("viewed"), _name("viewed")
    mlflow.set_experiment(exp)
    with mlflow.start_run(run_name="seen") as run:
        mlflow.log_param("depth", 4)
        mlflow.log_metric("f1", 0.75)
    client = MlflowClient()
    client.create_registered_model(name)
    client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias(name, "production", "1")
    s = server.settings
    with Projector(s, serve=False) as projector:
        for _ in range(120):
            projector.project_once(timeout=0.5)
            done = projector.connection.execute(
                "select count(*) from aliases where model = ?", [name]).fetchall()[0][0]
            ran = projector.connection.execute(
                "select count(*) from runs where run_id = ? and status = 'finished'",
                [run.info.run_id]).fetchall()[0][0]
            if done and ran:
                break
    monkeypatch.setenv("MODELOG_DATA_DIR", str(s.data_dir))
    monkeypatch.setenv("MODELOG_BROKER", s.bootstrap_servers)
    monkeypatch.setenv("MODELOG_TOPIC_PREFIX", s.topic_prefix)
    runner = CliRunner()
    runs = runner.invoke(app, ["runs", "list", "--experiment", exp, "-F", "json"])
    assert runs.exit_code == 0, runs.output
    assert run.info.run_id in runs.output and "0.75" in runs.output
    shown = runner.invoke(app, ["registry", "show", name])
    assert shown.exit_code == 0, shown.output
    assert "production" in shown.output and "set through the MLflow API" in shown.output
    assert "mlflow@127.0.0.1" in shown.output


def test_any_mlflow_experiment_name_and_run_defaults(client: MlflowClient) -> None:
    name = f"/Users/ana/My Experiment {uuid.uuid4().hex[:6]}"
    exp_id = client.create_experiment(name)
    run = client.create_run(exp_id, start_time=456, run_name="my name")
    got = client.get_run(run.info.run_id)
    assert (got.info.experiment_id, got.info.start_time, got.info.run_name,
            got.info.user_id) == (exp_id, 456, "my name", "unknown")
    assert [r.info.run_id for r in client.search_runs([exp_id])] == [run.info.run_id]
    client.log_metric(run.info.run_id, "metric", 123.456, timestamp=789, step=2)
    (point,) = client.get_metric_history(run.info.run_id, "metric")
    assert (point.value, point.timestamp, point.step) == (123.456, 789, 2)
    assert client.get_metric_history(run.info.run_id, "absent") == []
    client.log_param(run.info.run_id, "empty", "")
    assert client.get_run(run.info.run_id).data.params["empty"] == ""


def test_mlflow_rest_semantics_of_its_own_test_suite(client: MlflowClient) -> None:
    """Behaviours MLflow's tests/tracking/test_rest_tracking.py asserts, re-checked here."""
    import requests

    stem = uuid.uuid4().hex[:6]
    ids = [client.create_experiment(f"{stem}{n}") for n in ("a", "ab", "Abc")]
    names = [e.name for e in client.search_experiments(filter_string=f"name LIKE '{stem}%'")]
    assert names == [f"{stem}Abc", f"{stem}ab", f"{stem}a"]  # newest first
    runs = sorted(client.create_run(ids[0], start_time=1).info.run_id for _ in range(5))
    page = client.search_runs([ids[0]], max_results=3)
    assert [r.info.run_id for r in page] == runs[:3]  # ties broken by run id
    with pytest.raises(MlflowException, match="Invalid value 123456789 for parameter"):
        client.search_runs([ids[0]], max_results=123456789)
    client.set_tag(runs[0], "taggity", "do-dah")
    client.delete_tag(runs[0], "taggity")
    assert "taggity" not in client.get_run(runs[0]).data.tags
    with pytest.raises(MlflowException, match=r"Run .+ not found"):
        client.delete_tag("fake_run_id", "taggity")
    with pytest.raises(MlflowException, match="No tag with name: fakeTag"):
        client.delete_tag(runs[0], "fakeTag")
    client.delete_run(runs[0])
    with pytest.raises(MlflowException, match=f"The run {runs[0]} must be in"):
        client.set_tag(runs[0], "t", "v")
    url = f"{client.tracking_uri}/api/2.0/mlflow"
    no_timestamp = requests.post(f"{url}/runs/log-batch", json={
        "run_id": runs[1], "metrics": [{"key": "mae", "value": 2.5}]}, timeout=10)
    assert no_timestamp.status_code == 400
    assert no_timestamp.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    missing = requests.post(f"{url}/experiments/create", json={}, timeout=10)
    assert missing.status_code == 400
    assert "Missing value for required parameter 'name'" in missing.text
    unknown = requests.get(f"{url}/traces/search", timeout=10)
    assert unknown.status_code == 404 and unknown.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    client.set_terminated(runs[1], "FAILED")
    assert client.get_run(runs[1]).info.status == "FAILED"
    client.set_terminated(runs[2], "KILLED")
    assert client.get_run(runs[2]).info.status == "KILLED"


def test_a_body_nested_too_deeply_is_a_malformed_request(server: MlflowServer) -> None:
    import httpx

    deep = b'{"name":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    answer = httpx.post(f"{server.url}/api/2.0/mlflow/experiments/create", content=deep,
                        headers={"content-type": "application/json"}, timeout=30)
    assert answer.status_code == 400
    assert answer.json()["error_code"] == "MALFORMED_REQUEST"
    assert "nests too deeply" in answer.json()["message"]


def test_dataset_inputs_nested_too_deeply_are_refused_naming_the_field(
        client: MlflowClient, server: MlflowServer) -> None:
    import httpx

    run = client.create_run(client.create_experiment(_name("deep")))
    tags: object = "v"
    for _ in range(40):
        tags = [tags]
    body = {"run_id": run.info.run_id,
            "datasets": [{"dataset": {"name": "d", "digest": "abc", "source_type": "local",
                                      "source": "x", "schema": "", "profile": ""},
                          "tags": [{"key": "k", "value": "v", "deep": tags}]}]}
    answer = httpx.post(f"{server.url}/api/2.0/mlflow/runs/log-inputs", json=body, timeout=30)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "nest at most 32 levels" in answer.json()["message"]
