"""shared.core.artifacts on both backends: a local folder and S3 (moto's S3 server, reached over HTTP
exactly as MinIO or AWS would be)."""

from __future__ import annotations

import pytest

from shared.core.artifacts import ArtifactStore
from shared.core.errors import InvalidParameter, NotFound
from tests.conftest import free_port


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, monkeypatch) -> ArtifactStore:
    if request.param == "local":
        return ArtifactStore(str(tmp_path / "artifacts"))
    endpoint = request.getfixturevalue("s3_endpoint")
    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    bucket = f"tessera-{tmp_path.name.lower().replace('_', '-')[-30:]}"
    store = ArtifactStore(f"s3://{bucket}/root", s3_endpoint_url=endpoint)
    store.fs.mkdir(bucket)
    return store


def test_write_read_list_delete(store):
    size = store.write("org/proj/exp/run/artifacts/model/weights.bin", [b"a" * 1000, b"b" * 24])
    store.write("org/proj/exp/run/artifacts/notes.txt", [b"hello"])
    assert size == 1024
    assert b"".join(store.read("org/proj/exp/run/artifacts/notes.txt")) == b"hello"
    entries = store.list("org/proj/exp/run/artifacts")
    assert [(e.name, e.is_dir, e.size) for e in entries] == [("model", True, None), ("notes.txt", False, 5)]
    assert store.list("org/proj/exp/run/artifacts/notes.txt") == []  # a file lists as nothing, as in MLflow
    with pytest.raises(NotFound):
        list(store.read("org/proj/exp/run/artifacts/model"))  # a folder is not a file
    store.delete("org/proj/exp/run/artifacts/model")
    assert [e.name for e in store.list("org/proj/exp/run/artifacts")] == ["notes.txt"]
    with pytest.raises(NotFound):
        store.delete("org/proj/exp/run/artifacts/model")


@pytest.mark.parametrize("bad", ["../escape", "a/../../escape", "a/./b", "a//b", "a\\b", "a\x00b"])
def test_keys_cannot_escape_the_root(store, bad):
    with pytest.raises(InvalidParameter):
        store.write(bad, [b"x"])
