"""The X API sources, with tweepy pointed at the loopback X API server (tests/xapi_server.py)."""

from __future__ import annotations

import inspect
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from xapi_server import Connection, XApiServer, make_tweet

from tweetpulse.contracts import RawTweet
from tweetpulse.producers import xapi
from tweetpulse.producers.sink import KafkaSink
from tweetpulse.settings import Settings, TwitterSettings

TOKEN = "AAAA-test-bearer-token-0123456789"


@pytest.fixture
def server() -> Iterator[XApiServer]:
    with XApiServer(TOKEN) as srv:
        yield srv


def fast_twitter(server: XApiServer, **extra: object) -> TwitterSettings:
    """Real backoff logic with small waits, so the scenarios run in seconds."""
    return TwitterSettings(
        bearer_token=TOKEN,
        api_base_url=server.url,
        keepalive_timeout_s=1.0,
        network_backoff_step_s=0.05,
        http_backoff_start_s=0.1,
        rate_limit_backoff_start_s=0.1,
        **extra,
    )


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def in_thread(fn: Callable[[], object], timeout: float = 20.0) -> object:
    """``fn()``, in a daemon thread: a wait that would never end fails the test instead of hanging it."""
    results: list[object] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            results.append(fn())
        except BaseException as exc:
            errors.append(exc)

    runner = threading.Thread(target=target, daemon=True)
    runner.start()
    runner.join(timeout)
    assert not runner.is_alive(), f"still running after {timeout} s"
    if errors:
        raise errors[0]
    return results[0]


def counting_emitter() -> xapi.TweetEmitter:
    return xapi.TweetEmitter(lambda tweet: None, 1_000)


def test_rules_are_added_replaced_listed_and_deleted(server: XApiServer) -> None:
    client = xapi.rules_client(fast_twitter(server))
    xapi.sync_rules(client, [xapi.parse_rule("cats:pets"), xapi.parse_rule("stale")], "add")
    xapi.sync_rules(client, [xapi.parse_rule("cats:pets")], "add")  # already there: no duplicate
    assert sorted((r.value, r.tag) for r in xapi.list_rules(client)) == [("cats", "pets"), ("stale", "stale")]

    active = xapi.sync_rules(
        client, [xapi.parse_rule("cats:pets"), xapi.parse_rule("dogs lang:en:dogs")], "replace"
    )
    assert sorted((r.value, r.tag) for r in active) == [("cats", "pets"), ("dogs lang:en", "dogs")]

    assert xapi.delete_rules(client, [r.id for r in active]) == 2
    assert xapi.list_rules(client) == []


def test_parse_rule_takes_the_tag_after_the_last_colon() -> None:
    assert xapi.parse_rule("from:jack lang:en:jack") == ("from:jack lang:en", "jack", None)
    assert xapi.parse_rule("kittens") == ("kittens", "kittens", None)
    with pytest.raises(ValueError, match="empty"):
        xapi.parse_rule("  ")


