"""The Kafka sink every producer shares, against the real broker."""

from __future__ import annotations

import itertools

import pytest

from tweetpulse.contracts import RawTweet
from tweetpulse.producers.sink import KafkaSink
from tweetpulse.producers.synthetic import SyntheticTweets
from tweetpulse.settings import Settings, load_settings


def test_sink_delivers_every_tweet_as_a_contract_message_keyed_by_tweet_id(
    settings: Settings, consume_all
) -> None:
    tweets = list(SyntheticTweets(seed=7, count=500))
    with KafkaSink(settings) as sink:
        for tweet in tweets:
            sink.send(tweet)
    assert sink.stats.as_dict() | {"failures": {}} == {
        "accepted": 500, "delivered": 500, "failed": 0, "in_flight": 0,
        "full_queue_waits": sink.stats.full_queue_waits, "failures": {},
    }  # fmt: skip

    messages = consume_all(settings.topics.raw, 500)
    assert len(messages) == 500
    by_id = {t.id: t for t in tweets}
    for msg in messages:
        got = RawTweet.from_bytes(msg.value())
        assert msg.key() == got.key
        assert got == by_id[got.id]


def test_sink_sends_exactly_the_contract_bytes_of_to_bytes() -> None:
    from tweetpulse.producers.sink import _to_json

    for tweet in SyntheticTweets(seed=2, count=200):
        assert _to_json(tweet, exclude_none=True) == tweet.to_bytes()


def test_full_local_queue_makes_the_sink_wait_and_retry_never_drop(settings: Settings, consume_all) -> None:
    with KafkaSink(settings, **{"queue.buffering.max.messages": 5, "linger.ms": 50}) as sink:
        for tweet in SyntheticTweets(seed=3, count=300):
            sink.send(tweet)
    assert sink.stats.full_queue_waits > 0
    assert sink.stats.delivered == 300 and sink.stats.failed == 0
    assert len({m.key() for m in consume_all(settings.topics.raw, 300)}) == 300


def test_undeliverable_messages_are_counted_as_failed_with_the_reason() -> None:
    nowhere = load_settings(kafka={"bootstrap_servers": "127.0.0.1:1"})  # nothing listens on port 1
    with KafkaSink(nowhere, topic="never", **{"message.timeout.ms": 1500}) as sink:
        for tweet in itertools.islice(SyntheticTweets(seed=1), 20):
            sink.send(tweet)
    assert sink.stats.failed == 20 and sink.stats.delivered == 0
    assert sink.stats.failures == {"_MSG_TIMED_OUT": 20}


@pytest.mark.fault
def test_broker_down_at_start_and_mid_run_loses_nothing_accepted(tmp_path, consume_all) -> None:
    """A broker of our own on another port: down at start, up, down mid-run, up again."""
    from tweetpulse import localkafka
    from tweetpulse.kafka import create_topics, pipeline_topics

    port, state = 19192, tmp_path / "kafka"
    own = load_settings(kafka={"bootstrap_servers": f"127.0.0.1:{port}"}, topics={"partitions": 1})
    tweets = SyntheticTweets(seed=11, count=300)
    try:
        with KafkaSink(own, **{"message.timeout.ms": 120_000}) as sink:
            for tweet in itertools.islice(tweets, 100):  # accepted while nothing listens
                sink.send(tweet)
            assert localkafka.run("start", port=port, state_dir=state) == 0
            create_topics(own, pipeline_topics(own))
            assert sink.flush(60) == 0
            assert localkafka.run("stop", port=port, state_dir=state) == 0
            for tweet in itertools.islice(tweets, 200):  # accepted while the broker is gone
                sink.send(tweet)
            assert localkafka.run("start", port=port, state_dir=state) == 0
        assert sink.stats.delivered == 300 and sink.stats.failed == 0
    finally:
        localkafka.run("stop", port=port, state_dir=state)
