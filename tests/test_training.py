"""Training role: a real short LoRA fine-tune, merge, ONNX export, gates, registry and evaluation.

The slow steps run once per session (tests/conftest.py: tiny_training_run, tiny_model_registry).
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from conftest import require

from tweetpulse.cli import build_parser
from tweetpulse.options import apply_settings
from tweetpulse.registry import ArtifactError, ModelRegistry
from tweetpulse.settings import Settings, load_settings

if TYPE_CHECKING:
    from conftest import TinyTrainingRun

require("peft", "training needs the [train] extra")


def test_published_version_has_every_artifact_file_and_manifest_field(
    tiny_model_registry: ModelRegistry,
) -> None:
    artifact = tiny_model_registry.load()
    files = set(artifact.manifest["files"])
    assert {
        "model.onnx",
        "model.int8.onnx",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "special_tokens_map.json",
        "config.json",
        "metrics.json",
    } <= files
    assert artifact.id2label == {0: "negative", 1: "positive"}
    manifest = artifact.manifest
    assert manifest["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert manifest["lora"]["target_modules"] == ["query", "key", "value", "dense"]
    assert manifest["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert manifest["outputs"] == ["logits"] and manifest["max_length"] == 64
    assert len(manifest["data_fingerprint"]) == 64 and manifest["preset"] == "fast"
    assert (manifest["training"]["teacher"], manifest["training"]["transfer"]) == (None, [])
    assert manifest["export"]["max_abs_logit_diff_fp32"] <= manifest["export"]["atol"]


def test_published_model_records_exactly_its_training_texts_for_the_retrain_gate(
    tiny_training_run: TinyTrainingRun, tmp_path: Path
) -> None:
    from tweetpulse.retraining.gate import load_baseline
    from tweetpulse.training.data import text_key
    from tweetpulse.training.lineage import TRAINING_KEYS, rebuild_training_split

    settings = load_settings()
    artifact = tiny_training_run.registry.load()  # verifies every checksum, training-keys.txt's too
    assert TRAINING_KEYS in artifact.manifest["files"]
    # the split whose fingerprint equals the manifest's: exactly the examples the model trained on
    train = rebuild_training_split(artifact.manifest, settings)
    assert train is not None and len(train) == artifact.manifest["metrics"]["train_examples"]
    expected = {text_key(text) for text, _ in train}
    recorded = (artifact.path / TRAINING_KEYS).read_text().splitlines()
    assert recorded == sorted(expected)
    baseline = load_baseline(tiny_training_run.registry, settings)
    assert baseline.version == tiny_training_run.version and baseline.problem is None
    assert baseline.lineage.source == "recorded" and baseline.lineage.keys == frozenset(expected)
    copy = _copy_registry(tiny_training_run, tmp_path)  # an edited record is refused with the model
    (copy.path(tiny_training_run.version) / TRAINING_KEYS).write_text("0123456789abcdef\n")
    with pytest.raises(ArtifactError, match=TRAINING_KEYS):
        copy.load()


def test_onnx_model_scores_validation_texts_with_both_variants(tiny_training_run: TinyTrainingRun) -> None:
    from tweetpulse.processors.classifier import Classifier
    from tweetpulse.tweetfiles import read_labeled

    artifact = tiny_training_run.registry.load()
    examples = read_labeled(tiny_training_run.val_file)[:64]
    texts = [t for t, _ in examples]
    for variant in ("fp32", "int8"):
        logits = Classifier(artifact, provider="cpu", variant=variant).logits(texts)
        assert logits.shape == (64, 2) and np.isfinite(logits).all()


def test_training_writes_a_curve_and_logs_loss_and_eval_accuracy(tiny_training_run: TinyTrainingRun) -> None:
    metrics = json.loads((tiny_training_run.registry.load().path / "metrics.json").read_text())
    history = metrics["log_history"]
    assert any("loss" in e for e in history) and any("eval_accuracy" in e for e in history)
    assert metrics["steps"] == 30
    png = tiny_training_run.work_dir / "training-curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _copy_registry(run: TinyTrainingRun, tmp_path: Path) -> ModelRegistry:
    """A private copy of the session registry, for tests that change it."""
    shutil.copytree(run.registry.root, tmp_path / "registry")
    return ModelRegistry(tmp_path / "registry")


def _run_cli(argv: list[str], settings: Settings) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args, apply_settings(args, settings)) or 0)


def test_parity_gate_refuses_onnx_logits_that_differ_from_pytorch(
    tiny_training_run: TinyTrainingRun, tmp_path: Path
) -> None:
    from tweetpulse.processors.classifier import Classifier
    from tweetpulse.registry import load_artifact
    from tweetpulse.training.export import ParityError, check_parity
    from tweetpulse.tweetfiles import read_labeled

    # a copy: the int8 gate re-quantizes the folder it checks
    published = tiny_training_run.registry.load().path
    artifact = load_artifact(shutil.copytree(published, tmp_path / "model"))
    val = read_labeled(tiny_training_run.val_file)[:32]
    texts = [t for t, _ in val]
    logits = Classifier(artifact, provider="cpu", variant="fp32").logits(texts)
    report = check_parity(artifact.path, logits, texts, val, artifact.max_length, int8_max_drop=1.0)
    assert report.inputs == ["input_ids", "attention_mask", "token_type_ids"]
    with pytest.raises(ParityError, match="refusing to publish: ONNX fp32 logits differ from PyTorch"):
        check_parity(artifact.path, logits + 0.01, texts, val, artifact.max_length)
    assert report.parity["int8_scheme"] == "u8s8" and list(report.parity["int8_schemes_tried"]) == ["u8s8"]
    with pytest.raises(
        ParityError,
        match=r"refusing to publish: int8 accuracy .* u8s8 .*, u8s8-per-channel .*, u8u8-per-channel ",
    ):
        check_parity(artifact.path, logits, texts, val, artifact.max_length, int8_max_drop=-1.0)


def test_evaluate_json_reports_accuracy_macro_f1_and_confusion_for_production(
    tiny_training_run: TinyTrainingRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "confusion.png"
    # 100: fewer than either validation source holds (the built-in hold-out of a 1,000-sample run: 111)
    argv = ["evaluate", "--data", str(tiny_training_run.val_file), "--max-samples", "100"]
    argv += ["--registry", str(tiny_training_run.registry.root), "--json", "--plot", str(png)]
    assert _run_cli(argv, load_settings()) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0.0 <= report["macro_f1"] <= 1.0 and 0.0 <= report["accuracy"] <= 1.0
    assert report["model"] == {
        "version": tiny_training_run.version,
        "path": str(tiny_training_run.registry.path(tiny_training_run.version)),
        "variant": "int8",
    }
    assert sum(map(sum, report["confusion_matrix"])) == report["examples"] == 100
    assert set(report["per_class"]) == {"negative", "positive"}
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_evaluate_refuses_a_model_whose_checksums_do_not_match(
    tiny_training_run: TinyTrainingRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = _copy_registry(tiny_training_run, tmp_path)
    (registry.path(tiny_training_run.version) / "model.int8.onnx").write_bytes(b"tampered")
    argv = ["evaluate", "--data", str(tiny_training_run.val_file), "--registry", str(registry.root), "--json"]
    assert _run_cli(argv, load_settings()) == 1
    assert "checksum mismatch for model.int8.onnx" in capsys.readouterr().err


def test_models_promote_and_rollback_move_production_and_announce_it(
    tiny_training_run: TinyTrainingRun,
    tmp_path: Path,
    settings: Settings,
    consume_all: Callable[..., list],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tweetpulse.contracts import ModelAnnouncement

    registry = _copy_registry(tiny_training_run, tmp_path)
    manifest = registry.load().manifest
    fields = {k: v for k, v in manifest.items() if k not in ("files", "version", "created_at")}
    second = registry.publish(tiny_training_run.work_dir / "export", fields)
    root = ["--registry", str(registry.root)]
    assert _run_cli(["models", "promote", second, *root], settings) == 0
    assert registry.production() == second
    assert _run_cli(["models", "list", *root], settings) == 0
    listing = capsys.readouterr().out
    assert f"* {second}" in listing and f"  {tiny_training_run.version}" in listing
    assert _run_cli(["models", "rollback", *root], settings) == 0
    assert registry.production() == tiny_training_run.version
    announced = [ModelAnnouncement.from_bytes(m.value()) for m in consume_all(settings.topics.models, 2)]
    assert [(a.version, a.registry_root) for a in announced] == [
        (second, str(registry.root)),
        (tiny_training_run.version, str(registry.root)),
    ]
    assert all(m.key() == b"production" for m in consume_all(settings.topics.models, 2))


def test_models_show_verifies_and_refuses_a_tampered_version(
    tiny_training_run: TinyTrainingRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = _copy_registry(tiny_training_run, tmp_path)
    assert _run_cli(["models", "show", "--registry", str(registry.root)], load_settings()) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == tiny_training_run.version and shown["production"] is True
    (registry.path(tiny_training_run.version) / "config.json").write_text("{}")
    assert _run_cli(["models", "show", "--registry", str(registry.root)], load_settings()) == 1
    assert "checksum mismatch for config.json" in capsys.readouterr().err
    assert _run_cli(["models", "promote", "v0099", "--registry", str(registry.root)], load_settings()) == 1
    assert "no model version 'v0099'" in capsys.readouterr().err


def test_export_command_merges_a_saved_adapter_and_publishes_a_verified_version(
    tiny_training_run: TinyTrainingRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry_root = tmp_path / "registry"
    argv = ["export", "--adapter", str(tiny_training_run.work_dir / "adapter")]
    argv += ["--val", str(tiny_training_run.val_file), "--max-val-samples", "100", "--max-length", "64"]
    argv += ["--output", str(tmp_path / "work"), "--registry", str(registry_root), "--int8-max-drop", "0.05"]
    assert _run_cli(argv, load_settings()) == 0
    version = capsys.readouterr().out.strip()
    artifact = ModelRegistry(registry_root).load(version)
    original = tiny_training_run.registry.load()
    assert artifact.manifest["lora"]["r"] == original.manifest["lora"]["r"]
    assert artifact.manifest["export"]["max_abs_logit_diff_fp32"] <= 1e-3
    assert artifact.manifest["inputs"] == original.manifest["inputs"]


def test_split_zip_parts_join_into_the_model_folder_once(tmp_path: Path) -> None:
    from tweetpulse.training.base import assemble_split_zip

    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        zf.writestr("all-mpnet-base-v2/vocab.txt", "x" * 5000)
    data = archive.read_bytes()
    parts = []
    for i, start in enumerate(range(0, len(data), 1000), start=1):
        parts.append(tmp_path / f"model.zip.{i:03d}")
        parts[-1].write_bytes(data[start : start + 1000])
    target = assemble_split_zip(parts, tmp_path / "cache" / "mpnet")
    assert json.loads((target / "config.json").read_text()) == {"model_type": "mpnet"}
    assert (target / "vocab.txt").read_text() == "x" * 5000
    assert [p.name for p in target.parent.iterdir()] == ["mpnet"]  # no work folder left behind
    parts[0].unlink()  # a complete folder is reused, not rebuilt
    assert assemble_split_zip(parts, target) == target
    with pytest.raises(FileNotFoundError, match="cannot unpack the zip joined from"):
        assemble_split_zip(parts[1:], tmp_path / "cache" / "broken")


def _mpnet_installed() -> bool:
    from tweetpulse.training.base import mpnet_parts

    return mpnet_parts() is not None


@pytest.fixture
def mpnet_installed() -> None:
    if not _mpnet_installed():
        pytest.fail(
            "the best preset's base is not installed: `make test` installs it (make mpnet)", pytrace=False
        )


needs_mpnet = pytest.mark.usefixtures("mpnet_installed")


def test_a_saved_adapter_of_a_layer_cut_base_merges_into_the_model_that_was_trained(tmp_path: Path) -> None:
    """`tweetpulse export --adapter` of an `mpnet6`-style run (the base cut to its first layers): the
    merged model has the trained layers only and gives the trained model's logits."""
    import dataclasses

    import torch

    from tweetpulse.training.base import resolve_base
    from tweetpulse.training.data import Splits
    from tweetpulse.training.finetune import finetune, load_merged
    from tweetpulse.training.presets import PRESETS

    base = resolve_base(None)[0]
    preset = dataclasses.replace(PRESETS["fast"], layers=2, batch_size=8)
    rows = [("what a lovely day", "positive"), ("worst flight ever", "negative")] * 8
    result = finetune(base, Splits(rows, rows[:4]), preset, tmp_path, max_steps=3, progress=False)
    batch = result.tokenizer([t for t, _ in rows[:4]], padding=True, return_tensors="pt")
    with torch.no_grad():
        trained = result.model(**batch).logits
    for saved_before_config_json in (False, True):  # older adapters: the cut from their weights' layers
        if saved_before_config_json:
            (tmp_path / "adapter" / "config.json").unlink()
        merged, _ = load_merged(base, tmp_path / "adapter")
        assert merged.config.num_hidden_layers == len(merged.base_model.encoder.layer) == 2
        with torch.no_grad():
            assert torch.allclose(merged(**batch).logits, trained, atol=1e-5)


