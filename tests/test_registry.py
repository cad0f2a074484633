"""Registry mechanics on plain folders; tests/test_training.py covers real exported models."""

import json
from pathlib import Path

import pytest

from tweetpulse.registry import ArtifactError, ModelRegistry, load_artifact, pad_token


def _export_folder(tmp: Path, tag: str) -> Path:
    folder = tmp / f"export-{tag}"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"onnx-" + tag.encode())
    (folder / "tokenizer.json").write_text("{}")
    (folder / "config.json").write_text(json.dumps({"id2label": {"0": "negative", "1": "positive"}}))
    return folder


def test_publish_numbers_versions_and_checksums_every_file(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    v1 = registry.publish(_export_folder(tmp_path, "a"), {"base_model": "m", "preset": "seed"})
    v2 = registry.publish(_export_folder(tmp_path, "b"), {"base_model": "m", "preset": "seed"})
    assert (v1, v2) == ("v0001", "v0002") and registry.versions() == ["v0001", "v0002"]
    manifest = load_artifact(registry.path(v1)).manifest
    assert set(manifest["files"]) == {"model.onnx", "tokenizer.json", "config.json"}
    assert manifest["version"] == "v0001" and manifest["preset"] == "seed"


def test_promote_and_rollback_walk_the_production_history(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    versions = [registry.publish(_export_folder(tmp_path, t), {}) for t in "abc"]
    assert registry.production() is None
    for v in versions:
        registry.promote(v)
    assert registry.production() == "v0003"
    assert registry.rollback() == "v0002"
    assert registry.rollback() == "v0001"
    with pytest.raises(ArtifactError, match="nothing to roll back"):
        registry.rollback()
    assert registry.load().version == "v0001"


def test_tampered_artifact_is_refused_naming_the_file(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    version = registry.publish(_export_folder(tmp_path, "a"), {})
    (registry.path(version) / "model.onnx").write_bytes(b"corrupted")
    with pytest.raises(ArtifactError, match=r"checksum mismatch for model\.onnx"):
        registry.load(version)
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        registry.promote(version)
    assert registry.production() is None


def test_unknown_version_and_empty_registry_are_refused_clearly(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    with pytest.raises(ArtifactError, match="no production model"):
        registry.load()
    with pytest.raises(ArtifactError, match="no model version 'v0042'"):
        registry.load("v0042")


def test_pad_token_comes_from_the_saved_tokenizer_config(tmp_path: Path) -> None:
    assert pad_token(tmp_path) == "[PAD]"  # no tokenizer_config.json: BERT's
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<pad>"}))
    assert pad_token(tmp_path) == "<pad>"  # MPNet / RoBERTa vocabularies
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"pad_token": {"content": "<p>"}}))
    assert pad_token(tmp_path) == "<p>"
