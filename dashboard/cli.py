"""``tweetpulse dashboard`` (and ``python -m tweetpulse.dashboard``): serve the live dashboard."""

from __future__ import annotations

import argparse
import socket

from tweetpulse.cli import CommandError
from tweetpulse.options import add_settings_options
from tweetpulse.settings import DashboardSettings, Settings

DESCRIPTION = (
    "Serve a web page that tails the sentiment topic and shows, live over server-sent events: "
    "sentiment per minute overall and per tag, the latest classified tweets, throughput, end-to-end "
    "latency, the processors' consumer lag and the current model version. Also serves /api/snapshot "
    "(JSON), /events (the event stream, at most dashboard.max_clients at once) and /healthz. Only "
    "localhost, IP addresses and --allowed-host names are answered (other Host headers get 421, against "
    "DNS rebinding). Every dashboard setting is an option (below)."
)


def dashboard_options(settings: Settings) -> DashboardSettings:
    """settings.dashboard; the processor group defaults to the processors' app id, their consumer group."""
    group = settings.dashboard.processor_group or settings.processor.app_id
    return settings.dashboard.model_copy(update={"processor_group": group})


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
    # aiohttp's web app: 0.3 s to import, paid only when serving
    from aiohttp import web

    from tweetpulse.dashboard.server import create_app  # aiohttp, as above

    options = dashboard_options(settings)
    sock = listen(options.host, options.port)
    host = "localhost" if options.host in ("0.0.0.0", "::") else options.host
    print(f"TweetPulse dashboard: http://{host}:{options.port}/", flush=True)
    web.run_app(create_app(settings, options), sock=sock, print=None, access_log=None)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="serve the live sentiment dashboard (web page with live charts)",
        description=DESCRIPTION,
    )
    add_settings_options(parser, "dashboard")
    parser.set_defaults(handler=run)
