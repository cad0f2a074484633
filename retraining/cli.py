"""`tweetpulse retrain`: one gated retraining run, or a scheduler (interval and/or drift-triggered)."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from typing import Any

from pydantic import BaseModel, Field

from tweetpulse.cli import CommandError
from tweetpulse.options import add_command_options, add_settings_options
from tweetpulse.retraining.run import retrain_once
from tweetpulse.retraining.scheduler import Schedule, parse_duration, run_scheduler
from tweetpulse.settings import RetrainSettings, Settings, SettingsError
from tweetpulse.training.cli import check_sources  # torch-free
from tweetpulse.training.presets import PRESETS  # torch-free


class RetrainOptions(BaseModel):
    """`tweetpulse retrain`'s own options (the retrain settings are options too)."""

    every: str | None = Field(
        None, description="keep running and retrain every DURATION (90s, 30m, 6h, 1d); none: one run"
    )
    on_drift: bool = Field(
        False,
        description="keep running, watch tweets.sentiment for drift (events go to tweets.drift) and retrain "
        "early on any drift event, at most once per retrain.drift_cooldown_s",
    )
    at_start: bool = Field(False, description="with --every: run once right away, then every DURATION")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "retrain",
        help="retrain on new labels, gate against production, publish only if not worse",
        description="Gather the base training data plus the labeled topic (human feedback and weak labels; "
        "labels without a valid source or dated in the future are refused; deduplicated, newest first, "
        "capped, within a recency window, human and weak labels each capped at a share), fine-tune and "
        "export a candidate, score it and the production model on the same gate set (no text either was "
        "trained on), and publish + promote + announce it only if the gate set has at least "
        "--min-gate-examples tweets, its accuracy reaches --min-accuracy and it is at most --tolerance "
        "below production's; otherwise (also when production cannot be loaded or scored) production is "
        "kept. Every decision is appended with both scores to "
        "REGISTRY/retrain-decisions.jsonl. Without --every/--on-drift: one run (cron, Kubernetes "
        "CronJob) that prints the decision as JSON; exit status 0 when it promoted or kept production, "
        "1 when the run failed. Every retrain setting is an option (below).",
    )
    add_command_options(p, RetrainOptions)
    add_settings_options(p, "retrain")
    p.set_defaults(handler=_retrain)


def _retrain(args: argparse.Namespace, settings: Settings) -> int:
    """Bad options, settings or files are refused before any run starts (one line, exit 2)."""
    _check_inputs(settings.retrain)
    if args.every is None and not args.on_drift:
        return _one_run(settings)
    return _scheduled(args, settings)


def _check_inputs(conf: RetrainSettings) -> None:
    """What would only fail inside a run (logged as a failed decision): the preset, the gate file and
    the base data specs, from the options or the settings alike."""

    check_sources(list(conf.base_data))
    if conf.preset not in PRESETS:
        raise SettingsError(
            f"retrain.preset: unknown preset {conf.preset!r}: expected one of {', '.join(PRESETS)}"
        )
    if conf.val_file is not None:
        val = conf.val_file.expanduser()
        if not val.exists():
            raise CommandError(f"{conf.val_file}: no such validation file (--val, retrain.val_file)")
        if not val.is_file():
            raise CommandError(f"{conf.val_file}: a directory, not a file (--val, retrain.val_file)")


def _one_run(settings: Settings) -> int:

    decision = retrain_once(settings)
    print(json.dumps({"action": decision.action, "reason": decision.reason, "version": decision.new_version}))
    return 1 if decision.action == "failed" else 0  # keeping production is a normal outcome


def _scheduled(args: argparse.Namespace, settings: Settings) -> int:

    try:
        every = parse_duration(args.every) if args.every else None
    except ValueError as exc:  # invalid duration '5q': expected e.g. 90s, ...
        raise CommandError(str(exc)) from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    run_scheduler(settings, Schedule(every, args.on_drift, args.at_start), stop)
    return 0
