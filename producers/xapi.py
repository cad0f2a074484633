"""X API v2 sources on tweepy: the filtered stream (StreamingClient) and a recent-search poller.

tweepy speaks to its fixed host ``https://api.twitter.com``; ``base_url`` (settings
``twitter.api_base_url``) routes that host elsewhere through a requests transport adapter mounted on
tweepy's own session, so tweepy's request, streaming, keep-alive and rate-limit code all run unchanged
against a proxy or the tests' loopback server.

The stream reconnects with X's recommended backoffs (linear for network errors and server closes,
exponential for HTTP errors, from one minute or until ``x-rate-limit-reset`` for 429). A reconnect may
replay tweets; :class:`SeenIds` drops those, so with the idempotent sink each tweet lands once. REST
calls (rules, search) wait out 429s the same way (:class:`RateLimitWaits`), never longer than
``rate_limit_wait_max_s``, in place of tweepy's own wait (unbounded, and an immediate recursive retry
when the reset header is missing).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import requests
import tweepy
from pydantic import ValidationError
from requests.adapters import HTTPAdapter

from tweetpulse.contracts import RawTweet, describe_validation_error
from tweetpulse.settings import TwitterSettings

log = logging.getLogger(__name__)

TWEEPY_HOST = "https://api.twitter.com"
TWEET_FIELDS = ["created_at", "author_id", "lang"]
EXPANSIONS = ["author_id"]
USER_FIELDS = ["username"]


class MissingTokenError(ValueError):
    """No bearer token is configured."""


def bearer_token(settings: TwitterSettings) -> str:
    if settings.bearer_token is None:
        raise MissingTokenError(
            "no X API bearer token: set TWEETPULSE_TWITTER__BEARER_TOKEN (or X_BEARER_TOKEN / TWITTER_BEARER_TOKEN)"
        )
    return settings.bearer_token.get_secret_value()


class RebaseAdapter(HTTPAdapter):
    """Sends requests addressed to tweepy's host to ``base_url`` instead."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url.rstrip("/")

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        assert request.url is not None
        request.url = self.base_url + request.url[len(TWEEPY_HOST) :]
        return super().send(request, *args, **kwargs)


def route(session: requests.Session, base_url: str | None) -> None:
    if base_url and base_url.rstrip("/") != TWEEPY_HOST:
        session.mount(TWEEPY_HOST + "/", RebaseAdapter(base_url))


def reset_at(value: str | None) -> float | None:
    """``x-rate-limit-reset`` (epoch seconds) as a time; None when absent or not a plain number."""
    try:
        return float(int(value)) if value is not None else None
    except (ValueError, OverflowError):  # garbage, or more digits than int() or a float takes
        return None


