"""The `tweetpulse` command: one subcommand per role.

Role modules register their own subcommands (``register(subparsers)``) and import their heavy
dependencies only when run, so ``--help`` stays fast and a processor host needs no torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from tweetpulse import localkafka
from tweetpulse.contracts import write_json_schemas
from tweetpulse.kafka import create_topics, describe_topics, list_topics
from tweetpulse.logs import configure_logging
from tweetpulse.settings import Settings, SettingsError, load_settings

# Subcommands of the roles, each a module with register(subparsers); added as the roles land.
ROLE_MODULES: list[str] = [
    "tweetpulse.dashboard.cli",
    "tweetpulse.producers.cli",
    "tweetpulse.processors.cli",
    "tweetpulse.retraining.cli",
    "tweetpulse.training.cli",
    "tweetpulse.models_cli",
    "tweetpulse.bench.cli",
]


def _kafka(args: argparse.Namespace, settings: Settings) -> int:
    return localkafka.run(args.action, port=args.port)


def _topics(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "create":
        for name, outcome in create_topics(settings).items():
            print(f"{name}: {outcome}")
    elif args.action == "list":
        print("\n".join(list_topics(settings)))
    else:
        names = args.names or list_topics(settings)
        for info in describe_topics(settings, names):
            print(json.dumps(info.__dict__, sort_keys=True))
    return 0


def _schemas(args: argparse.Namespace, settings: Settings) -> int:
    for path in write_json_schemas(args.directory):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tweetpulse",
        description="TweetPulse: real-time tweet sentiment on Apache Kafka.",
    )
    parser.add_argument("--config", help="TOML config file (or set TWEETPULSE_CONFIG); env vars override it")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    kafka = sub.add_parser(
        "kafka",
        help="run the local single-node Apache Kafka (KRaft) for development and tests",
        description="Fetch Apache Kafka 4.x from Maven Central on first use, then start, stop or inspect "
        "a single-node KRaft broker on 127.0.0.1. State lives under ~/.local/state/tweetpulse.",
    )
    kafka.add_argument("action", choices=["start", "stop", "status"])
    kafka.add_argument(
        "--port", type=int, default=None, help="broker port (default 9092 or TWEETPULSE_KAFKA_PORT)"
    )
    kafka.set_defaults(handler=_kafka)

    topics = sub.add_parser(
        "topics",
        help="create, list or describe the pipeline's Kafka topics",
        description="create: idempotently create every pipeline topic with the configured partitions and "
        "replication (the model topic is compacted). list: topic names. describe: partitions, "
        "replication and non-default config, one JSON object per topic.",
    )
    topics.add_argument("action", choices=["create", "list", "describe"])
    topics.add_argument("names", nargs="*", help="topics to describe (default: all)")
    topics.set_defaults(handler=_topics)

    schemas = sub.add_parser(
        "schemas",
        help="export the JSON Schemas of the message contracts",
        description="Write one JSON Schema file per message contract, for downstream consumers.",
    )
    schemas.add_argument("directory", nargs="?", default="schemas")
    schemas.set_defaults(handler=_schemas)

    for module_name in ROLE_MODULES:
        __import__(module_name, fromlist=["register"]).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config) if args.config else load_settings()
    except SettingsError as exc:
        print(f"tweetpulse: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format, settings.secrets())
    return int(args.handler(args, settings) or 0)


if __name__ == "__main__":
    sys.exit(main())