def test_stream_puts_every_tweet_in_kafka_once_with_its_rule_tags_through_disconnects_and_429(
    server: XApiServer, settings: Settings, consume_all
) -> None:
    tweets = [make_tweet(n) for n in range(9)]
    tweets[4] = make_tweet(4, "Ünïcødé «quotes» and\nnewlines\tand emoji 👩‍👩‍👧 survive intact")
    server.script = [
        # blank keep-alive lines between tweets, then a drop in the middle of a chunk
        Connection(
            [
                ("tweet", tweets[0], ["pets"]),
                ("keepalive",),
                ("tweet", tweets[1], ["pets", "dogs"]),
                ("drop",),
            ]
        ),
        Connection(status=429, reset_in_s=1),
        # the reconnect replays the last tweet before the drop; then an operational disconnect
        Connection(
            [("tweet", tweets[1], ["pets", "dogs"]), ("tweet", tweets[2], ["dogs"]), ("operational",)]
        ),
        # keep-alives for longer than the keep-alive timeout keep the stream up ...
        Connection(
            [("tweet", tweets[3], ["pets"]), *[("keepalive",)] * 8, ("tweet", tweets[4], ["pets"]), ("end",)]
        ),
        # ... but silence past it is a dead stream: reconnect
        Connection([("tweet", tweets[5], ["dogs"]), ("stall", 2.5)]),
        Connection(
            [("tweet", tweets[5], ["dogs"]), ("tweet", tweets[6], ["pets"]), ("tweet", tweets[7], ["dogs"])]
        ),
    ]
    twitter = fast_twitter(server)
    xapi.sync_rules(xapi.rules_client(twitter), [xapi.parse_rule("cats:pets"), xapi.parse_rule("dogs:dogs")])
    server.keepalive_every_s = 0.3  # 8 keep-alives span 2.4 s > the 1 s timeout

    with KafkaSink(settings) as sink:
        emitter = xapi.TweetEmitter(sink.send, twitter.dedupe_window)
        stream = xapi.FilteredStream(twitter, emitter)
        runner = threading.Thread(target=stream.run)
        runner.start()
        try:
            assert wait_for(lambda: emitter.counts.emitted == 8), emitter.counts
        finally:
            stream.stop()
            runner.join(10)
        assert not runner.is_alive()
    assert sink.stats.delivered == 8 and sink.stats.failed == 0

    counts = emitter.counts
    assert counts.duplicates == 2  # the two replays after reconnecting
    assert counts.rate_limited == 1
    assert counts.reconnects >= 5  # drop, 429, operational-disconnect, end, keep-alive timeout
    assert server.stream_connections >= 6

    messages = consume_all(settings.topics.raw, 8, timeout=60)
    received = {m.key().decode(): RawTweet.from_bytes(m.value()) for m in messages}
    assert len(messages) == 8 and len(received) == 8  # exactly once
    expected_tags = {
        0: ["pets"],
        1: ["pets", "dogs"],
        2: ["dogs"],
        3: ["pets"],
        4: ["pets"],
        5: ["dogs"],
        6: ["pets"],
        7: ["dogs"],
    }
    for n, tags in expected_tags.items():
        sent, got = tweets[n], received[tweets[n]["id"]]
        assert got.text == sent["text"]
        assert got.rule_tags == tags
        assert got.author_id == sent["author_id"] and got.lang == "en" and got.source == "twitter"
        assert got.created_at is not None and got.created_at.isoformat().startswith("2026-11-26T09:00:0")


def test_search_pages_with_since_id_waits_out_429_and_delivers_each_tweet_once(
    server: XApiServer, settings: Settings, consume_all
) -> None:
    server.search_tweets = [make_tweet(n) for n in range(230)]
    server.search_429s = 1
    twitter = fast_twitter(server)
    with KafkaSink(settings) as sink:
        emitter = xapi.TweetEmitter(sink.send, twitter.dedupe_window)
        search = xapi.RecentSearch(twitter, emitter, "café lang:en", tag="cafe")
        assert search.poll_once() == 230  # pages of 100, 100, 30 after one 429
        assert search.since_id == server.search_tweets[-1]["id"]
        server.search_tweets += [make_tweet(n) for n in range(230, 250)]
        assert search.poll_once() == 20
        assert search.poll_once() == 0
    assert emitter.counts.emitted == 250 and emitter.counts.duplicates == 0
    ids = [t["id"] for t in server.search_tweets]
    assert [q.get("since_id") for q in server.search_requests[-2:]] == [[ids[229]], [ids[249]]]

    messages = consume_all(settings.topics.raw, 250, timeout=60)
    tweets = [RawTweet.from_bytes(m.value()) for m in messages]
    assert sorted(t.id for t in tweets) == sorted(t["id"] for t in server.search_tweets)
    assert all(t.rule_tags == ["cafe"] and t.source == "twitter" for t in tweets)


def test_wrong_token_is_refused_and_missing_token_is_a_clear_error(server: XApiServer) -> None:
    import tweepy

    wrong = TwitterSettings(bearer_token="nope", api_base_url=server.url)
    with pytest.raises(tweepy.Unauthorized):
        xapi.list_rules(xapi.rules_client(wrong))
    with pytest.raises(xapi.MissingTokenError, match="X_BEARER_TOKEN"):
        xapi.rules_client(TwitterSettings(bearer_token=None))


def test_dedupe_window_forgets_the_oldest_ids() -> None:
    seen = xapi.SeenIds(2)
    assert seen.add("1") and seen.add("2") and not seen.add("1")
    assert seen.add("3")  # evicts 2, the least recently seen
    assert seen.add("2") and not seen.add("3")


def test_dedupe_window_never_holds_more_than_its_size() -> None:
    seen = xapi.SeenIds(1_000)
    for n in range(50_000):
        seen.add(str(n))
    assert len(seen) == 1_000
    assert not seen.add("49999") and seen.add("0")  # the newest are kept, the oldest forgotten


