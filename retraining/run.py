"""One retraining run: gather data, fine-tune and export a candidate, gate it, publish or keep production.

Every decision (both scores, the reason, the versions, the data counts) is appended to
``REGISTRY_ROOT/retrain-decisions.jsonl`` (fsynced: a crash leaves at most a torn last line, which
:func:`decisions` skips) and logged.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tweetpulse.registry import ModelRegistry, announce_production, append_line
from tweetpulse.retraining.data import Gathered, gather
from tweetpulse.retraining.gate import (
    Baseline,
    GateRules,
    Score,
    candidate_artifact,
    decide,
    load_baseline,
    score_model,
    too_small,
)
from tweetpulse.settings import Settings
from tweetpulse.training.data import text_key
from tweetpulse.training.pipeline import train_and_export
from tweetpulse.training.presets import PRESETS, TrainConfig

log = logging.getLogger(__name__)

DECISIONS = "retrain-decisions.jsonl"


@dataclass
class Decision:
    """What a run decided and why; one line of the decisions log."""

    action: str  # promoted | kept-production | failed
    reason: str
    trigger: str
    candidate: dict[str, Any] | None
    production: dict[str, Any] | None
    production_version: str | None
    new_version: str | None
    tolerance: float
    data: dict[str, int] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)  # the gate set's size, rules and exclusions
    candidate_path: str | None = None  # the exported candidate, when retrain.work_dir keeps it
    started_at: str = ""
    seconds: float = 0.0

    @property
    def promoted(self) -> bool:
        return self.action == "promoted"


def retrain_once(
    settings: Settings,
    trigger: str = "manual",
    registry_root: Path | None = None,
    train_overrides: dict[str, Any] | None = None,
) -> Decision:
    """Run the whole loop once. `train_overrides` are extra TrainConfig fields (e.g. ``seed``)."""
    conf = settings.retrain
    registry = ModelRegistry(registry_root or settings.registry.root)
    started, clock = datetime.now(UTC), time.monotonic()
    work_dir = conf.work_dir or Path(tempfile.mkdtemp(prefix="tweetpulse-retrain-"))
    decision = Decision("failed", "", trigger, None, None, registry.production(), None, conf.tolerance)
    try:
        _gated_run(settings, registry, decision, work_dir, train_overrides or {})
    except Exception as exc:  # a scheduler must outlive a bad run; the decision says what happened
        decision.action = "failed"
        serving = registry.production()
        outcome = "production kept" if serving == decision.production_version else f"production is {serving}"
        decision.reason = f"{type(exc).__name__}: {exc}; {outcome}"
        log.exception("retraining failed", extra={"production": serving})
    finally:
        decision.started_at = started.isoformat()
        decision.seconds = round(time.monotonic() - clock, 1)
        record(registry, decision)
        if conf.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    return decision


def _gated_run(
    settings: Settings, registry: ModelRegistry, decision: Decision, work_dir: Path, overrides: dict[str, Any]
) -> None:
    """Gather, train, score and decide, filling in `decision`. Refusals that no candidate could
    overturn (an unusable production model, a gate set too small) are decided before training."""
    conf = settings.retrain
    rules = GateRules.from_settings(conf)
    baseline = load_baseline(registry, settings)
    if baseline.problem is not None:
        _keep(decision, baseline.problem)
        return
    gathered = gather(settings, baseline.exclude)
    decision.data = gathered.counts
    excluded = gathered.counts["val_excluded_as_production_training"]
    _note_gate(decision, baseline, gathered.val, rules, excluded)
    refusal = too_small(len(gathered.val), rules)
    if refusal is not None:
        _keep(decision, refusal.reason)
        return
    folder, fields = _train_candidate(
        settings,
        gathered,
        work_dir,
        {"registry_root": registry.root, **overrides},
        inherited_teacher(baseline),
    )
    if conf.work_dir is not None:
        decision.candidate_path = str(folder)
    if registry.production() != baseline.version:  # replaced while training: gate against the new one
        baseline = load_baseline(registry, settings)
        if baseline.problem is not None:
            _keep(decision, baseline.problem)
            return
        kept = [ex for ex in gathered.val if text_key(ex[0]) not in baseline.exclude]
        excluded += len(gathered.val) - len(kept)
        gathered.val = kept
        _note_gate(decision, baseline, gathered.val, rules, excluded)
    candidate = score_model(candidate_artifact(folder, fields), gathered.val, conf.gate_variant)
    production = _score_production(baseline, gathered.val, conf.gate_variant)
    verdict = decide(candidate, production, rules, baseline.version)
    decision.candidate = candidate.as_dict()
    decision.production = production.as_dict() if production else None
    decision.reason = verdict.reason + _lineage_caveat(baseline)
    decision.action = "kept-production"
    if verdict.promote:
        decision.new_version = _publish(settings, registry, folder, fields, decision)
        decision.action = "promoted"


def _keep(decision: Decision, reason: str) -> None:
    decision.action, decision.reason = "kept-production", f"{reason}; production kept"


def _note_gate(decision: Decision, baseline: Baseline, val: list, rules: GateRules, excluded: int) -> None:
    """What the gate compared on, for the decisions log and the new model's manifest."""
    decision.production_version = baseline.version
    decision.gate = {
        "examples": len(val),
        "min_examples": rules.min_examples,
        "min_accuracy": rules.min_accuracy,
        "production_training_set": baseline.lineage.source,
        "excluded_as_production_training": excluded,
    }


