"""`tweetpulse bench`: raw model vs Kafka pipeline vs naive loop, latency and scaling, in one run."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from tweetpulse.bench.report import format_table
from tweetpulse.bench.run import BenchOptions, needs_model, run_bench
from tweetpulse.bench.texts import DataError
from tweetpulse.children import Children
from tweetpulse.options import add_command_options, command_values
from tweetpulse.processors.demo import ensure_model
from tweetpulse.registry import ArtifactError, ModelRegistry
from tweetpulse.settings import Settings


class BenchCommand(BaseModel):
    """`tweetpulse bench`'s own options besides the measurements' (BenchOptions)."""

    train_if_missing: bool = Field(
        False,
        description="when the registry has no production model, train a quick seed model first (like the demo)",
    )
    quick: bool = Field(
        False,
        description="a short smoke run: 500 tweets, 200 raw texts, 30 naive messages, 5 s of latency, 3 s at "
        "low load, one round of 2000 tweets with the near-free model",
    )
    json_path: Path | None = Field(
        None, description="also write the whole report to this file", json_schema_extra={"cli": ["--json"]}
    )


def register(subparsers: Any) -> None:
    bench = subparsers.add_parser(
        "bench",
        help="benchmark the model, the Kafka pipeline and a naive loop side by side; print a table",
        description="On the configured broker and over the same texts: raw_tps (the served ONNX model "
        "in-process at its best batch size), pipeline_tps (N tweets through tweets.raw, real "
        "`tweetpulse process` workers and tweets.sentiment, timed from the first write to the last "
        "result, start-up excluded and reported apart), naive_tps (a confluent-kafka loop calling a "
        "transformers pipeline per message), their ratios, end-to-end latency percentiles at half the "
        "measured pipeline rate and the p99 at 80% of it, writes_per_tweet (Kafka records the "
        "worker writes per classified tweet over every topic it writes, at full load and at 100 "
        "tweets/s), hostile_mix_tps (valid tweets/s when each is followed by a hostile "
        "message: every kind the worker must dead-letter), 1 vs 2 single-threaded workers, and "
        "framework_tps (the pipeline with a near-free random 1-layer BERT the bench builds: the "
        "ceiling of the worker's own machinery), beside peer_tps (the plain loop: a confluent-kafka batch "
        "loop with the same parser, model and commits, as a subprocess) and framework_over_peer, under "
        "at_least_once and exactly_once (framework_eos_tps, peer_eos_tps, framework_over_peer_eos). "
        "Every run uses fresh topics and deletes them "
        "afterwards, and stops every worker it starts, also when a step fails or on Ctrl-C. Exit 2 "
        "when there is no model to measure, 130 when interrupted.",
    )
    add_command_options(bench, BenchCommand)
    add_command_options(bench, BenchOptions)
    bench.set_defaults(handler=_bench)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _bench(args: argparse.Namespace, settings: Settings) -> int:

    skip = frozenset(args.skip)
    if args.model is None and needs_model(skip) and not ModelRegistry(settings.registry.root).production():
        if not args.train_if_missing:
            print(
                f"tweetpulse bench: the registry {settings.registry.root} has no production model; "
                "train one with `tweetpulse train --promote` (or pass --model, or --train-if-missing)",
                file=sys.stderr,
            )
            return 2

        trainer = Children()  # stopped with the bench, however it ends
        try:
            trained = ensure_model(settings, trainer)
        finally:
            trainer.stop_all()
        if not trained:
            print("tweetpulse bench: training a seed model failed", file=sys.stderr)
            return 2
    logging.getLogger("tweetpulse.kafka").setLevel(logging.WARNING)  # dozens of throw-away topics
    quick = {
        "tweets": 500,
        "raw_texts": 200,
        "naive_tweets": 30,
        "latency_s": 5.0,
        "low_load_s": 3.0,
        "framework_tweets": 2000,
        "framework_rounds": 1,
    }
    opts = BenchOptions(**command_values(args, BenchOptions))
    if args.quick:
        opts = replace(opts, **quick)
    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the bench stops its workers and deletes
    # its topics on the way out instead of dying with them running.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = run_bench(settings, opts)
    except (ArtifactError, DataError) as exc:
        print(f"tweetpulse bench: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "tweetpulse bench: interrupted; its workers are stopped and its topics deleted", file=sys.stderr
        )
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    report["command"] = " ".join(["tweetpulse", *sys.argv[1:]])
    print(format_table(report))
    if args.json_path:
        args.json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"report written to {args.json_path}")
    return 0
