"""``tweetpulse dashboard`` (and ``python -m tweetpulse.dashboard``): serve the live dashboard."""

from __future__ import annotations

import argparse
import socket
from typing import Any

from pydantic import ValidationError

from tweetpulse.cli import CommandError
from tweetpulse.contracts import describe_validation_error
from tweetpulse.settings import DashboardSettings, Settings, SettingsError

DESCRIPTION = (
    "Serve a web page that tails the sentiment topic and shows, live over server-sent events: "
    "sentiment per minute overall and per tag, the latest classified tweets, throughput, end-to-end "
    "latency, the processors' consumer lag and the current model version. Also serves /api/snapshot "
    "(JSON), /events (the event stream, at most dashboard.max_clients at once) and /healthz. Only "
    "localhost, IP addresses and --allowed-host names are answered (other Host headers get 421, against "
    "DNS rebinding). Options override the dashboard.* settings (TWEETPULSE_DASHBOARD__*)."
)


def options_from_args(args: argparse.Namespace, settings: Settings) -> DashboardSettings:
    """settings.dashboard with the command-line options that were given, validated; the processor
    group defaults to the processors' app id, which Faust uses as its consumer group."""
    given = {
        "host": args.host,
        "port": args.port,
        "processor_group": args.group,
        "replay_minutes": args.replay_minutes,
        "window_minutes": args.window_minutes,
        "allowed_hosts": args.allowed_host,
    }
    merged: dict[str, Any] = settings.dashboard.model_dump() | {
        k: v for k, v in given.items() if v is not None
    }
    merged["processor_group"] = merged["processor_group"] or settings.processor.app_id
    try:
        return DashboardSettings.model_validate(merged)
    except ValidationError as exc:
        raise SettingsError(f"invalid dashboard option: {describe_validation_error(exc)}") from None


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port, bound before anything starts so a bad address or a port in
    use ends the command with one line (CommandError) instead of a server that half started."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        return socket.create_server((host, port), family=family, backlog=128)
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Serve until SIGINT/SIGTERM; SettingsError or CommandError for a bad option or address."""
    from aiohttp import web

    from tweetpulse.dashboard.server import create_app

    options = options_from_args(args, settings)
    sock = listen(options.host, options.port)
    host = "localhost" if options.host in ("0.0.0.0", "::") else options.host
    print(f"TweetPulse dashboard: http://{host}:{options.port}/", flush=True)
    web.run_app(create_app(settings, options), sock=sock, print=None, access_log=None)
    return 0


def add_options(parser: argparse.ArgumentParser) -> None:
    defaults = DashboardSettings()
    parser.add_argument("--host", help=f"address to listen on (default {defaults.host}; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, help=f"port to listen on (default {defaults.port})")
    parser.add_argument(
        "--group",
        help="consumer group of the processors, whose lag on the raw topic is shown "
        "(default: dashboard.processor_group, else processor.app_id, i.e. tweetpulse-processor)",
    )
    parser.add_argument(
        "--replay-minutes",
        type=int,
        metavar="N",
        help="start with the results of the last N minutes instead of only new ones (default 0)",
    )
    parser.add_argument(
        "--window-minutes",
        type=int,
        metavar="N",
        help=f"minutes of per-minute history kept and charted (default {defaults.window_minutes})",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        metavar="NAME",
        help="a host name the page is served under besides localhost and IP addresses, e.g. the name "
        "of a proxy in front of it; other Host headers get 421 (repeatable; replaces "
        "dashboard.allowed_hosts; '*' answers any)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="serve the live sentiment dashboard (web page with live charts)",
        description=DESCRIPTION,
    )
    add_options(parser)
    parser.set_defaults(handler=run)