def drop_bad_reset(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """A response hook: tweepy int()s ``x-rate-limit-reset``, so a malformed one would escape as a
    ValueError; without it the 429 takes the no-header backoff."""
    if "x-rate-limit-reset" in response.headers and reset_at(response.headers["x-rate-limit-reset"]) is None:
        del response.headers["x-rate-limit-reset"]


class SeenIds:
    """The ``size`` most recently seen tweet ids (an LRU window): memory is bounded by ``size`` and
    every add is O(1) (a hash lookup, a move or an eviction from the ordered end)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, tweet_id: str) -> bool:
        """Remember ``tweet_id``; False when it was already in the window."""
        if tweet_id in self._ids:
            self._ids.move_to_end(tweet_id)
            return False
        self._ids[tweet_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True


@dataclass
class XCounts:
    received: int = 0
    emitted: int = 0
    duplicates: int = 0
    malformed: int = 0
    reconnects: int = 0
    rate_limited: int = 0


class TweetEmitter:
    """Turns API tweets into RawTweets, drops replays, and hands each new one to ``emit``."""

    def __init__(self, emit: Callable[[RawTweet], None], dedupe_window: int) -> None:
        self.emit = emit
        self.seen = SeenIds(dedupe_window)
        self.counts = XCounts()

    def __call__(self, tweet: tweepy.Tweet, tags: list[str]) -> None:
        self.counts.received += 1
        tweet_id = str(tweet.id)
        if not self.seen.add(tweet_id):
            self.counts.duplicates += 1
            log.info("duplicate tweet suppressed", extra={"tweet_id": tweet_id})
            return
        try:
            raw = RawTweet(
                id=tweet_id,
                text=tweet.text,
                created_at=tweet.created_at,
                author_id=str(tweet.author_id) if tweet.author_id is not None else None,
                lang=tweet.lang,
                source="twitter",
                rule_tags=tags,
            )
        except ValidationError as exc:
            self.counts.malformed += 1
            log.warning(
                "skipped malformed tweet",
                extra={"tweet_id": tweet_id, "reason": describe_validation_error(exc)},
            )
            return
        self.emit(raw)
        self.counts.emitted += 1


# --- filtered stream rules -------------------------------------------------------------------------


def parse_rule(text: str) -> tweepy.StreamRule:
    """``VALUE:TAG`` (the tag is what follows the last colon); without a tag the value is the tag."""
    value, sep, tag = text.rpartition(":")
    if not sep or not value.strip():
        value, tag = text, ""
    value, tag = value.strip(), tag.strip()
    if not value:
        raise ValueError(f"empty stream rule {text!r}")
    return tweepy.StreamRule(value=value, tag=tag or value)


def rules_client(settings: TwitterSettings) -> RulesClient:
    return RulesClient(settings)


def list_rules(client: tweepy.StreamingClient) -> list[tweepy.StreamRule]:
    return list(client.get_rules().data or [])


def delete_rules(client: tweepy.StreamingClient, ids: Iterable[str]) -> int:
    ids = list(ids)
    if not ids:
        return 0
    response = client.delete_rules(ids)
    _raise_rule_errors(response)
    return int((response.meta or {}).get("summary", {}).get("deleted", len(ids)))


def sync_rules(
    client: tweepy.StreamingClient, wanted: list[tweepy.StreamRule], mode: str = "add"
) -> list[tweepy.StreamRule]:
    """Make the stream's rules hold ``wanted``; ``replace`` also deletes every other rule. Returns the
    active rules."""
    if mode not in {"add", "replace"}:
        raise ValueError(f"unknown rules mode {mode!r}: expected add or replace")
    current = list_rules(client)
    present = {(r.value, r.tag) for r in current}
    wanted_keys = {(r.value, r.tag) for r in wanted}
    if mode == "replace":
        delete_rules(client, [r.id for r in current if (r.value, r.tag) not in wanted_keys])
    missing = [r for r in wanted if (r.value, r.tag) not in present]
    if missing:
        _raise_rule_errors(client.add_rules(missing))
    active = list_rules(client)
    log.info("stream rules", extra={"rules": [f"{r.value}:{r.tag}" for r in active]})
    return active


def _raise_rule_errors(response: Any) -> None:
    errors = [e for e in (response.errors or []) if e.get("title") != "DuplicateRule"]
    if errors:
        raise ValueError("X API refused the rules: " + "; ".join(str(e.get("details") or e) for e in errors))


# --- filtered stream -------------------------------------------------------------------------------


class Backoff:
    """X's reconnect guide: linear for network errors, exponential for HTTP errors, 429 waits longer."""

    def __init__(self, settings: TwitterSettings) -> None:
        self.s = settings
        self.reset()

    def reset(self) -> None:
        self.network = 0.0
        self.http = 0.0

    def after_network_error(self) -> float:
        self.network = min(self.network + self.s.network_backoff_step_s, self.s.network_backoff_max_s)
        return self.network

    def after_http_error(self, status: int, reset_at: float | None) -> float:
        start = self.s.rate_limit_backoff_start_s if status in (420, 429) else self.s.http_backoff_start_s
        self.http = min(max(self.http * 2, start), self.s.http_backoff_max_s)
        if status not in (420, 429):
            return self.http
        if reset_at is not None:  # the server says when the window reopens
            return min(max(reset_at - time.time(), 0.0) + 0.5, self.s.rate_limit_wait_max_s)
        return min(self.http, self.s.rate_limit_wait_max_s)  # no word from the server: back off, capped


class RateLimitWaits:
    """Retries a tweepy REST call after each 429: until ``x-rate-limit-reset`` but at most
    ``rate_limit_wait_max_s``, or without that header per :class:`Backoff` (exponential, bounded). A
    loop, not tweepy's recursion; ``stopped`` cuts a wait short and the 429 is raised."""

    def __init__(
        self, settings: TwitterSettings, stopped: threading.Event | None = None, counts: XCounts | None = None
    ) -> None:
        self.settings = settings
        self.stopped = stopped if stopped is not None else threading.Event()
        self.counts = counts

    def call(self, send: Callable[[], Any], path: str) -> Any:
        backoff = Backoff(self.settings)
        while True:
            try:
                return send()
            except tweepy.TooManyRequests as exc:
                wait = backoff.after_http_error(429, reset_at(exc.response.headers.get("x-rate-limit-reset")))
                if self.counts is not None:
                    self.counts.rate_limited += 1
                log.warning("X API rate limit", extra={"path": path, "wait_s": round(wait, 2)})
                if self.stopped.wait(wait):
                    raise


class _WaitsOut429:
    """Mixed in before a tweepy client (built with ``wait_on_rate_limit=False``, so each 429 raises
    TooManyRequests): its REST calls go through ``self.waits``."""

    waits: RateLimitWaits

    def request(
        self, method: str, path: str, params: Any = None, json: Any = None, user_auth: bool = False
    ) -> Any:
        send = functools.partial(super().request, method, path, params, json, user_auth)
        return self.waits.call(send, path)


def _prepare(client: tweepy.Client | tweepy.StreamingClient, settings: TwitterSettings) -> None:
    route(client.session, settings.api_base_url)
    client.session.hooks["response"].append(drop_bad_reset)


class RulesClient(_WaitsOut429, tweepy.StreamingClient):
    """The filtered stream's rules endpoints, with bounded 429 waits."""

    def __init__(self, settings: TwitterSettings, stopped: threading.Event | None = None) -> None:
        super().__init__(bearer_token(settings), wait_on_rate_limit=False)
        _prepare(self, settings)
        self.waits = RateLimitWaits(settings, stopped)


class SearchClient(_WaitsOut429, tweepy.Client):
    """The REST client for recent search, with bounded 429 waits."""

    def __init__(self, settings: TwitterSettings, waits: RateLimitWaits) -> None:
        super().__init__(bearer_token(settings), wait_on_rate_limit=False)
        _prepare(self, settings)
        self.waits = waits


class FilteredStream(RulesClient):
    """The v2 filtered stream, reconnecting per :class:`Backoff` until :meth:`stop`.

    tweepy's own retry loop is cut short (every error disconnects) so the reconnect policy, the 429
    reset header and the stop signal are handled in one place: :meth:`run`.
    """

    def __init__(self, settings: TwitterSettings, emitter: TweetEmitter) -> None:
        self._stopped = threading.Event()
        super().__init__(settings, self._stopped)
        self.session.hooks["response"].append(self._remember_rate_limit)
        self.settings = settings
        self.emitter = emitter
        self.backoff = Backoff(settings)
        self._error: tuple[str, int] | None = None
        self._reset_at: float | None = None
        self._failure: BaseException | None = None

    def run(self) -> None:
        """Stream until :meth:`stop` (or an error in our own code, which is raised)."""
        while not self._stopped.is_set():
            self._error = None
            self.filter(tweet_fields=TWEET_FIELDS, expansions=EXPANSIONS, user_fields=USER_FIELDS)
            if self._failure is not None:
                raise self._failure
            if self._stopped.is_set():
                break
            wait = self._next_wait()
            self.emitter.counts.reconnects += 1
            log.warning("stream reconnecting", extra={"after": self._error, "wait_s": round(wait, 2)})
            self._stopped.wait(wait)

    def stop(self) -> None:
        """Ends :meth:`run` at the next line or keep-alive the server sends."""
        self._stopped.set()
        self.disconnect()

    def _next_wait(self) -> float:
        kind, status = self._error or ("closed", 0)
        if kind == "http":
            if status in (420, 429):
                self.emitter.counts.rate_limited += 1
            return self.backoff.after_http_error(status, self._reset_at)
        return self.backoff.after_network_error()

    # tweepy hooks --------------------------------------------------------------------------------

    def _connect(self, method: str, endpoint: str, **kwargs: Any) -> None:
        kwargs.setdefault("timeout", self.settings.keepalive_timeout_s)  # a silent stream is a dead one
        super()._connect(method, endpoint, **kwargs)

    def _remember_rate_limit(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        reset = reset_at(response.headers.get("x-rate-limit-reset"))
        self._reset_at = reset if response.status_code == 429 else None

    def on_connect(self) -> None:
        self.backoff.reset()
        log.info("stream connected")

    def on_response(self, response: Any) -> None:
        if response.data is not None:
            self.emitter(response.data, [r.tag for r in response.matching_rules if r.tag])

    def on_errors(self, errors: list[dict[str, Any]]) -> None:
        titles = [e.get("title") for e in errors]
        log.warning("stream error message", extra={"errors": titles})

    def on_closed(self, response: requests.Response) -> None:
        self._error = ("closed", 0)
        self.disconnect()

    def on_connection_error(self) -> None:
        self._error = ("network", 0)
        self.disconnect()

    def on_request_error(self, status_code: int) -> None:
        self._error = ("http", status_code)
        log.warning("stream HTTP error", extra={"status": status_code})
        self.disconnect()

    def on_exception(self, exception: Exception) -> None:
        self._failure = exception
        self._stopped.set()


# --- recent search polling ------------------------------------------------------------------------


class RecentSearch:
    """Polls ``search_recent_tweets`` for new tweets (``since_id`` paging); 429s per RateLimitWaits."""

    def __init__(
        self, settings: TwitterSettings, emitter: TweetEmitter, query: str, tag: str | None = None
    ) -> None:
        self._stopped = threading.Event()
        self.client = SearchClient(settings, RateLimitWaits(settings, self._stopped, emitter.counts))
        self.settings = settings
        self.emitter = emitter
        self.query = query
        self.tags = [tag or query]
        self.since_id: str | None = None

    def poll_once(self) -> int:
        """Fetch the pages newer than the last poll, ``search_max_pages`` at most (a server that keeps
        sending ``next_token`` cannot hold a poll forever); returns how many tweets came back."""
        seen, next_token, newest = 0, None, None
        for _ in range(self.settings.search_max_pages):
            meta, count = self._page(next_token)
            newest = newest or meta.get("newest_id")
            seen += count
            next_token = meta.get("next_token")
            if not next_token:
                break
        else:  # older matches of this window are left behind: since_id moves past them
            log.warning("search paging capped", extra={"pages": self.settings.search_max_pages})
        if newest:
            self.since_id = str(newest)
        return seen

    def _page(self, next_token: str | None) -> tuple[dict[str, Any], int]:
        """One page: its meta, and how many tweets it held (each handed to the emitter)."""
        page = self.client.search_recent_tweets(
            self.query,
            since_id=self.since_id,
            next_token=next_token,
            max_results=self.settings.search_max_results,
            tweet_fields=TWEET_FIELDS,
            expansions=EXPANSIONS,
            user_fields=USER_FIELDS,
        )
        tweets = page.data or []
        for tweet in tweets:
            self.emitter(tweet, self.tags)
        return page.meta or {}, len(tweets)

    def run(self, interval: float | None = None) -> None:
        interval = self.settings.search_interval_s if interval is None else interval
        while not self._stopped.is_set():
            try:
                count = self.poll_once()
            except tweepy.TooManyRequests:
                if self._stopped.is_set():  # stop() cut a rate-limit wait short
                    return
                raise
            log.info("search polled", extra={"tweets": count, "since_id": self.since_id})
            self._stopped.wait(interval)

    def stop(self) -> None:
        self._stopped.set()
