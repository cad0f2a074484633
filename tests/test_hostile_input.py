"""Topics are an interface other teams write to: every byte on them is untrusted.

A real worker on the real broker with a really fine-tuned model gets every hostile kind below,
interleaved with valid tweets on every partition. Each valid tweet gets exactly one result, each
hostile message exactly one dead letter whose reason names its kind, the worker never restarts, and
SIGTERM stops it within the grace afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import time
from collections import Counter
from collections.abc import Callable

import test_processors_pipeline as processor_tests
from confluent_kafka import Producer
from test_processors_pipeline import (  # the workers' test helpers, shared rather than copied
    Worker,
    labeled_tweets,
    results_by_id,
    wait_for_assignment,
)

from tweetpulse.contracts import DeadLetter
from tweetpulse.kafka import producer_config
from tweetpulse.settings import Settings

GRACE_S = 10

registry = processor_tests.registry  # fixtures
start_worker = processor_tests.start_worker


def tweet(**fields: object) -> bytes:
    return json.dumps({"id": "h1", "text": "a fine tweet", "source": "replay", **fields}).encode()


# kind -> (value, the reason its dead letter must give)
HOSTILE: dict[str, tuple[bytes | None, str]] = {
    "arrays nested 10k deep": (b'{"text": "x", "a": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "too-deep"),
    "objects nested 5k deep": (b'{"a": ' * 5_000 + b"1" + b"}" * 5_000, "too-deep"),
    "a 0.9 MiB value": (tweet(text="a" * 900 * 1024), "oversized-message"),
    "50k rule tags": (tweet(rule_tags=["t"] * 50_000), "oversized-message"),
    "33 rule tags": (tweet(rule_tags=[f"t{i}" for i in range(33)]), "too-many-tags"),
    "a 65-character rule tag": (tweet(rule_tags=["t" * 65]), "oversized-field"),
    "NaN literal": (tweet().replace(b"}", b', "created_at": NaN}'), "invalid-datetime"),
    "Infinity literal": (tweet().replace(b"}", b', "created_at": Infinity}'), "invalid-datetime"),
    "1e999999": (tweet().replace(b"}", b', "created_at": 1e999999}'), "invalid-datetime"),
    "a 5000-digit integer": (
        tweet().replace(b"}", b', "created_at": ' + b"9" * 5000 + b"}"),
        "malformed-json",
    ),
    "duplicate keys": (b'{"id": "d1", "text": "nice", "text": "evil", "source": "replay"}', "duplicate-key"),
    "duplicate keys, one escaped": (
        b'{"id": "d2", "text": "nice", "t\\u0065xt": "evil", "source": "replay"}',
        "duplicate-key",
    ),
    "UTF-8 BOM": (b"\xef\xbb\xbf" + tweet(), "malformed-json"),
    "lone surrogate": (b'{"id": "s1", "text": "\\ud800", "source": "replay"}', "malformed-json"),
    "null byte escaped in text": (tweet(text="a\x00b"), "control-characters"),
    "raw null byte": (b'{"id": "n1", "text": "a\x00b", "source": "replay"}', "malformed-json"),
    "invalid UTF-8": (b'{"id": "u1", "text": "caf\xe9", "source": "replay"}', "not-utf8"),
    "empty value": (b"", "empty-message"),
    "tombstone": (None, "tombstone"),
    "JSON string": (b'"just a string"', "not-an-object"),
    "JSON number": (b"42", "not-an-object"),
    "JSON array": (b'[{"id": "a1", "text": "x", "source": "replay"}]', "not-an-object"),
    "JSON null": (b"null", "not-an-object"),
    "malformed JSON": (b'{"id": "m1", "text": "unterminated', "malformed-json"),
    "id of the wrong type": (tweet(id=5), "wrong-type"),
    "id with spaces": (tweet(id="a b"), "invalid-format"),
    "text of the wrong type": (tweet(text=["a", "list"]), "wrong-type"),
    "text missing": (b'{"id": "x3", "source": "replay"}', "missing-text"),
    "source missing": (b'{"id": "x3", "text": "hi"}', "missing-source"),
    "unknown source": (tweet(source="fax"), "invalid-value"),
    "label of the wrong value": (tweet(label="meh"), "invalid-value"),
    "rule_tags not a list": (tweet(rule_tags="airlines"), "wrong-type"),
    "created_at garbage": (tweet(created_at="yesterday"), "invalid-datetime"),
    "a 4,001-character text": (tweet(text="a" * 4001), "oversized-text"),
    "whitespace-only text": (tweet(text=" \n\t "), "empty-text"),
    "zero-width-only text": (tweet(text="\u200b\u200d\ufeff\u2060"), "empty-text"),
    "schema_version 2": (tweet(schema_version=2), "unsupported-schema-version"),
    "unknown field": (tweet(extra_field=1), "unknown-field"),
    "a 65-character id": (tweet(id="i" * 65), "oversized-field"),
    "a 100-character author_id": (tweet(author_id="1" * 100), "oversized-field"),
    "lang with a space": (tweet(lang="e n"), "invalid-format"),
}


def test_every_hostile_kind_gets_one_dead_letter_every_valid_tweet_one_result_and_the_worker_survives(
    settings: Settings, start_worker: Callable[..., Worker], consume_all: Callable
) -> None:
    assert len(HOSTILE) >= 25
    tweets = labeled_tweets(6 * len(HOSTILE))
    worker = start_worker(TWEETPULSE_PROCESSOR__SHUTDOWN_GRACE_S=str(GRACE_S))
    wait_for_assignment([worker], settings.topics.partitions)
    pid = worker.proc.pid

    producer = Producer(producer_config(settings, **{"message.max.bytes": 2_000_000}))
    kinds = list(HOSTILE)
    valid = iter(tweets)
    sent_valid = []
    for partition in range(settings.topics.partitions):  # every kind on every partition, between tweets
        for i, kind in enumerate(kinds):
            for good in (next(valid), next(valid)):
                producer.produce(
                    settings.topics.raw, key=good.key, value=good.to_bytes(), partition=partition
                )
                sent_valid.append(good)
            producer.produce(
                settings.topics.raw, key=f"bad-{i}".encode(), value=HOSTILE[kind][0], partition=partition
            )
            producer.poll(0)
    assert producer.flush(30) == 0

    n_bad = len(kinds) * settings.topics.partitions
    letters = consume_all(settings.topics.dlq, n_bad, timeout=180)
    results = consume_all(settings.topics.sentiment, len(sent_valid), timeout=60)
    assert len(letters) == n_bad, worker.log()[-4000:]
    by_id = results_by_id(results)
    assert set(by_id) == {t.id for t in sent_valid}
    assert all(len(r) == 1 for r in by_id.values()), "a valid tweet got more than one result"

    reasons: Counter = Counter()
    for msg in letters:
        kind = kinds[int(msg.key().decode().removeprefix("bad-"))]
        value, reason = HOSTILE[kind]
        letter = DeadLetter.from_bytes(msg.value())
        assert letter.reason == reason, f"{kind}: {letter.reason} ({letter.error})"
        original = value or b""
        kept = base64.b64decode(letter.original_value_b64)
        assert original.startswith(kept) and len(kept) <= 8 * 1024
        assert letter.original_size == len(original)
        assert letter.original_sha256 == hashlib.sha256(original).hexdigest()
        assert letter.truncated == (len(original) > 8 * 1024)
        reasons[kind] += 1
    assert reasons == Counter({kind: settings.topics.partitions for kind in kinds})

    assert worker.proc.poll() is None and worker.proc.pid == pid, "the worker restarted"
    assert "crashed" not in worker.log()
    started = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    worker.proc.wait(GRACE_S + 5)
    assert time.monotonic() - started <= GRACE_S + 1
