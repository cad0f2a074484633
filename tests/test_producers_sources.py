"""The replay and synthetic sources: formats, labels, malformed lines, pacing, variety."""

from __future__ import annotations

import csv
import json
import logging
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from tweetpulse.contracts import RawTweet
from tweetpulse.producers.replay import Pacer, ReplayCounts, loop_id, replay_tweets
from tweetpulse.producers.synthetic import TOPICS, SyntheticTweets


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_replay_reads_every_format_and_carries_labels(tmp_path: Path) -> None:
    contract = RawTweet(
        id="42", text="from the contract", source="twitter", rule_tags=["x"], label="positive"
    )
    files = {
        "contract": write(tmp_path / "raw.jsonl", contract.model_dump_json() + "\n"),
        "jsonl": write(
            tmp_path / "lab.jsonl",
            '{"text": "good day", "label": "positive"}\n{"text": "meh", "label": 0}\n'
            '{"text": "ok", "label": " POS ", "id": 7}\n',
        ),
        "sentiment140": write(
            tmp_path / "s140.csv",
            '"0","1467810369","Mon Apr 06","NO_QUERY","u1","sad, really"\n'
            '"2","1467810370","Mon Apr 06","NO_QUERY","u2","neutral one"\n'
            '"4","1467810371","Mon Apr 06","NO_QUERY","u3","happy ""quoted"""\n',
        ),
        "tweeteval": write(tmp_path / "test_text.txt", "bad bad\nok then\nlovely\n"),
    }
    write(tmp_path / "test_labels.txt", "0\n1\n2\n")
    got = {fmt: [(t.id, t.text, t.label) for t in replay_tweets(path)] for fmt, path in files.items()}
    assert got == {
        "contract": [("42", "from the contract", "positive")],
        "jsonl": [
            ("replay-lab-1", "good day", "positive"),
            ("replay-lab-2", "meh", "negative"),
            ("7", "ok", "positive"),
        ],
        "sentiment140": [
            ("1467810369", "sad, really", "negative"),
            ("1467810371", 'happy "quoted"', "positive"),
        ],
        "tweeteval": [
            ("replay-test_text-1", "bad bad", "negative"),
            ("replay-test_text-3", "lovely", "positive"),
        ],
    }
    assert next(replay_tweets(files["contract"])).rule_tags == ["x"]


def test_malformed_lines_are_reported_with_line_and_reason_counted_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lines = [
        b'{"text": "first", "label": "positive"}',
        b'{"text": "broken json',
        b'{"text": "", "label": "negative"}',
        b'{"text": "odd label", "label": "maybe"}',
        b'{"text": "\xff\xfe not utf-8"}',
        b'["not", "an object"]',
        json.dumps({"text": "x" * 5000}).encode(),
        b'{"text": "last", "label": "negative"}',
    ]
    path = write(tmp_path / "mixed.jsonl", b"\n".join(lines) + b"\n")
    counts = ReplayCounts()
    with caplog.at_level(logging.WARNING, logger="tweetpulse.producers.replay"):
        tweets = list(replay_tweets(path, fmt="jsonl", counts=counts))
    assert [t.text for t in tweets] == ["first", "last"]
    assert (counts.read, counts.malformed) == (2, 6)
    reported = {r.line: r.reason for r in caplog.records}
    assert sorted(reported) == [2, 3, 4, 5, 6, 7]
    assert "invalid JSON" in reported[2] and "empty" in reported[3] and "maybe" in reported[4]
    assert "utf-8" in reported[5] and "text" in reported[7]


