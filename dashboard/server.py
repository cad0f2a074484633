"""The dashboard's web server (aiohttp): the page, a JSON snapshot, server-sent events, a health check.

The Kafka threads start with the app and stop with it (a cleanup context), so ``web.run_app`` and
tests manage one object. Every SSE client gets a full snapshot every push interval: it is a few tens
of kilobytes, and a client that missed some (reconnect, slow tab) is always whole again next time.

Bounded for any number of visitors: a snapshot is serialized at most once per push interval and shared
by every client (:class:`SnapshotHub`), at most ``max_clients`` event streams are open (more get 503),
and a client that cannot take a snapshot within ``SSE_WRITE_TIMEOUT_S`` is dropped. Requests whose Host
header is a name other than loopback's or ``allowed_hosts`` get 421, so a page on another site cannot
read the dashboard through DNS rebinding (an IP-address Host cannot be rebound, so it is answered).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from tweetpulse.dashboard.feed import LagPoller, ResultFeed
from tweetpulse.dashboard.state import DashboardState
from tweetpulse.settings import DashboardSettings, Settings

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
STATE = web.AppKey("state", DashboardState)
FEED = web.AppKey("feed", ResultFeed)
LAG_POLLER = web.AppKey("lag_poller", LagPoller)
SETTINGS = web.AppKey("dashboard_settings", DashboardSettings)
STOPPING = web.AppKey("stopping", asyncio.Event)
SSE_RETRY_MS = 2000  # how soon a browser reconnects after the stream drops
SSE_WRITE_TIMEOUT_S = 30.0  # a client this far behind (stalled tab, dead peer) gives up its slot
BUSY_RETRY_AFTER_S = 10
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
UNCHECKED_PATHS = frozenset({"/healthz"})  # probes send the pod or service name; it reveals nothing


class SnapshotHub:
    """The state's snapshot, serialized at most once per push interval and shared by every client,
    and the count of open event streams."""

    def __init__(self, state: DashboardState, interval_s: float) -> None:
        self.state = state
        self.interval_s = interval_s
        self.clients = 0
        self._json = b""
        self._event = b""
        self._at = float("-inf")
        self._lock = asyncio.Lock()

    async def _refresh(self) -> None:
        async with self._lock:  # concurrent callers wait for one computation and share it
            now = asyncio.get_running_loop().time()
            if now - self._at < self.interval_s:
                return
            self._json = (await asyncio.to_thread(self._serialize)).encode()
            self._event = b"event: snapshot\ndata: " + self._json + b"\n\n"
            self._at = now

    def _serialize(self) -> str:
        return json.dumps(self.state.snapshot(), separators=(",", ":"))

    async def json(self) -> bytes:
        """The snapshot as JSON, at most one push interval old."""
        await self._refresh()
        return self._json

    async def event(self) -> bytes:
        """The snapshot as one server-sent event, at most one push interval old."""
        await self._refresh()
        return self._event


HUB = web.AppKey("snapshot_hub", SnapshotHub)


def request_host(header: str) -> str:
    """The host name of a Host header: lower case, without port, IPv6 brackets or a trailing dot."""
    host = header.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def host_allowed(header: str | None, allowed: frozenset[str] | None) -> bool:
    """Whether to answer a request with this Host header; ``allowed`` None answers every host."""
    if header is None or allowed is None:
        return True  # no Host header: not a browser, so not a rebinding page
    host = request_host(header)
    if host in allowed:
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True  # an address literal never resolves through the attacker's DNS


def allowed_host_names(options: DashboardSettings) -> frozenset[str] | None:
    """The host names the dashboard answers to (None: any, with ``allowed_hosts = ["*"]``)."""
    if "*" in options.allowed_hosts:
        return None
    return LOOPBACK_NAMES | {request_host(options.host)} | frozenset(options.allowed_hosts)


def host_check(allowed: frozenset[str] | None) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        host = request.headers.get("Host")
        if request.path in UNCHECKED_PATHS or host_allowed(host, allowed):
            return await handler(request)
        return web.Response(
            status=421,
            text=f"421: this dashboard does not answer to Host {request_host(host or '')!r}; add the name to "
            "dashboard.allowed_hosts (TWEETPULSE_DASHBOARD__ALLOWED_HOSTS, or --allowed-host)\n",
        )

    return middleware


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def snapshot(request: web.Request) -> web.Response:
    return web.Response(body=await request.app[HUB].json(), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    """200 while the feed consumes from its offsets; 503 while it waits for the topic or, after its
    Kafka code raised, for its restart (``restarts`` counts those, ``last_error`` says the latest)."""
    feed = request.app[FEED]
    ready = feed.ready.is_set() and feed.is_alive()
    status = "ok" if ready else "restarting" if feed.restarts else "starting"
    body = {"status": status, "consuming": ready, "restarts": feed.restarts, "last_error": feed.last_error}
    return web.json_response(body, status=200 if ready else 503)


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one `snapshot` event per push interval until the client or server goes;
    503 while ``max_clients`` streams are open."""
    hub, limit = request.app[HUB], request.app[SETTINGS].max_clients
    if hub.clients >= limit:
        return web.Response(
            status=503,
            text=f"503: the dashboard already serves its maximum of {limit} live clients "
            "(dashboard.max_clients); try again later\n",
            headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
        )
    hub.clients += 1
    try:
        return await _stream(request, hub)
    finally:
        hub.clients -= 1


async def _stream(request: web.Request, hub: SnapshotHub) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    stopping = request.app[STOPPING]
    try:
        await response.write(f"retry: {SSE_RETRY_MS}\n\n".encode())
        while not stopping.is_set():
            await asyncio.wait_for(response.write(await hub.event()), SSE_WRITE_TIMEOUT_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=hub.interval_s)
    except ConnectionResetError:
        pass  # the browser went away
    except TimeoutError:  # it stopped reading: free the connection instead of queueing for it
        log.info("dropped a dashboard client that stopped reading", extra={"peer": request.remote})
        if request.transport is not None:
            request.transport.abort()
    return response


async def _kafka_threads(app: web.Application) -> AsyncIterator[None]:
    feed, poller = app[FEED], app[LAG_POLLER]
    app[STOPPING] = asyncio.Event()
    feed.start()
    poller.start()
    yield
    feed.stop()
    poller.stop()
    await asyncio.to_thread(feed.join, 10)
    await asyncio.to_thread(poller.join, 10)


async def _end_streams(app: web.Application) -> None:
    app[STOPPING].set()


def create_app(settings: Settings, options: DashboardSettings | None = None) -> web.Application:
    """The dashboard app for `settings`; `options` override ``settings.dashboard``."""
    options = options or settings.dashboard
    state = DashboardState(
        options.window_minutes,
        options.latest_tweets,
        options.max_tags,
        training_status_file=options.training_status_file,
    )
    app = web.Application(middlewares=[host_check(allowed_host_names(options))])
    app[SETTINGS] = options
    app[STATE] = state
    app[HUB] = SnapshotHub(state, options.push_interval_s)
    app[FEED] = ResultFeed(settings, state, options.replay_minutes)
    group = options.processor_group or settings.processor.app_id  # Faust's group is its app id
    app[LAG_POLLER] = LagPoller(settings, state, group, options.lag_interval_s)
    app.cleanup_ctx.append(_kafka_threads)
    app.on_shutdown.append(_end_streams)
    app.router.add_get("/", index)
    app.router.add_get("/api/snapshot", snapshot)
    app.router.add_get("/events", events)
    app.router.add_get("/healthz", healthz)
    app.router.add_static("/static/", STATIC)
    return app
