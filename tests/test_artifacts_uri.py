"""The artifact store on filesystem URIs: fsspec's memory://, file://, and S3 (a real S3 server).

S3 is served by moto's standalone server over HTTP on loopback; pyarrow's own S3
client talks to it, as it would to AWS or MinIO.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

import modelog
from modelog.config import Settings
from modelog.models.errors import ArtifactDigestMismatch
from modelog.store.artifacts import ArtifactStore, RemoteArtifactStore, open_store
from modelog.store.errors import ArtifactNotFoundError, ArtifactPathError
from modelog.streams.projector import Projector
from modelog.streams.registry_agent import RegistryService
from modelog.streams.topics import ensure_topics


def test_memory_uri_round_trip_and_integrity() -> None:
    fsspec = pytest.importorskip("fsspec")
    store = open_store("memory://modelog-test/artifacts")
    assert isinstance(store, RemoteArtifactStore)
    digest, uri = store.put_bytes(b"weights", suffix=".bin")
    assert uri == f"memory://modelog-test/artifacts/sha256/{digest[:2]}/{digest}.bin"
    assert store.put_bytes(b"weights", suffix=".bin") == (digest, uri)  # idempotent
    assert store.get_bytes(uri) == store.get_bytes(digest) == b"weights"
    assert store.exists(digest) and not store.exists("0" * 64)
    table = pa.table({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    tdigest, turi = store.put_table(table)
    assert store.exists(tdigest)
    assert store.read_table(turi).equals(table) and turi.endswith(".table.parquet")
    # an object altered behind the store's back is refused, not returned
    fsspec.filesystem("memory").pipe(uri.removeprefix("memory:/"), b"tampered")
    with pytest.raises(ArtifactDigestMismatch, match="digest mismatch in "):
        store.get_bytes(uri)
    with pytest.raises(ArtifactPathError, match="not an artifact of the store"):
        store.get_bytes("memory://modelog-test/artifacts/sha256/../../secrets")
    with pytest.raises(ArtifactNotFoundError):
        store.get_bytes("1" * 64)
    with pytest.raises(ArtifactPathError, match="remote"):
        store.resolve(turi)  # no local path: read_bytes()/get_bytes() instead


def test_file_uri_and_plain_paths_are_the_local_store(tmp_path: Path) -> None:
    assert type(open_store(tmp_path.as_uri())) is ArtifactStore
    assert open_store(tmp_path.as_uri()).root == tmp_path
    assert type(open_store(tmp_path)) is ArtifactStore
    s = Settings(data_dir=tmp_path, artifact_uri="memory://from-settings")
    assert isinstance(ArtifactStore.from_settings(s), RemoteArtifactStore)
    env = Settings.from_env({"MODELOG_ARTIFACT_URI": "memory://env", "MODELOG_DATA_DIR": "d"})
    assert env.artifact_uri == "memory://env"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def s3_uri() -> Iterator[str]:
    server_mod = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    mp = pytest.MonkeyPatch()
    for var, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"
                       }.items():
        mp.setenv(var, value)
    port = _free_port()
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}").create_bucket(
            Bucket="models")
        yield f"s3://models/modelog?endpoint_override=127.0.0.1:{port}&scheme=http"
    finally:
        server.stop()
        mp.undo()


def test_s3_store_round_trip(s3_uri: str) -> None:
    store = open_store(s3_uri)
    digest, uri = store.put_bytes(b"\x00model bytes", suffix=".skops")
    assert uri == f"s3://models/modelog/sha256/{digest[:2]}/{digest}.skops"
    assert "endpoint_override" not in uri  # endpoints and credentials stay out of the log
    assert store.get_bytes(uri) == b"\x00model bytes" and store.exists(digest)
    table = pa.table({"x": [0.5, 1.5]})
    _, turi = store.put_table(table)
    assert store.read_table(turi).equals(table)


@pytest.mark.broker
def test_sdk_datasets_and_models_live_in_s3(settings: Settings, s3_uri: str,
                                            tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    s = settings.replace(artifact_uri=s3_uri)
    ensure_topics(s)
    frame = pa.table({"x": [0.0, 1.0, 2.0, 3.0], "y": [0, 0, 1, 1]})
    model = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    with modelog.connect(settings=s) as client, RegistryService(s):
        ds = client.log_dataset("points", frame)
        assert ds.uri.startswith("s3://models/modelog/sha256/")
        version = client.register_model("clf", model, dataset=ds, target="y")
        loaded = client.load_model("clf", version)
        assert loaded.predict([[2.5]]).tolist() == [1]
        client.flush()
    assert not (s.data_dir / "artifacts").exists()  # nothing landed on local disk
    with Projector(s, serve=False) as projector:
        for _ in range(60):
            projector.project_once(timeout=0.5)
            if projector.connection.execute("select count(*) from datasets").fetchall()[0][0]:
                break
    with modelog.connect(settings=s) as client:
        assert client.get_dataset("points").equals(frame)