def test_a_preset_without_dropout_trains_with_no_random_masks_and_one_that_keeps_it_does_not() -> None:
    """`dropout=0` and `lora_dropout=0` reach every dropout of the model (the base's, the head's and the
    adapters'): in training mode, two forward passes agree. The base's own dropout stays otherwise."""
    import dataclasses

    import torch

    from tweetpulse.training.base import resolve_base
    from tweetpulse.training.finetune import load_base
    from tweetpulse.training.presets import PRESETS

    path = resolve_base(None)[0]
    preset = PRESETS["fast"]
    outputs = {}
    for dropout in (None, 0.0):
        torch.manual_seed(0)
        lora_dropout = 0.05 if dropout is None else 0.0
        model, tokenizer, _ = load_base(
            path, None, dataclasses.replace(preset, dropout=dropout, lora_dropout=lora_dropout)
        )
        model.train()
        batch = tokenizer(["what a lovely day", "worst flight ever"], padding=True, return_tensors="pt")
        with torch.no_grad():
            outputs[dropout] = [model(**batch).logits for _ in range(2)]
    assert not torch.equal(*outputs[None])  # the base's dropout, kept: each pass masks differently
    assert torch.equal(*outputs[0.0])


@needs_mpnet
def test_best_preset_fine_tunes_mpnet_from_its_offline_packages() -> None:
    from tweetpulse.training.base import resolve_base
    from tweetpulse.training.finetune import load_base
    from tweetpulse.training.presets import MPNET, PRESETS, TrainConfig

    assert TrainConfig(preset="best").base_model() == MPNET and PRESETS["best"].max_samples == 7040
    path, name = resolve_base(MPNET)
    assert name == MPNET and (Path(path) / "model.safetensors").is_file()
    model, tokenizer, targets = load_base(path, None, PRESETS["best"])
    assert targets == ["q", "k", "v", "o", "dense"]
    assert model.config.num_hidden_layers == 12 and model.config.hidden_size == 768
    batch = tokenizer(["what a lovely day", "worst flight ever"], padding=True, return_tensors="pt")
    assert model(**batch).logits.shape == (2, 2)


