"""`tweetpulse bench`: raw model vs Kafka pipeline vs naive loop, latency and scaling, in one run."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from tweetpulse.settings import Settings

PARTS = ("raw", "pipeline", "writes", "hostile", "latency", "scaling", "naive", "framework", "peer")


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
    bench.add_argument(
        "--model",
        help="registry version or exported model folder to measure (default: the production version)",
    )
    bench.add_argument(
        "--train-if-missing",
        action="store_true",
        help="when the registry has no production model, train a quick seed model first (like the demo)",
    )
    bench.add_argument(
        "--data",
        help="labeled tweet file to take texts from, or 'builtin' (default: ../shared/data/tweets-val.jsonl "
        "when present, else the built-in tweets)",
    )
    bench.add_argument("--tweets", type=int, default=5000, help="tweets in each pipeline run (default 5000)")
    bench.add_argument(
        "--raw-texts", type=int, default=1000, help="texts per raw-model batching tried (default 1000)"
    )
    bench.add_argument(
        "--naive-tweets", type=int, default=300, help="messages the naive loop handles (default 300)"
    )
    bench.add_argument(
        "--latency-seconds", type=float, default=20.0, help="length of the paced latency run (default 20)"
    )
    bench.add_argument(
        "--framework-tweets",
        type=int,
        default=20000,
        help="tweets in each near-free model run, worker or plain loop (default 20000)",
    )
    bench.add_argument(
        "--framework-rounds",
        type=int,
        default=2,
        help="worker and plain-loop runs per guarantee, alternating; the best of each counts (default 2)",
    )
    bench.add_argument("--partitions", type=int, default=6, help="partitions of the bench topics (default 6)")
    bench.add_argument(
        "--provider",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="ONNX Runtime provider for the raw model and the workers (default auto: CUDA when a GPU is present)",
    )
    bench.add_argument(
        "--variant", choices=["auto", "int8", "fp32"], default="auto", help="model graph (default auto)"
    )
    bench.add_argument(
        "--naive-model",
        help="PyTorch folder of the same fine-tuned model for the naive loop (default: "
        "the offline MiniLM base with a 2-label head: same architecture and compute)",
    )
    bench.add_argument(
        "--skip", action="append", choices=PARTS, default=[], help="leave a part out (repeatable)"
    )
    bench.add_argument(
        "--quick",
        action="store_true",
        help="a short smoke run: 500 tweets, 200 raw texts, 30 naive messages, 5 s of latency, "
        "3 s at low load, one round of 2000 tweets with the near-free model",
    )
    bench.add_argument("--json", dest="json_path", type=Path, help="also write the whole report to this file")
    bench.add_argument(
        "--log-dir", type=Path, help="keep the workers' logs here (default: a temporary folder)"
    )
    bench.set_defaults(handler=_bench)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    import logging

    from tweetpulse.bench.report import format_table
    from tweetpulse.bench.run import BenchOptions, needs_model, run_bench
    from tweetpulse.bench.texts import DataError
    from tweetpulse.registry import ArtifactError, ModelRegistry

    skip = frozenset(args.skip)
    if args.model is None and needs_model(skip) and not ModelRegistry(settings.registry.root).production():
        if not args.train_if_missing:
            print(
                f"tweetpulse bench: the registry {settings.registry.root} has no production model; "
                "train one with `tweetpulse train --promote` (or pass --model, or --train-if-missing)",
                file=sys.stderr,
            )
            return 2
        from tweetpulse.processors.demo import Children, ensure_model

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
    opts = BenchOptions(
        model=args.model,
        data=args.data,
        tweets=args.tweets,
        raw_texts=args.raw_texts,
        naive_tweets=args.naive_tweets,
        latency_s=args.latency_seconds,
        partitions=args.partitions,
        provider=args.provider,
        variant=args.variant,
        naive_model=args.naive_model,
        framework_tweets=args.framework_tweets,
        framework_rounds=args.framework_rounds,
        skip=skip,
        log_dir=args.log_dir,
    )
    if args.quick:
        opts = BenchOptions(**{**vars(opts), **quick})
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
