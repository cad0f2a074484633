"""Distillation: the loss, the teacher-logits cache, the transfer set and a real distilled student."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import TinyTrainingRun, require

from tweetpulse.registry import VARIANTS, ModelArtifact, ModelRegistry
from tweetpulse.settings import load_settings
from tweetpulse.training.data import Example, text_key
from tweetpulse.training.distill import Teacher, build_transfer_set, cached_logits
from tweetpulse.training.export import SPEED_MARGIN
from tweetpulse.training.lineage import TRAINING_KEYS

require("peft", "training needs the [train] extra")


@dataclass(frozen=True)
class CountingTeacher(Teacher):
    """A teacher whose logits are a function of the text, counting what it is asked to score."""

    asked: list[str] = field(default_factory=list)

    def logits(self, texts: list[str]) -> np.ndarray:
        self.asked.extend(texts)
        return np.array([[len(t) % 7, -(len(t) % 5)] for t in texts], dtype=np.float32)


def test_distillation_loss_is_cross_entropy_without_a_teacher_and_hinton_kd_with_one() -> None:
    import torch
    from torch.nn import functional

    from tweetpulse.training.finetune import IGNORE, distillation_loss

    logits = torch.tensor([[2.0, -1.0], [0.5, 0.3], [-1.0, 1.5]])
    labels = torch.tensor([0, 1, IGNORE])  # the third row is a teacher-only text
    teacher = torch.tensor([[3.0, 0.0], [0.0, 1.0], [-2.0, 2.0]])
    hard = functional.cross_entropy(logits[:2], labels[:2])
    assert torch.isclose(distillation_loss(logits, labels, None, 2.0, 0.7), hard)
    t = 2.0
    expected_soft = (
        sum(
            (
                functional.softmax(teacher[i] / t, -1)
                * (functional.log_softmax(teacher[i] / t, -1) - functional.log_softmax(logits[i] / t, -1))
            ).sum()
            for i in range(3)
        )
        / 3
    )
    expected = 0.7 * t * t * expected_soft + 0.3 * hard
    assert torch.isclose(distillation_loss(logits, labels, teacher, t, 0.7), expected, atol=1e-6)
    unlabeled_only = distillation_loss(logits[2:], labels[2:], teacher[2:], t, 0.7)
    assert torch.isfinite(unlabeled_only) and unlabeled_only > 0  # no labeled row: KD alone, no NaN


def test_teacher_logits_are_cached_per_teacher_and_text_and_each_text_is_scored_once(tmp_path: Path) -> None:
    teacher = CountingTeacher("v0007", "v0007-abc-int8")
    first = cached_logits(teacher, ["a tweet", "another tweet", "a tweet"], cache=tmp_path)
    assert sorted(teacher.asked) == ["a tweet", "another tweet"]  # a repeated text is scored once
    again = cached_logits(teacher, ["another tweet", "a third one", "a tweet"], cache=tmp_path)
    assert sorted(teacher.asked) == ["a third one", "a tweet", "another tweet"]  # only the new text scored
    np.testing.assert_array_equal(again[0], first[1])
    np.testing.assert_array_equal(again[2], first[0])
    other = CountingTeacher("v0008", "v0008-def-int8")  # another teacher never reads the first's logits
    cached_logits(other, ["a tweet"], cache=tmp_path)
    assert other.asked == ["a tweet"]


def test_the_logits_cache_is_replaced_durably_and_leaves_no_temporary_file(
    tmp_path: Path, fsynced: list[str]
) -> None:
    cached_logits(CountingTeacher("v0007", "v0007-abc-int8"), ["a tweet"], cache=tmp_path / "cache")
    cache = (tmp_path / "cache").resolve()
    *content, folder = map(Path, fsynced)
    assert content == [cache / content[0].name]  # the new bytes, under a temporary name beside it...
    assert content[0].name.startswith(".v0007-abc-int8.npz.") and folder == cache  # ...then its rename
    assert [p.name for p in cache.iterdir()] == ["v0007-abc-int8.npz"]


@pytest.mark.parametrize(
    "content", [b"", b"not a zip", b"PK\x03\x04 truncated"], ids=["empty", "garbage", "torn"]
)
def test_an_unreadable_logits_cache_is_rescored_and_rewritten(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    teacher = CountingTeacher("v0007", "v0007-abc-int8")
    (tmp_path / "v0007-abc-int8.npz").write_bytes(content)
    first = cached_logits(teacher, ["a tweet", "another tweet"], cache=tmp_path)
    assert sorted(teacher.asked) == ["a tweet", "another tweet"]
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "teacher logits cache unreadable; rescoring"
    ]
    again = cached_logits(teacher, ["a tweet", "another tweet"], cache=tmp_path)
    assert len(teacher.asked) == 2  # the rewritten cache is read back
    np.testing.assert_array_equal(again, first)


def test_transfer_set_never_holds_a_validation_or_training_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    train: list[Example] = [("I love this phone", "positive"), ("worst flight ever", "negative")]
    val: list[Example] = [("Delayed again, thanks a lot", "negative")]
    extra = tmp_path / "replay.jsonl"  # unlabeled, as replay files are
    rows = [
        "DELAYED again,   thanks a lot https://t.co/x",  # a validation text, re-cased, with a link
        "i love this phone",  # a training text
        "new text one",
        "new text two",
        "new text one",  # a duplicate
    ]
    extra.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    teacher = CountingTeacher("v0001", "v0001-x-int8")
    transfer = build_transfer_set(teacher, train, val, [str(extra)], load_settings())
    assert transfer.unlabeled == ["new text one", "new text two"]
    assert set(transfer.logits) == {"I love this phone", "worst flight ever", "new text one", "new text two"}


def test_distilled_student_learns_from_a_registry_teacher_and_records_it(
    tiny_training_run: TinyTrainingRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 3-layer student, every weight trained, taught by a published teacher, through the same
    export and gates as every model; the manifest names the teacher and the recipe."""
    from tweetpulse.training.pipeline import train_and_publish
    from tweetpulse.training.presets import TrainConfig

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    registry = ModelRegistry(shutil.copytree(tiny_training_run.registry.root, tmp_path / "registry"))
    teacher = registry.production()
    transfer = tmp_path / "transfer.jsonl"
    texts = [f"unlabeled tweet number {i} about my day" for i in range(40)]
    transfer.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    config = TrainConfig(
        data=["builtin"],
        preset="distilled-small",
        teacher=teacher,
        transfer=[str(transfer)],
        max_steps=6,
        max_samples=200,
        max_val_samples=64,
        int8_max_drop=1.0,  # six steps: the gates' plumbing is under test, not the accuracy
        registry_root=registry.root,
        progress=False,
    )
    version = train_and_publish(config, load_settings())
    artifact = registry.load(version)
    manifest = artifact.manifest
    assert manifest["preset"] == "distilled-small" and manifest["lora"] is None
    distillation = manifest["distillation"]
    assert distillation["teacher"] == teacher and distillation["transfer"] == [str(transfer)]
    assert (distillation["temperature"], distillation["kd_weight"]) == (2.0, 0.7)
    assert (distillation["transfer_labeled"], distillation["transfer_unlabeled"]) == (200, 40)
    recipe = manifest["training"]  # as run, not as the preset declares it
    assert (recipe["teacher"], recipe["transfer"], recipe["max_samples"]) == (teacher, [str(transfer)], 200)
    assert json.loads((artifact.path / "config.json").read_text())["num_hidden_layers"] == 3
    keys = set((artifact.path / TRAINING_KEYS).read_text().split())
    assert {text_key(t) for t in texts} <= keys  # the retrain gate never scores the transfer texts
    export, speed = manifest["export"], manifest["export"]["texts_per_second"]
    served = export["int8_served"]
    assert isinstance(served, bool) and speed["int8"] > 0
    # Either outcome is right on a busy host; what must hold is that the int8 graph is published, and
    # so served, exactly when it kept pace with fp32 (up to the recorded speeds' 0.1 rounding).
    assert (VARIANTS["int8"] in manifest["files"]) is served
    assert artifact.onnx_path("int8").name == VARIANTS["int8" if served else "fp32"]
    margin = speed["int8"] - speed["fp32"] * (1 - SPEED_MARGIN)
    assert abs(margin) < 0.1 or served is (margin > 0)
    assert list((tmp_path / "cache" / "tweetpulse" / "teacher-logits").glob("*.npz"))


