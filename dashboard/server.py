"""The dashboard's web server (aiohttp): the page, a JSON snapshot, server-sent events, a health check.

The Kafka threads start with the app and stop with it (a cleanup context), so ``web.run_app`` and
tests manage one object. Every SSE client gets a full snapshot every push interval: it is a few tens
of kilobytes, and a client that missed some (reconnect, slow tab) is always whole again next time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
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


def _snapshot_json(state: DashboardState) -> str:
    return json.dumps(state.snapshot(), separators=(",", ":"))


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def snapshot(request: web.Request) -> web.Response:
    return web.Response(text=_snapshot_json(request.app[STATE]), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    """200 once the feed consumes from its start offsets; 503 while it waits for the topic."""
    ready = request.app[FEED].ready.is_set() and request.app[FEED].is_alive()
    body = {"status": "ok" if ready else "starting", "consuming": ready}
    return web.json_response(body, status=200 if ready else 503)


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: one `snapshot` event per push interval until the client or server goes."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    stopping = request.app[STOPPING]
    interval = request.app[SETTINGS].push_interval_s
    try:
        await response.write(f"retry: {SSE_RETRY_MS}\n\n".encode())
        while not stopping.is_set():
            payload = await asyncio.to_thread(_snapshot_json, request.app[STATE])
            await response.write(f"event: snapshot\ndata: {payload}\n\n".encode())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=interval)
    except ConnectionResetError:
        pass  # the browser went away
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
    state = DashboardState(options.window_minutes, options.latest_tweets, options.max_tags)
    app = web.Application()
    app[SETTINGS] = options
    app[STATE] = state
    app[FEED] = ResultFeed(settings, state, options.replay_minutes)
    app[LAG_POLLER] = LagPoller(settings, state, options.processor_group, options.lag_interval_s)
    app.cleanup_ctx.append(_kafka_threads)
    app.on_shutdown.append(_end_streams)
    app.router.add_get("/", index)
    app.router.add_get("/api/snapshot", snapshot)
    app.router.add_get("/events", events)
    app.router.add_get("/healthz", healthz)
    app.router.add_static("/static/", STATIC)
    return app
