import json

import pytest

from vidnotes.store import ModelIntegrityError, ModelStore, ModelStoreError


def _model(tmp_path, content=b"weights"):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "model.onnx").write_bytes(content)
    (src / "sub" / "tokenizer.json").write_text("{}")
    return src


def test_publish_fetch_current(tmp_path):
    store = ModelStore(tmp_path / "store")
    assert store.current("whisper") is None and store.versions("whisper") == []
    m = store.publish("whisper", "v1", _model(tmp_path), {"source": "test"})
    assert set(m["files"]) == {"model.onnx", "sub/tokenizer.json"} and m["source"] == "test"
    assert store.current("whisper") == "v1"
    local, manifest = store.fetch("whisper")
    assert (local / "model.onnx").read_bytes() == b"weights" and manifest["version"] == "v1"
    store.publish("whisper", "v2", _model(tmp_path / "b", b"other"), {}, make_current=False)
    assert store.versions("whisper") == ["v1", "v2"] and store.current("whisper") == "v1"
    store.set_current("whisper", "v2")
    assert store.fetch("whisper")[1]["version"] == "v2"


def test_corrupt_file_is_refused(tmp_path):
    store = ModelStore(tmp_path / "store")
    store.publish("whisper", "v1", _model(tmp_path), {})
    (tmp_path / "store" / "whisper" / "v1" / "model.onnx").write_bytes(b"weightz")  # same size
    with pytest.raises(ModelIntegrityError, match="sha256 .* does not match"):
        store.fetch("whisper")
    (tmp_path / "store" / "whisper" / "v1" / "model.onnx").unlink()
    with pytest.raises(ModelIntegrityError, match="missing"):
        store.fetch("whisper")


def test_bad_names_and_missing(tmp_path):
    store = ModelStore(tmp_path / "store")
    with pytest.raises(ModelStoreError, match="make models"):
        store.fetch("whisper")
    for bad in ("../x", "", ".hidden", "a/b"):
        with pytest.raises(ModelStoreError):
            store.fetch("whisper", bad)
    store.publish("whisper", "v1", _model(tmp_path), {})
    (tmp_path / "store" / "whisper" / "v1" / "manifest.json").write_text("{not json")
    with pytest.raises(ModelStoreError, match="not valid JSON"):
        store.manifest("whisper", "v1")
    with pytest.raises(ModelStoreError, match="not found"):
        store.set_current("whisper", "v9")
    assert json.loads((tmp_path / "store" / "whisper" / "CURRENT").read_text() and '"ok"') == "ok"
