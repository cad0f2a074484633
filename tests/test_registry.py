"""Registry mechanics on plain folders; tests/test_training.py covers real exported models and
tests/test_registry_durability.py concurrency, locking, fsync and torn files."""

import json
import os
import shutil
from pathlib import Path

import pytest

from tweetpulse.registry import (
    MANIFEST,
    POINTER,
    ArtifactError,
    ModelArtifact,
    ModelRegistry,
    load_artifact,
    pad_token,
    validate_version,
    write_manifest,
)


def export_folder(tmp: Path, tag: str) -> Path:
    """A minimal exported model folder (what training hands to publish)."""
    folder = tmp / f"export-{tag}"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"onnx-" + tag.encode())
    (folder / "tokenizer.json").write_text("{}")
    (folder / "config.json").write_text(json.dumps({"id2label": {"0": "negative", "1": "positive"}}))
    return folder


def test_publish_numbers_versions_and_checksums_every_file(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    v1 = registry.publish(export_folder(tmp_path, "a"), {"base_model": "m", "preset": "seed"})
    v2 = registry.publish(export_folder(tmp_path, "b"), {"base_model": "m", "preset": "seed"})
    assert (v1, v2) == ("v0001", "v0002") and registry.versions() == ["v0001", "v0002"]
    manifest = load_artifact(registry.path(v1)).manifest
    assert set(manifest["files"]) == {"model.onnx", "tokenizer.json", "config.json"}
    assert manifest["version"] == "v0001" and manifest["preset"] == "seed"


def test_promote_and_rollback_walk_the_production_history(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    versions = [registry.publish(export_folder(tmp_path, t), {}) for t in "abc"]
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
    version = registry.publish(export_folder(tmp_path, "a"), {})
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


# -- untrusted version names (model announcements, the command line) ------------------------------

MALICIOUS_VERSIONS = [
    "../../etc",
    "/abs",
    "/etc/passwd",
    "v0001/../v0002",
    "v0001/",
    "./v0001",
    "",
    "v" + "1" * 10_000,
    "x" * 10_000,
    "latest",
    "v1",
    "V0001",
    " v0001",
    "v0001\n",
    "v\u0660\u0661\u0662\u0663",  # Arabic-Indic digits: str.isdigit() says yes
    "v0001\x00",
]


@pytest.fixture
def two_versions(tmp_path: Path) -> ModelRegistry:
    """v0001 (production) and v0002, so a trick that resolved to either would load something."""
    registry = ModelRegistry(tmp_path / "reg")
    for tag in "ab":
        registry.publish(export_folder(tmp_path, tag), {})
    registry.promote("v0001")
    return registry


@pytest.mark.parametrize("version", MALICIOUS_VERSIONS, ids=lambda v: repr(v)[:30])
def test_malformed_or_path_like_versions_are_refused_with_a_one_line_message(
    two_versions: ModelRegistry, version: str
) -> None:
    for attempt in (two_versions.path, two_versions.load, two_versions.promote, validate_version):
        with pytest.raises(ArtifactError, match="invalid model version") as refused:
            attempt(version)
        assert "\n" not in str(refused.value) and len(str(refused.value)) < 200
    assert two_versions.production() == "v0001"


@pytest.mark.parametrize("version", [None, 1, b"v0001", ["v0001"]])
def test_a_version_that_is_not_a_string_is_refused(version: object) -> None:
    with pytest.raises(ArtifactError, match="expected a string"):
        validate_version(version)


def test_well_formed_versions_pass_validation_unchanged() -> None:
    assert [validate_version(v) for v in ("v0001", "v9999", "v123456789")] == ["v0001", "v9999", "v123456789"]


def _symlink(registry: ModelRegistry, version: str, target: Path) -> None:
    (registry.versions_dir / version).symlink_to(target, target_is_directory=True)


def test_a_version_symlinked_outside_the_registry_is_refused_even_with_a_valid_artifact(
    two_versions: ModelRegistry, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    shutil.copytree(two_versions.path("v0002"), outside)  # a complete, verifiable model
    write_manifest(outside, {"version": "v0003"})
    _symlink(two_versions, "v0003", outside)
    with pytest.raises(ArtifactError, match="is a link"):
        two_versions.load("v0003")
    with pytest.raises(ArtifactError, match="is a link"):
        two_versions.promote("v0003")
    assert two_versions.versions() == ["v0001", "v0002"] and two_versions.production() == "v0001"


@pytest.mark.parametrize("kind", ["alias", "dangling", "loop"])
def test_symlinked_version_folders_are_refused_wherever_they_point(
    two_versions: ModelRegistry, kind: str
) -> None:
    versions = two_versions.versions_dir
    target = {"alias": versions / "v0002", "dangling": versions / "v0077", "loop": versions / "v0003"}[kind]
    _symlink(two_versions, "v0003", target)
    with pytest.raises(ArtifactError, match=r"is a link|cannot be resolved"):
        two_versions.load("v0003")
    assert two_versions.versions() == ["v0001", "v0002"]


def test_a_pointer_holding_a_path_is_refused_when_loading_production(two_versions: ModelRegistry) -> None:
    (two_versions.root / POINTER).write_text("../../etc\n")
    assert two_versions.production() == "../../etc"  # what it names; loading decides
    with pytest.raises(ArtifactError, match="invalid model version"):
        two_versions.load()


# -- corrupt artifacts: every failure to load is an ArtifactError ----------------------------------

SHA = "0" * 64
CORRUPT_MANIFESTS = {
    "a list": b"[1, 2]",
    "a string": b'"v0001"',
    "null": b"null",
    "truncated": b'{"files": {"model.onnx": "',
    "not utf-8": b"\xff\xfe\x00garbage",
    "empty": b"",
    "files a list": b'{"files": ["model.onnx"]}',
    "no files": b'{"version": "v0001"}',
    "parent path": json.dumps({"files": {"../../outside": SHA}}).encode(),
    "absolute path": json.dumps({"files": {"/etc/passwd": SHA}}).encode(),
    "digest not hex": json.dumps({"files": {"model.onnx": "not-a-digest"}}).encode(),
    "digest a number": json.dumps({"files": {"model.onnx": 42}}).encode(),
}


@pytest.mark.parametrize("content", CORRUPT_MANIFESTS.values(), ids=CORRUPT_MANIFESTS.keys())
def test_a_corrupt_manifest_is_refused_as_an_artifact_error(
    two_versions: ModelRegistry, content: bytes
) -> None:
    (two_versions.path("v0002") / MANIFEST).write_bytes(content)
    with pytest.raises(ArtifactError, match="v0002"):
        two_versions.load("v0002")
    with pytest.raises(ArtifactError):
        load_artifact(two_versions.path("v0002"), verify=False)


CORRUPT_CONFIGS = {
    "no id2label": b"{}",
    "a list": b"[]",
    "id2label a list": b'{"id2label": ["negative", "positive"]}',
    "empty id2label": b'{"id2label": {}}',
    "non-integer ids": b'{"id2label": {"neg": "negative"}}',
    "ids with a gap": b'{"id2label": {"0": "negative", "2": "positive"}}',
    "labels not strings": b'{"id2label": {"0": 0, "1": 1}}',
    "truncated": b'{"id2label": {"0": "neg',
    "not utf-8": b"\xff\xfe",
}


@pytest.mark.parametrize("content", CORRUPT_CONFIGS.values(), ids=CORRUPT_CONFIGS.keys())
def test_a_config_without_a_usable_id2label_is_refused_even_with_matching_checksums(
    two_versions: ModelRegistry, content: bytes
) -> None:
    folder = two_versions.path("v0002")
    (folder / "config.json").write_bytes(content)
    write_manifest(folder, {"version": "v0002"})  # checksums match: only the content is wrong
    with pytest.raises(ArtifactError, match=r"config\.json"):
        two_versions.load("v0002")


@pytest.mark.parametrize("value", ["128", -1, 0, 1.5, True, None])
def test_a_manifest_max_length_that_is_not_a_positive_integer_is_refused(
    two_versions: ModelRegistry, value: object
) -> None:
    write_manifest(two_versions.path("v0002"), {"version": "v0002", "max_length": value})
    with pytest.raises(ArtifactError, match="max_length"):
        two_versions.load("v0002")


@pytest.mark.parametrize("name", ["a" * 300, "nul\x00byte"], ids=["name too long", "nul byte"])
def test_os_errors_on_a_listed_file_become_artifact_errors(two_versions: ModelRegistry, name: str) -> None:
    folder = two_versions.path("v0002")
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"][name] = SHA
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="v0002"):
        two_versions.load("v0002")


def test_a_listed_file_that_is_missing_or_links_outside_is_refused(
    two_versions: ModelRegistry, tmp_path: Path
) -> None:
    folder = two_versions.path("v0002")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ArtifactError, match=r"tokenizer\.json is missing"):
        two_versions.load("v0002")
    secret = tmp_path / "secret"
    secret.write_text("{}")
    (folder / "tokenizer.json").symlink_to(secret)
    write_manifest(folder, {"version": "v0002"})
    with pytest.raises(ArtifactError, match="links outside"):
        two_versions.load("v0002")


def test_a_manifest_copied_from_another_version_is_refused(two_versions: ModelRegistry) -> None:
    shutil.copy(two_versions.path("v0001") / MANIFEST, two_versions.path("v0002") / MANIFEST)
    os.replace(two_versions.path("v0001") / "model.onnx", two_versions.path("v0002") / "model.onnx")
    with pytest.raises(ArtifactError, match="manifest names version 'v0001', not v0002"):
        two_versions.load("v0002")


def test_an_empty_version_does_not_fall_back_to_production(two_versions: ModelRegistry) -> None:
    assert two_versions.load().version == "v0001"
    with pytest.raises(ArtifactError, match="invalid model version ''"):
        two_versions.load("")


def test_unreadable_metrics_and_tokenizer_config_raise_artifact_errors(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text("[")
    with pytest.raises(ArtifactError, match=r"tokenizer_config\.json"):
        pad_token(tmp_path)
    registry = ModelRegistry(tmp_path / "reg")
    folder = export_folder(tmp_path, "a")
    (folder / "metrics.json").write_text('["not", "an", "object"]')  # published: listed, checksums match
    (folder / "tokenizer_config.json").write_text("[")
    artifact = registry.load(registry.publish(folder, {}))
    with pytest.raises(ArtifactError, match=r"metrics\.json"):
        _ = artifact.metrics
    with pytest.raises(ArtifactError, match=r"tokenizer_config\.json"):
        _ = artifact.pad_token


# -- only what the manifest lists is served ----------------------------------------------------------


def _plant(folder: Path) -> None:
    """Files dropped into a folder after publishing: a graph, a tokenizer config, metrics."""
    (folder / "model.int8.onnx").write_bytes(b"a planted graph")
    (folder / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<planted>"}))
    (folder / "metrics.json").write_text(json.dumps({"accuracy": 1.0}))


def test_an_unlisted_int8_graph_in_a_published_version_is_not_served(two_versions: ModelRegistry) -> None:
    folder = two_versions.path("v0001")
    _plant(folder)
    artifact = two_versions.load("v0001")  # still loads: every listed file matches its checksum
    assert artifact.onnx_path("int8") == folder / "model.onnx"  # the listed fp32 graph, not the plant
    assert artifact.file("model.int8.onnx") is None


def test_an_unlisted_tokenizer_config_in_a_published_version_is_not_read(two_versions: ModelRegistry) -> None:
    _plant(two_versions.path("v0001"))
    artifact = two_versions.load("v0001")
    assert artifact.pad_token == "[PAD]"  # not the planted '<planted>'
    assert artifact.metrics == {}


def test_loading_warns_once_naming_the_unlisted_files(
    two_versions: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    _plant(two_versions.path("v0001"))
    two_versions.load("v0001")
    [warning] = [r for r in caplog.records if "does not list" in r.getMessage()]
    assert warning.unlisted == ["metrics.json", "model.int8.onnx", "tokenizer_config.json"]


def test_listed_optional_files_are_served(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = export_folder(tmp_path, "a")
    _plant(folder)  # before publishing: checksummed and listed like every other file
    registry = ModelRegistry(tmp_path / "reg")
    artifact = registry.load(registry.publish(folder, {}))
    assert artifact.onnx_path("int8") == artifact.path / "model.int8.onnx"
    assert artifact.pad_token == "<planted>" and artifact.metrics == {"accuracy": 1.0}
    assert not [r for r in caplog.records if "does not list" in r.getMessage()]


def test_an_unpublished_export_without_a_files_list_reads_its_own_folder(tmp_path: Path) -> None:
    """What training and retraining score before publishing: a folder they wrote themselves."""
    folder = export_folder(tmp_path, "a")
    _plant(folder)
    candidate = ModelArtifact(folder, {"version": "candidate"})
    assert candidate.onnx_path("int8") == folder / "model.int8.onnx"
    assert candidate.pad_token == "<planted>"