def test_loop_replays_with_distinct_ids_per_pass_until_the_limit(tmp_path: Path) -> None:
    path = write(tmp_path / "two.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n')
    counts = ReplayCounts()
    ids = [t.id for t in replay_tweets(path, loop=True, limit=5, counts=counts)]
    assert ids == ["replay-two-1", "replay-two-2", "replay-two-1:2", "replay-two-2:2", "replay-two-1:3"]
    assert counts.passes == 3


def test_loop_ids_stay_valid_however_long_the_file_id(tmp_path: Path) -> None:
    contract = RawTweet(id="9" * 64, text="longest id", source="twitter")
    files = [
        write(tmp_path / "raw.jsonl", contract.model_dump_json() + "\n"),
        write(tmp_path / "lab.jsonl", json.dumps({"text": "b", "label": 1, "id": "7" * 63}) + "\n"),
    ]
    for path in files:
        tweets = list(replay_tweets(path, loop=True, limit=4))
        assert len({t.id for t in tweets}) == 4, path
        assert all(RawTweet.from_bytes(t.to_bytes()) == t for t in tweets)  # each id passes the contract


def test_loop_id_is_bounded_and_distinct_for_any_pass() -> None:
    base = "a" * 64
    ids = [loop_id(base, n) for n in (2, 3, 10**6, 10**60)]
    assert len(set(ids)) == 4
    assert all(len(i) <= 64 and re.fullmatch(r"[A-Za-z0-9_.:-]+", i) for i in ids)
    assert loop_id("a" * 60 + "b", 2) != loop_id("a" * 60 + "c", 2)  # ids differing past the kept head
    assert (loop_id("x", 1), loop_id("x", 2)) == ("x", "x:2")
    assert loop_id("has space" * 7, 2) == "has space" * 7 + ":2"  # invalid stays invalid, to be refused


@pytest.mark.parametrize("where", ["first", "middle"])
def test_a_csv_field_past_the_csv_field_size_limit_is_a_skipped_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    huge = "x" * (csv.field_size_limit() + 1)
    row = '"{}","{}","Mon Apr 06","NO_QUERY","u","{}"'
    rows = [row.format(0, 1, "sad"), row.format(4, 2, huge), row.format(4, 3, "glad")]
    if where == "first":
        rows.insert(0, rows.pop(1))
    s140 = write(tmp_path / "s140.csv", "\n".join(rows) + "\n")  # format detected from line 1
    plain = write(tmp_path / "plain.csv", f'text,label\nsad,negative\n"{huge}",positive\nglad,positive\n')
    for path, bad_line in [(s140, rows.index(row.format(4, 2, huge)) + 1), (plain, 3)]:
        counts = ReplayCounts()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tweetpulse.producers.replay"):
            assert sorted(t.text for t in replay_tweets(path, counts=counts)) == ["glad", "sad"]
        assert (counts.read, counts.malformed) == (2, 1)
        assert [(r.line, r.reason) for r in caplog.records] == [
            (bad_line, "unreadable CSV row: field larger than field limit (131072)")
        ]


def test_loop_over_a_file_without_good_lines_ends(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.jsonl", "nope\n")
    counts = ReplayCounts()
    assert list(replay_tweets(path, fmt="jsonl", loop=True, counts=counts)) == []
    assert counts.malformed == 1


def test_pacer_never_runs_ahead_of_the_target_rate() -> None:
    pacer, started = Pacer(200.0), time.monotonic()
    for _ in range(41):
        pacer.wait()
    assert time.monotonic() - started >= 40 / 200.0 * 0.99  # a lower bound: the schedule is absolute


def test_synthetic_tweets_are_deterministic_per_seed() -> None:
    first = [(t.id, t.text, t.label, t.rule_tags) for t in SyntheticTweets(seed=5, count=300)]
    again = [(t.id, t.text, t.label, t.rule_tags) for t in SyntheticTweets(seed=5, count=300)]
    other = [t.text for t in SyntheticTweets(seed=6, count=300)]
    assert first == again
    assert sum(a[1] == b for a, b in zip(first, other, strict=True)) < 10


def test_synthetic_tweets_are_varied_labeled_valid_contract_messages() -> None:
    tweets = list(SyntheticTweets(seed=1, positive_share=0.3, topics=["airlines", "tech"], count=3000))
    texts = [t.text for t in tweets]
    assert len(set(texts)) > 0.95 * len(texts)  # not a handful of strings repeated
    assert 0.25 < sum(t.label == "positive" for t in tweets) / len(tweets) < 0.35
    assert {tag for t in tweets for tag in t.rule_tags} == {"airlines", "tech"}
    assert all(RawTweet.from_bytes(t.to_bytes()) == t and t.source == "synthetic" for t in tweets)
    share = lambda pattern: sum(bool(re.search(pattern, s)) for s in texts) / len(texts)  # noqa: E731
    assert share(r"@\w+") > 0.3 and share(r"#\w+") > 0.3 and share(r"https://\S+") > 0.05
    assert share(r"[\U0001F300-\U0001FAFF❤✨]") > 0.3
    lengths = Counter(min(len(s) // 40, 5) for s in texts)
    assert len(lengths) >= 4  # short and long tweets alike
    vocab = Counter(w for s in texts for w in s.lower().split())
    assert len(vocab) > 500


def test_synthetic_rejects_unknown_topics_and_bad_shares() -> None:
    with pytest.raises(ValueError, match="unknown topics"):
        SyntheticTweets(topics=["knitting"])
    with pytest.raises(ValueError, match="positive_share"):
        SyntheticTweets(positive_share=1.5)
    assert set(TOPICS) >= {"airlines", "tech", "sports"}


@pytest.mark.parametrize(
    ("content", "fmt", "names"),
    [
        (b"", "auto", "empty file"),
        (b"\n \n", "jsonl", "empty file"),
        (bytes(range(256)), "auto", "binary file"),
        (b"hello,world\nfoo,bar\n", "auto", "needs a header with text and label"),
        (b"text,label,caf\xe9\nok,positive,x\n", "csv", "line 1 is not utf-8 text"),
        (b'{"text": "a", "label": 1}\n', "tweeteval", "named *_text.txt"),
    ],
)
def test_a_file_that_is_no_tweet_file_is_refused_before_any_record(
    tmp_path: Path, content: bytes, fmt: str, names: str
) -> None:
    from tweetpulse.tweetfiles import TweetFileError, read_labeled

    path = write(tmp_path / "input.data", content)
    with pytest.raises(TweetFileError, match=re.escape(names)):
        list(replay_tweets(path, fmt=fmt))
    with pytest.raises(TweetFileError, match=re.escape(names)):  # training reads through the same check
        read_labeled(path, fmt=fmt)


def test_a_csv_header_with_padded_column_names_is_read(tmp_path: Path) -> None:
    from tweetpulse.tweetfiles import Record, read_records

    path = write(tmp_path / "padded.csv", "id, Text ,Label\n7,good day,positive\n")
    assert list(read_records(path)) == [Record("good day", "positive", 2, "7")]
