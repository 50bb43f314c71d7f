"""The MLflow client's registry and lifecycle calls against ``modelog mlflow-server``.

Registered models and versions (metadata, tags, stages, search and pages,
deletion), experiment and run deletion, the token, and SDK runs seen through
MLflow. The server fixture is :mod:`tests.test_mlflow`'s.
"""

from __future__ import annotations

import importlib.util
import time
import uuid
from pathlib import Path
from types import ModuleType

import pytest

mlflow = pytest.importorskip("mlflow")

from mlflow.entities import ViewType  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from modelog.streams.mlflow_api import MlflowServer  # noqa: E402

pytestmark = [pytest.mark.broker, pytest.mark.slow]


_spec = importlib.util.spec_from_file_location(
    "_mlflow_base", Path(__file__).with_name("test_mlflow.py"))
_base: ModuleType = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(_base)  # type: ignore[union-attr]
server = _base.server
client = _base.client


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_registered_model_metadata_tags_stages_and_deletion(client: MlflowClient) -> None:
    name = _name("meta")
    client.create_registered_model(name, tags={"owner": "ana"}, description="first")
    with pytest.raises(MlflowException) as info:
        client.create_registered_model(name)
    assert info.value.error_code == "RESOURCE_ALREADY_EXISTS"
    client.update_registered_model(name, description="churn model")
    client.set_registered_model_tag(name, "team", "growth")
    client.delete_registered_model_tag(name, "owner")
    got = client.get_registered_model(name)
    assert got.description == "churn model" and got.tags == {"team": "growth"}
    v1 = client.create_model_version(name, "mlflow-artifacts:/0/x/artifacts/model",
                                     tags={"k": "v"}, description="v one")
    assert (v1.version, v1.status, v1.tags, v1.description) == ("1", "READY", {"k": "v"},
                                                                "v one")
    client.set_model_version_tag(name, "1", "checked", "yes")
    client.delete_model_version_tag(name, "1", "k")
    client.update_model_version(name, "1", description="checked")
    client.transition_model_version_stage(name, "1", "Staging")
    v = client.get_model_version(name, "1")
    assert v.tags == {"checked": "yes"} and v.current_stage == "Staging"
    assert v.description == "checked"
    assert client.get_model_version_download_uri(name, "1") == \
        "mlflow-artifacts:/0/x/artifacts/model"
    assert [x.version for x in client.get_latest_versions(name, stages=["Staging"])] == ["1"]
    client.create_model_version(name, "mlflow-artifacts:/0/y/artifacts/model")
    client.delete_model_version(name, "2")
    with pytest.raises(MlflowException) as info:
        client.get_model_version(name, "2")
    assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    client.delete_registered_model(name)
    with pytest.raises(MlflowException) as info:
        client.get_registered_model(name)
    assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as info:
        client.create_model_version("no-such-model", "s3://x")
    assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException) as info:
        client.create_registered_model("bad name with spaces")
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"


def test_search_registered_models_and_versions_with_pages(client: MlflowClient) -> None:
    stem = _name("srch")
    for i in range(3):
        client.create_registered_model(f"{stem}-{i}")
        client.create_model_version(f"{stem}-{i}", f"mlflow-artifacts:/0/r{i}/artifacts/m")
    first = client.search_registered_models(f"name LIKE '{stem}-%'", max_results=2)
    assert [m.name for m in first] == [f"{stem}-0", f"{stem}-1"] and first.token
    rest = client.search_registered_models(f"name LIKE '{stem}-%'", max_results=2,
                                           page_token=first.token)
    assert [m.name for m in rest] == [f"{stem}-2"] and not rest.token
    versions = client.search_model_versions(f"name = '{stem}-1'")
    assert [(v.name, v.version) for v in versions] == [(f"{stem}-1", "1")]
    with pytest.raises(MlflowException) as info:
        client.search_registered_models("name LIKE")
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"


def test_experiment_and_run_deletion_and_view_types(client: MlflowClient) -> None:
    exp_id = client.create_experiment(_name("del"))
    keep, gone = client.create_run(exp_id), client.create_run(exp_id)
    client.delete_run(gone.info.run_id)
    active = client.search_runs([exp_id])
    assert [r.info.run_id for r in active] == [keep.info.run_id]
    deleted = client.search_runs([exp_id], run_view_type=ViewType.DELETED_ONLY)
    assert [r.info.run_id for r in deleted] == [gone.info.run_id]
    client.restore_run(gone.info.run_id)
    assert len(client.search_runs([exp_id])) == 2
    client.delete_experiment(exp_id)
    assert client.get_experiment(exp_id).lifecycle_stage == "deleted"
    listed = client.search_experiments(view_type=ViewType.DELETED_ONLY)
    assert exp_id in [e.experiment_id for e in listed]
    client.restore_experiment(exp_id)
    assert client.get_experiment(exp_id).lifecycle_stage == "active"