def test_retraining_keeps_production_teacher(tmp_path: Path) -> None:
    from tweetpulse.retraining.gate import Baseline
    from tweetpulse.retraining.run import inherited_teacher

    distilled = ModelArtifact(tmp_path, {"distillation": {"teacher": "v0004"}})
    plain = ModelArtifact(tmp_path, {"distillation": None})
    assert inherited_teacher(Baseline("v0009", distilled)) == "v0004"
    assert inherited_teacher(Baseline("v0002", plain)) is None
    assert inherited_teacher(Baseline(None)) is None


def test_the_student_trains_on_the_teachers_logits_not_on_the_labels_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every training batch reaches the loss with its rows' teacher logits (the Trainer drops columns
    forward() does not take unless told not to: the students once learned from the labels alone)."""
    import dataclasses

    from tweetpulse.training import finetune as ft
    from tweetpulse.training.base import resolve_base
    from tweetpulse.training.data import Splits
    from tweetpulse.training.presets import PRESETS

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    seen: list[bool] = []
    loss = ft.distillation_loss

    def recording(logits, labels, teacher, temperature, kd_weight):
        seen.append(teacher is not None and teacher.shape == logits.shape)
        return loss(logits, labels, teacher, temperature, kd_weight)

    monkeypatch.setattr(ft, "distillation_loss", recording)
    train = [(f"what a day number {i}", "positive" if i % 2 else "negative") for i in range(16)]
    val = [("a fine day", "positive"), ("a bad day", "negative")]
    transfer = build_transfer_set(CountingTeacher("v0007", "v0007-abc-int8"), train, val, [], load_settings())
    preset = dataclasses.replace(PRESETS["distilled"], batch_size=8)
    model_dir = resolve_base(None)[0]
    ft.finetune(
        model_dir, Splits(train, val), preset, tmp_path / "work", 2, progress=False, transfer=transfer
    )
    training_calls = seen[:2]  # then the evaluation's, which have no teacher
    assert training_calls == [True, True], seen
