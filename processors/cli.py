"""`tweetpulse process` (a classification worker) and `tweetpulse watch` (the results on the console)."""

from __future__ import annotations

import argparse
from typing import Any

from tweetpulse.cli import number, with_overrides
from tweetpulse.settings import Settings


def register(subparsers: Any) -> None:
    process = subparsers.add_parser(
        "process",
        help="run a classification worker (Faust) on the raw-tweet topic",
        description="Consume tweets.raw in micro-batches, classify them with the registry's production "
        "ONNX model and produce one result per tweet to tweets.sentiment (bad input goes to tweets.dlq). "
        "Workers with the same --app-id share the partitions: start N of them (processes or hosts) to "
        "scale; a dead worker's partitions move to the others. A new model announced on "
        "tweetpulse.models is loaded in the background and served from the next batch on. "
        "Settings: TWEETPULSE_PROCESSOR__* (the options below override them).",
    )
    process.add_argument("--app-id", help="Faust app id = Kafka consumer group (processor.app_id)")
    process.add_argument("--web-port", type=int, help="port of this worker's web views (processor.web_port)")
    process.add_argument("--web-host", help="interface of the web views (processor.web_host)")
    process.add_argument("--batch-size", type=int, help="largest micro-batch (processor.batch_size)")
    process.add_argument(
        "--batch-wait", type=float, help="seconds to wait to fill a batch (processor.batch_wait_s)"
    )
    process.add_argument(
        "--inference-workers",
        type=int,
        help="model calls running at once, each on its own thread (processor.inference_workers)",
    )
    process.add_argument(
        "--threads",
        type=int,
        help="ONNX Runtime intra-op threads per model call, 0 = cores / inference workers "
        "(processor.ort_threads)",
    )
    process.add_argument(
        "--provider", choices=["auto", "cpu", "cuda"], help="execution provider (processor.provider)"
    )
    process.add_argument(
        "--variant", choices=["auto", "int8", "fp32"], help="model graph to serve (processor.model_variant)"
    )
    process.add_argument(
        "--guarantee",
        choices=["at_least_once", "exactly_once"],
        help="Faust processing guarantee (processor.processing_guarantee); exactly_once is experimental",
    )
    process.set_defaults(handler=_process)

    watch = subparsers.add_parser(
        "watch",
        help="print classified tweets and running counts per label",
        description="Follow tweets.sentiment (new results only, unless --from-beginning) and print each "
        "classified tweet, with a running count per label every --every results. Ctrl-C stops.",
    )
    watch.add_argument("--from-beginning", action="store_true", help="start at the oldest result")
    watch.add_argument(
        "--every",
        type=number(int, at_least=1),
        default=20,
        help="print the counts every N results (default 20)",
    )
    watch.add_argument(
        "--limit", type=number(int, at_least=1), default=None, help="stop after N results (default: never)"
    )
    watch.set_defaults(handler=_watch)

    demo = subparsers.add_parser(
        "demo",
        help="run the whole pipeline end to end on built-in defaults (make demo)",
        description="Start Kafka, create the topics, train a first model on the built-in data when the "
        "registry has no production model, start one worker and a synthetic stream, and show the "
        "classified tweets with running counts, while a better model trains in the background and "
        "replaces the first without downtime. Ctrl-C (also SIGTERM, or a closed output pipe) stops "
        "every child cleanly. "
        "Child logs go to ~/.local/state/tweetpulse/demo/.",
    )
    demo.add_argument(
        "--rate",
        type=number(float, above=0),
        default=50.0,
        help="synthetic tweets per second (default 50)",
    )
    demo.add_argument(
        "--no-improve",
        action="store_true",
        help="do not train a better model in the background (by default one trains on the built-in "
        "data with lower priority, is promoted and announced, and the worker hot-swaps to it)",
    )
    demo.set_defaults(handler=_demo)


OVERRIDES = {
    "app_id": "app_id",
    "web_port": "web_port",
    "web_host": "web_host",
    "batch_size": "batch_size",
    "batch_wait": "batch_wait_s",
    "inference_workers": "inference_workers",
    "threads": "ort_threads",
    "provider": "provider",
    "variant": "model_variant",
    "guarantee": "processing_guarantee",
}


def _process(args: argparse.Namespace, settings: Settings) -> int:
    from tweetpulse.processors.app import run_worker

    return run_worker(with_overrides(args, settings, "processor", OVERRIDES))


def _watch(args: argparse.Namespace, settings: Settings) -> int:
    from tweetpulse.processors.watch import watch

    watch(settings, from_beginning=args.from_beginning, summary_every=args.every, limit=args.limit)
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from tweetpulse.processors.demo import run_demo

    return run_demo(settings, rate=args.rate, improve=not args.no_improve)