@needs_mpnet
def test_mpnet_export_serves_without_token_type_ids_and_pads_with_its_own_token(tmp_path: Path) -> None:
    """A small random MPNet with the real MPNet tokenizer: exported, published and served."""
    import torch
    from transformers import AutoTokenizer, MPNetConfig, MPNetForSequenceClassification

    from tweetpulse.processors.classifier import load_classifier
    from tweetpulse.training.base import resolve_base
    from tweetpulse.training.export import export_onnx
    from tweetpulse.training.presets import MPNET

    tokenizer = AutoTokenizer.from_pretrained(resolve_base(MPNET)[0])
    config = MPNetConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=2, id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )  # fmt: skip
    torch.manual_seed(0)
    model = MPNetForSequenceClassification(config).eval()
    folder = export_onnx(model, tokenizer, tmp_path / "export", tmp_path)
    registry = ModelRegistry(tmp_path / "registry")
    artifact = registry.load(registry.publish(folder, {"base_model": MPNET, "max_length": 64}))
    assert artifact.pad_token == "<pad>"
    texts = ["short", "a much longer tweet about a delayed flight and a lost bag"]
    with torch.no_grad():
        expected = torch.softmax(model(**tokenizer(texts, padding=True, return_tensors="pt")).logits, -1)
    classifier = load_classifier(artifact, provider="cpu", variant="fp32")
    assert "token_type_ids" not in classifier.input_names and classifier.pad_id == tokenizer.pad_token_id
    served = [
        [p.probabilities[label] for label in ("negative", "positive")] for p in classifier.classify(texts)
    ]
    assert np.allclose(served, expected.numpy(), atol=1e-4)
