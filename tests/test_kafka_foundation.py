"""Against the real local broker: message round trips, topic creation, broker lifecycle."""

import subprocess
import sys
import uuid

import pytest
from confluent_kafka import Producer

from tweetpulse import localkafka
from tweetpulse.contracts import RawTweet, SentimentResult, utcnow
from tweetpulse.kafka import create_topics, describe_topics, list_topics, pipeline_topics, producer_config


def test_both_message_types_round_trip_through_kafka(settings, consume_all) -> None:
    producer = Producer(producer_config(settings))
    tweet = RawTweet(id="1001", text="loving the new release 🎉", source="replay", rule_tags=["release"])
    now = utcnow()
    result = SentimentResult(
        id="1001",
        text=tweet.text,
        label="positive",
        probabilities={"negative": 0.03, "positive": 0.97},
        model_version="v0001",
        ingested_at=tweet.ingested_at,
        classified_at=now,
    )
    producer.produce(settings.topics.raw, key=tweet.key, value=tweet.to_bytes())
    producer.produce(settings.topics.sentiment, key=result.key, value=result.to_bytes())
    assert producer.flush(30) == 0

    (raw_msg,) = consume_all(settings.topics.raw, 1)
    (res_msg,) = consume_all(settings.topics.sentiment, 1)
    assert raw_msg.key() == b"1001" and RawTweet.from_bytes(raw_msg.value()) == tweet
    assert res_msg.key() == b"1001" and SentimentResult.from_bytes(res_msg.value()) == result


def test_topic_creation_is_idempotent_and_model_topic_is_compacted(settings) -> None:
    again = create_topics(settings)
    assert set(again.values()) == {"exists"}
    assert {t.name for t in pipeline_topics(settings)} <= set(list_topics(settings))
    raw, models = describe_topics(settings, [settings.topics.raw, settings.topics.models])
    assert raw.partitions == settings.topics.partitions
    assert models.partitions == 1 and models.config["cleanup.policy"] == "compact"


def test_describe_unknown_topic_names_it(settings) -> None:
    with pytest.raises(KeyError, match="no-such-topic"):
        describe_topics(settings, ["no-such-topic"])


def test_cli_topics_create_reports_each_topic(settings, monkeypatch) -> None:
    from tweetpulse.cli import main

    monkeypatch.setenv("TWEETPULSE_KAFKA__BOOTSTRAP_SERVERS", settings.kafka.bootstrap_servers)
    monkeypatch.setenv("TWEETPULSE_TOPICS__RAW", f"cli.{uuid.uuid4().hex[:6]}")
    assert main(["topics", "create"]) == 0


@pytest.mark.slow
def test_second_broker_start_is_a_noop_and_stop_then_start_works(tmp_path) -> None:
    """A broker of its own on another port, so the shared test broker is left alone."""
    port, state = 19092, tmp_path / "kafka"
    run = lambda action: localkafka.run(action, port=port, state_dir=state)  # noqa: E731
    try:
        assert run("status") == 3
        assert run("start") == 0
        pid = (state / "kafka.pid").read_text()
        assert run("start") == 0
        assert (state / "kafka.pid").read_text() == pid, "second start must not launch another broker"
        assert run("status") == 0
        assert run("stop") == 0
        assert run("status") == 3
        assert run("start") == 0  # same storage, restarted
        p = Producer({"bootstrap.servers": f"127.0.0.1:{port}"})
        p.produce("lifecycle", value=b"ok")
        assert p.flush(30) == 0
    finally:
        run("stop")


def test_cli_help_lists_every_role() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "tweetpulse", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("kafka", "topics", "schemas"):
        assert command in out