def test_a_429_reset_far_off_is_waited_at_most_rate_limit_wait_max_s(server: XApiServer) -> None:
    server.search_tweets = [make_tweet(n) for n in range(3)]
    server.search_429s = 1
    server.rate_limit_reset = 1_000_000  # eleven days away
    emitter = counting_emitter()
    search = xapi.RecentSearch(fast_twitter(server, rate_limit_wait_max_s=0.3), emitter, "q")
    started = time.monotonic()
    assert in_thread(search.poll_once) == 3
    assert time.monotonic() - started >= 0.3
    assert emitter.counts.rate_limited == 1 and len(server.search_requests) == 2


def test_rules_calls_wait_out_429s_within_the_same_bound(server: XApiServer) -> None:
    server.rules_429s = 2
    server.rate_limit_reset = 1_000_000
    client = xapi.rules_client(fast_twitter(server, rate_limit_wait_max_s=0.1))
    assert in_thread(lambda: xapi.list_rules(client)) == []
    assert server.rules_429s == 0


def test_a_429_without_reset_headers_backs_off_exponentially_in_a_loop_not_recursion(
    server: XApiServer,
) -> None:
    server.search_tweets = [make_tweet(0)]
    server.search_429s = 4
    server.rate_limit_reset = None
    emitter = counting_emitter()
    search = xapi.RecentSearch(fast_twitter(server, http_backoff_max_s=0.3), emitter, "q")
    seen: list[tuple[float, int]] = []  # when each response came, and how deep the stack was
    search.client.session.hooks["response"].append(
        lambda response, *args, **kwargs: seen.append((time.monotonic(), len(inspect.stack(0))))
    )
    assert in_thread(search.poll_once) == 1
    gaps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(seen)]
    assert len(gaps) == 4
    assert all(gap >= wait * 0.9 for gap, wait in zip(gaps, [0.1, 0.2, 0.3, 0.3], strict=True)), gaps
    assert len({depth for _, depth in seen}) == 1  # every retry from the same frame: a loop
    assert emitter.counts.rate_limited == 4


@pytest.mark.parametrize("reset", ["soon", "9" * 5_000])
def test_a_malformed_reset_header_takes_the_backoff_instead_of_raising(
    server: XApiServer, reset: str
) -> None:
    server.search_tweets = [make_tweet(0)]
    server.search_429s = 1
    server.rate_limit_reset = reset
    emitter = counting_emitter()
    search = xapi.RecentSearch(fast_twitter(server), emitter, "q")
    assert in_thread(search.poll_once) == 1
    assert emitter.counts.rate_limited == 1


def test_reset_at_reads_only_whole_epoch_seconds() -> None:
    assert xapi.reset_at("1700000000") == 1_700_000_000.0
    for bad in [None, "", "soon", "1.5", "²", "9" * 4_000, "9" * 5_000]:
        assert xapi.reset_at(bad) is None, bad


def test_stop_cuts_a_rate_limit_wait_short(server: XApiServer) -> None:
    server.search_429s = 1
    server.rate_limit_reset = 3_600
    search = xapi.RecentSearch(fast_twitter(server), counting_emitter(), "q")
    stopping = threading.Thread(
        target=lambda: (wait_for(lambda: len(server.search_requests) == 1), search.stop()), daemon=True
    )
    stopping.start()
    in_thread(lambda: search.run(0.05), timeout=10)  # returns, without raising the 429
    assert len(server.search_requests) == 1


def test_search_paging_stops_at_search_max_pages(
    server: XApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.search_tweets = [make_tweet(n) for n in range(45)]
    server.search_endless = True  # a next_token on every page, even the empty ones past the end
    twitter = fast_twitter(server, search_max_results=10, search_max_pages=3)
    search = xapi.RecentSearch(twitter, counting_emitter(), "q")
    with caplog.at_level(logging.WARNING, logger="tweetpulse.producers.xapi"):
        assert in_thread(search.poll_once) == 30  # the newest three pages; the rest is left behind
    assert len(server.search_requests) == 3
    assert search.since_id == server.search_tweets[-1]["id"]
    assert [r.message for r in caplog.records] == ["search paging capped"]
    with pytest.raises(ValueError, match="search_max_pages"):
        TwitterSettings(search_max_pages=0)


def test_a_429_without_reset_headers_never_waits_longer_than_rate_limit_wait_max_s() -> None:
    from tweetpulse.producers.xapi import Backoff

    backoff = Backoff(TwitterSettings(rate_limit_backoff_start_s=60, rate_limit_wait_max_s=30))
    waits = [backoff.after_http_error(429, None) for _ in range(5)]
    assert waits == [30.0] * 5  # the backoff grows (60, 120, ...) but each wait is capped
    assert backoff.after_http_error(503, None) == 320.0  # other HTTP errors keep their own bound
