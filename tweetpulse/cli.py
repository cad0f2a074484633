"""The `tweetpulse` command: one subcommand per role.

Role modules register their own subcommands (``register(subparsers)``) and import their heavy
dependencies only when run, so ``--help`` stays fast and a processor host needs no torch.

A user error (a bad option, setting, config or file; an unreachable broker) ends with one line on
stderr, ``tweetpulse COMMAND: problem``, and exit status 2; an unexpected exception keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from confluent_kafka import KafkaException
from pydantic import BaseModel, Field

from tweetpulse import localkafka
from tweetpulse.contracts import ContractError, write_json_schemas
from tweetpulse.kafka import create_topics, describe_topics, list_topics
from tweetpulse.logs import configure_logging, redact
from tweetpulse.options import add_command_options, apply_settings
from tweetpulse.registry import ArtifactError
from tweetpulse.settings import Settings, SettingsError, load_settings
from tweetpulse.tweetfiles import TweetFileError

USER_ERROR_EXIT = 2  # as argparse's own usage errors
Handler = Callable[[argparse.Namespace, Settings], int | None]

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


class CommandError(Exception):
    """A command cannot do what was asked for a reason the user can fix; the message says which."""


class Parser(argparse.ArgumentParser):
    """Usage errors in one line (subcommand parsers inherit the class), pointing at --help."""

    def error(self, message: str) -> NoReturn:
        self.exit(USER_ERROR_EXIT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class KafkaOptions(BaseModel):
    """`tweetpulse kafka`'s own options."""

    port: int | None = Field(
        None, ge=1, le=65_535, description="broker port (none: 9092, or TWEETPULSE_KAFKA_PORT)"
    )


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
        try:
            infos = describe_topics(settings, names)
        except KeyError as exc:  # a named topic does not exist
            raise CommandError(exc.args[0]) from None
        for info in infos:
            print(json.dumps(info.__dict__, sort_keys=True))
    return 0


def _schemas(args: argparse.Namespace, settings: Settings) -> int:
    for path in write_json_schemas(args.directory):
        print(path)
    return 0


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """--config, which every entry point takes (the settings' TOML file)."""
    parser.add_argument(
        "--config",
        help="TOML config file (or set TWEETPULSE_CONFIG); environment variables and options override it",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="tweetpulse",
        description="TweetPulse: real-time tweet sentiment on Apache Kafka.",
    )
    add_config_option(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    kafka = sub.add_parser(
        "kafka",
        help="run the local single-node Apache Kafka (KRaft) for development and tests",
        description="Fetch Apache Kafka 4.x from Maven Central on first use, then start, stop or inspect "
        "a single-node KRaft broker on 127.0.0.1. State lives under ~/.local/state/tweetpulse.",
    )
    kafka.add_argument("action", choices=["start", "stop", "status"])
    add_command_options(kafka, KafkaOptions)
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


def user_error(exc: BaseException) -> str | None:
    """The one-line message for an error the user can fix, or None for anything else (a bug)."""
    if isinstance(exc, KafkaException):
        error = exc.args[0] if exc.args else None
        return f"Kafka: {error.str() if hasattr(error, 'str') else exc}"
    if isinstance(exc, OSError) and exc.filename is not None:  # a path the user gave
        return f"{exc.filename}: {(exc.strerror or str(exc)).lower()}"
    if isinstance(exc, _known_errors()):
        return str(exc) or type(exc).__name__
    return None


def _known_errors() -> tuple[type[BaseException], ...]:
    """Project and library error types that mean bad input; a role's own are known once it is loaded."""
    known: list[type[BaseException]] = [
        CommandError,
        SettingsError,
        ContractError,
        ArtifactError,
        TweetFileError,
    ]
    for module, name in (
        ("tweetpulse.training.data", "DataError"),
        ("tweetpulse.bench.texts", "DataError"),
        ("tweetpulse.producers.xapi", "MissingTokenError"),
        ("tweepy", "TweepyException"),  # the X API refused (401, 403, 429 without waiting)
        ("requests", "RequestException"),  # the X API (or its proxy) cannot be reached
    ):
        error = getattr(sys.modules.get(module), name, None)
        if isinstance(error, type) and issubclass(error, BaseException):
            known.append(error)
    return tuple(known)


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def run_command(prog: str, handler: Callable[[], int | None], secrets: Sequence[str] = ()) -> int:
    """``handler()``'s exit status; a user error becomes one line on stderr and USER_ERROR_EXIT."""
    try:
        return int(handler() or 0)
    except Exception as exc:
        message = user_error(exc)
        if message is None:
            raise
        print(f"{prog}: {redact(_one_line(message), secrets)}", file=sys.stderr)
        return USER_ERROR_EXIT


def run_cli(prog: str, args: argparse.Namespace, handler: Handler) -> int:
    """Load the settings (``args.config``, then the settings options given), set up logging and run
    ``handler(args, settings)``, every user error ending as one line on stderr."""
    try:
        settings = apply_settings(args, load_settings(args.config))
    except SettingsError as exc:
        print(f"{prog}: {_one_line(str(exc))}", file=sys.stderr)
        return USER_ERROR_EXIT
    configure_logging(settings.log_level, settings.log_format, settings.secrets())
    return run_command(prog, lambda: handler(args, settings), settings.secrets())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prog = " ".join(["tweetpulse", args.command, *([args.source] if getattr(args, "source", None) else [])])
    return run_cli(prog, args, args.handler)


if __name__ == "__main__":
    sys.exit(main())
