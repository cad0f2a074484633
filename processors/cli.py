"""`tweetpulse process` (a classification worker) and `tweetpulse watch` (the results on the console)."""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import BaseModel, Field

from tweetpulse.options import add_command_options, add_settings_options, command_values
from tweetpulse.processors.demo import DemoOptions, run_demo
from tweetpulse.processors.watch import watch
from tweetpulse.settings import Settings


class WatchOptions(BaseModel):
    """`tweetpulse watch`'s own options."""

    from_beginning: bool = Field(False, description="start at the oldest result")
    every: int = Field(20, ge=1, description="print the counts every N results")
    limit: int | None = Field(None, ge=1, description="stop after N results (none: never)")


def register(subparsers: Any) -> None:
    process = subparsers.add_parser(
        "process",
        help="run a classification worker (Faust) on the raw-tweet topic",
        description="Consume tweets.raw in micro-batches, classify them with the registry's production "
        "ONNX model and produce one result per tweet to tweets.sentiment (bad input goes to tweets.dlq). "
        "Workers with the same --app-id share the partitions: start N of them (processes or hosts) to "
        "scale; a dead worker's partitions move to the others. A new model announced on "
        "tweetpulse.models is loaded in the background and served from the next batch on. "
        "Every processor setting is an option (below); each overrides its environment variable and "
        "config-file key.",
    )
    add_settings_options(process, "processor")
    process.set_defaults(handler=_process)

    watch = subparsers.add_parser(
        "watch",
        help="print classified tweets and running counts per label",
        description="Follow tweets.sentiment (new results only, unless --from-beginning) and print each "
        "classified tweet, with a running count per label every --every results. Ctrl-C stops.",
    )
    add_command_options(watch, WatchOptions)
    watch.set_defaults(handler=_watch)

    demo = subparsers.add_parser(
        "demo",
        help="run the whole pipeline end to end on built-in defaults (make demo)",
        description="Start Kafka, create the topics, train a first model on the built-in data when the "
        "registry has no production model, start one worker and a synthetic stream, and show the "
        "classified tweets with running counts, while the recipe retrains in the background and the new model "
        "replaces the first without downtime. Ctrl-C (also SIGTERM, or a closed output pipe) stops "
        "every child cleanly. "
        "Child logs go to ~/.local/state/tweetpulse/demo/.",
    )
    add_command_options(demo, DemoOptions)
    demo.set_defaults(handler=_demo)


def _process(args: argparse.Namespace, settings: Settings) -> int:
    # faust and onnxruntime: 0.6 s to import, paid only by a worker (`--help` stays fast)
    from tweetpulse.processors.app import run_worker

    return run_worker(settings)


def _watch(args: argparse.Namespace, settings: Settings) -> int:

    watch(settings, from_beginning=args.from_beginning, summary_every=args.every, limit=args.limit)
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:

    return run_demo(settings, DemoOptions(**command_values(args, DemoOptions)))