def _lineage_caveat(baseline: Baseline) -> str:
    if baseline.version is None or baseline.lineage.keys is not None:
        return ""
    return f"; production {baseline.version}'s training set is unknown, so the gate may include some of it"


def inherited_teacher(baseline: Baseline) -> str | None:
    """Production's teacher (a registry version), which a distilled candidate keeps: retraining
    then rescores only the texts its logits cache does not hold, and never retrains the teacher."""
    if baseline.artifact is None:
        return None
    distillation = baseline.artifact.manifest.get("distillation")
    teacher = distillation.get("teacher") if isinstance(distillation, dict) else None
    return teacher if isinstance(teacher, str) else None


def _train_candidate(
    settings: Settings,
    gathered: Gathered,
    work_dir: Path,
    overrides: dict[str, Any],
    teacher: str | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Fine-tune and export (verified by the training pipeline's parity gates), without publishing.
    A distilled preset learns from `teacher` (production's) when given, else from its own."""
    conf = settings.retrain
    train_file, val_file = gathered.write(work_dir / "data")
    config = TrainConfig(
        data=[str(train_file)],
        val=str(val_file),
        preset=conf.preset,
        teacher=teacher if PRESETS[conf.preset].teacher else None,
        max_steps=conf.max_steps,
        output=work_dir / "train",
        publish=False,
        promote=False,
        announce=False,
        progress=False,
        **overrides,
    )
    (work_dir / "train").mkdir(parents=True, exist_ok=True)
    # train_and_export records the training texts (training-keys.txt): the next gate excludes them.
    return train_and_export(config, settings, work_dir / "train")


def _publish(
    settings: Settings, registry: ModelRegistry, folder: Path, fields: dict[str, Any], decision: Decision
) -> str:
    """Publish, promote and announce the candidate; its manifest records the gate's evidence."""
    evidence = {
        "trigger": decision.trigger,
        "candidate": decision.candidate,
        "production": decision.production,
        "replaced": decision.production_version,
        "data": decision.data,
        "gate": decision.gate,
    }
    version = registry.publish(folder, {**fields, "retrain": evidence})
    registry.promote(version)
    announce_production(settings, version, registry_root=registry.root)
    return version


def _score_production(baseline: Baseline, val: list, variant: str) -> Score | None:
    """Production's score; None when there is none or it fails (the gate then keeps production)."""
    if baseline.artifact is None:
        return None
    try:
        return score_model(baseline.artifact, val, variant)
    except Exception as exc:  # any failure means it was not compared, whatever the library raised
        log.error(
            "production model could not be scored", extra={"version": baseline.version, "error": str(exc)}
        )
        return None


def record(registry: ModelRegistry, decision: Decision) -> None:
    """Append the decision to the registry's decisions log and log it with both scores."""
    registry.root.mkdir(parents=True, exist_ok=True)
    append_line(registry.root / DECISIONS, json.dumps(asdict(decision), sort_keys=True).encode())
    level = logging.ERROR if decision.action == "failed" else logging.INFO
    log.log(
        level,
        f"retrain decision: {decision.action}",
        extra={
            "action": decision.action,
            "reason": decision.reason,
            "candidate_accuracy": (decision.candidate or {}).get("accuracy"),
            "production_accuracy": (decision.production or {}).get("accuracy"),
            "production_version": decision.production_version,
            "new_version": decision.new_version,
        },
    )


def decisions(registry_root: Path) -> list[dict[str, Any]]:
    """Every recorded decision, oldest first. Unreadable lines (a write torn by a crash) are skipped
    with one warning."""
    path = Path(registry_root) / DECISIONS
    if not path.is_file():
        return []
    entries: list[dict[str, Any]] = []
    skipped: list[int] = []
    for number, line in enumerate(path.read_bytes().decode("utf-8", "replace").splitlines(), 1):
        entry = _decision_entry(line)
        if entry is not None:
            entries.append(entry)
        elif line.strip():
            skipped.append(number)
    if skipped:
        log.warning(
            "retrain decisions: skipped unreadable lines",
            extra={"path": str(path), "skipped": len(skipped), "first_line": skipped[0]},
        )
    return entries


def _decision_entry(line: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None