def test_sdk_runs_show_up_through_mlflow(server: MlflowServer, client: MlflowClient) -> None:
    import modelog

    experiment = _name("sdk")
    with modelog.connect(settings=server.settings) as sdk, \
            sdk.start_run(experiment, name="from-sdk", capture_code=False) as run:
        run.log_params({"depth": 3})
        run.log_metric("f1", 0.9, step=2)
    deadline = time.monotonic() + 30
    while (found := client.get_experiment_by_name(experiment)) is None:
        assert time.monotonic() < deadline, "the SDK run never reached the endpoint"
        time.sleep(0.1)
    while not (runs := client.search_runs([found.experiment_id], "metrics.f1 > 0.5")) or \
            runs[0].info.status != "FINISHED":
        assert time.monotonic() < deadline, "the SDK run's metrics never reached the endpoint"
        time.sleep(0.1)
    assert runs[0].info.run_id == run.run_id and runs[0].data.params == {"depth": "3"}


def test_beyond_loopback_a_token_is_required(server: MlflowServer,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from modelog.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="MODELOG_MLFLOW_TOKEN"):
        MlflowServer(server.settings, "0.0.0.0", 0)
    with MlflowServer(server.settings, port=0, token="s3cret") as guarded:
        monkeypatch.delenv("MLFLOW_TRACKING_TOKEN", raising=False)
        with pytest.raises(MlflowException, match="requires a token"):
            MlflowClient(guarded.url).get_experiment("0")
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "s3cret")
        assert MlflowClient(guarded.url).get_experiment("0").name == "Default"


def test_concurrent_creations_of_one_name_yield_one_experiment(client: MlflowClient) -> None:
    from concurrent.futures import ThreadPoolExecutor

    name = _name("race")

    def create(_: int) -> str:
        try:
            return str(client.create_experiment(name))
        except MlflowException as exc:
            return str(exc.error_code)

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(create, range(8)))
    ids = [o for o in outcomes if o != "RESOURCE_ALREADY_EXISTS"]
    assert len(ids) == 1 and outcomes.count("RESOURCE_ALREADY_EXISTS") == 7
    assert client.get_experiment_by_name(name).experiment_id == ids[0]


def test_registry_semantics_of_mlflows_own_test_suite(client: MlflowClient) -> None:
    """Behaviours MLflow's tests/tracking/test_model_registry.py asserts, re-checked here."""
    name = _name("semantics")
    client.create_registered_model(name)
    run_a, run_b = uuid.uuid4().hex, uuid.uuid4().hex
    mv1 = client.create_model_version(name, f"runs:/{run_a}/model", run_a, {"n": 12345})
    assert mv1.tags == {"n": "12345"} and mv1.aliases == []
    client.create_model_version(name, f"runs:/{run_a}/other", run_a)
    client.create_model_version(name, f"runs:/{run_b}/other", run_b)
    assert [v.version for v in client.search_model_versions(f"run_id = '{run_a}'")] == ["2", "1"]
    assert [v.version for v in client.search_model_versions(
        f"source_path = 'runs:/{run_a}/model'")] == ["1"]
    assert [v.version for v in client.search_model_versions(
        f"name = '{name}'", order_by=["version_number DESC"])] == ["3", "2", "1"]
    client.transition_model_version_stage(name, "1", "Production")
    latest = {v.current_stage: v.version for v in client.get_latest_versions(name)}
    assert latest == {"Production": "1", "None": "3"}
    with pytest.raises(MlflowException, match="Parameter 'version' must be an integer"):
        client.get_model_version(name, "something not correct")
    client.set_registered_model_alias(name, "test_alias", "1")
    assert client.get_registered_model(name).aliases == {"test_alias": "1"}
    assert client.get_model_version(name, "1").aliases == ["test_alias"]
    copy = client.copy_model_version(f"models:/{name}@test_alias", name)
    assert copy.version == "4" and copy.source == f"models:/{name}/1"
    assert client.get_model_version_download_uri(name, "4") == f"runs:/{run_a}/model"
    client.delete_model_version(name, "4")
    assert client.create_model_version(name, "runs:/x/model").version == "5"  # never reused


def test_rename_is_refused_with_its_reason_and_an_absent_model_is_not_found(
        client: MlflowClient) -> None:
    name = _name("rename")
    client.create_registered_model(name)
    with pytest.raises(MlflowException, match="not supported: modelog's registry") as info:
        client.rename_registered_model(name, f"{name}-new")
    assert info.value.error_code == "INVALID_PARAMETER_VALUE"
    assert client.get_registered_model(name).name == name
    client.delete_registered_model(name)
    with pytest.raises(MlflowException,
                       match=f"Registered Model with name={name} not found") as info:
        client.rename_registered_model(name, "something-else")
    assert info.value.error_code == "RESOURCE_DOES_NOT_EXIST"
