"""`tweetpulse produce ...` end to end: real broker, loopback X API server, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from xapi_server import Connection, XApiServer, make_tweet

from tweetpulse.cli import build_parser, main
from tweetpulse.contracts import RawTweet
from tweetpulse.settings import Settings, TwitterSettings

TOKEN = "AAAA-cli-secret-token-9876543210"


def summary_of(out: str) -> dict:
    line = next(x for x in out.splitlines() if x.startswith("summary "))
    return json.loads(line.removeprefix("summary "))


def test_produce_replay_writes_the_file_skips_malformed_lines_and_exits_0(
    tmp_path: Path, settings: Settings, consume_all, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "one", "label": "positive"}\n{oops\n{"text": "two", "label": "negative"}\n')
    assert main(["produce", "replay", str(path), "--topic", settings.topics.raw, "--progress"]) == 0
    captured = capsys.readouterr()
    summary = summary_of(captured.out)
    assert (summary["delivered"], summary["failed"], summary["malformed"]) == (2, 0, 1)
    assert '"line": 2' in captured.err  # the malformed line is reported with its number
    got = sorted(
        (t.text, t.label)
        for t in (RawTweet.from_bytes(m.value()) for m in consume_all(settings.topics.raw, 2))
    )
    assert got == [("one", "positive"), ("two", "negative")]


def test_produce_synthetic_writes_count_labeled_tweets(
    settings: Settings, consume_all, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "produce",
        "synthetic",
        "--count",
        "250",
        "--seed",
        "9",
        "--positive-share",
        "1",
        "--topic",
        settings.topics.raw,
    ]
    assert main(argv) == 0
    assert summary_of(capsys.readouterr().out)["delivered"] == 250
    tweets = [RawTweet.from_bytes(m.value()) for m in consume_all(settings.topics.raw, 250)]
    assert len({t.id for t in tweets}) == 250 and {t.label for t in tweets} == {"positive"}


def test_sigterm_stops_an_endless_producer_flushes_and_prints_the_summary(
    settings: Settings, consume_all
) -> None:
    argv = ["produce", "synthetic", "--count", "0", "--rate", "200", "--topic", settings.topics.raw]
    proc = subprocess.Popen([sys.executable, "-m", "tweetpulse", *argv], stdout=subprocess.PIPE, text=True)
    assert len(consume_all(settings.topics.raw, 50, timeout=60)) >= 50  # it is running
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    summary = summary_of(out)
    assert summary["interrupted"] and summary["failed"] == 0 and summary["in_flight"] == 0
    assert len(consume_all(settings.topics.raw, summary["delivered"], timeout=60)) == summary["delivered"]


def test_produce_twitter_streams_with_cli_rules_until_sigint(settings: Settings, consume_all) -> None:
    tweets = [make_tweet(n) for n in range(3)]
    with XApiServer(TOKEN) as server:
        server.script = [Connection([("tweet", t, ["pets"]) for t in tweets])]
        env = {**os.environ, "X_BEARER_TOKEN": TOKEN, "TWEETPULSE_TWITTER__API_BASE_URL": server.url,
               "TWEETPULSE_LOG_LEVEL": "DEBUG"}  # fmt: skip
        argv = [
            "produce",
            "twitter",
            "--rule",
            "cats:pets",
            "--rules-mode",
            "replace",
            "--topic",
            settings.topics.raw,
        ]
        proc = subprocess.Popen(
            [sys.executable, "-m", "tweetpulse", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        messages = consume_all(settings.topics.raw, 3, timeout=60)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert [r["value"] for r in server.rules.values()] == ["cats"]
    assert proc.returncode == 0, err
    assert summary_of(out)["delivered"] == 3 and summary_of(out)["emitted"] == 3
    assert sorted(RawTweet.from_bytes(m.value()).id for m in messages) == [t["id"] for t in tweets]
    assert "Bearer ***" in err and TOKEN not in err + out  # tweepy logs headers at DEBUG: redacted


def test_produce_twitter_lists_and_deletes_rules(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    with XApiServer(TOKEN) as server:
        server.add_rules([{"value": "cats", "tag": "pets"}])
        monkeypatch.setenv("TWITTER_BEARER_TOKEN", TOKEN)
        monkeypatch.setenv("TWEETPULSE_TWITTER__API_BASE_URL", server.url)
        assert main(["produce", "twitter", "--list-rules"]) == 0
        listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [(r["value"], r["tag"]) for r in listed] == [("cats", "pets")]
        assert main(["produce", "twitter", "--delete-rules", listed[0]["id"]]) == 0
        assert server.rules == {}


def test_missing_bearer_token_is_refused_with_a_clear_message(
    monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    for var in ("X_BEARER_TOKEN", "TWITTER_BEARER_TOKEN", "TWEETPULSE_TWITTER__BEARER_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    assert main(["produce", "twitter", "--list-rules"]) == 2
    assert "X_BEARER_TOKEN" in capsys.readouterr().err


def test_bearer_token_falls_back_to_the_conventional_env_vars(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("X_BEARER_TOKEN", raising=False)
    monkeypatch.setenv("TWITTER_BEARER_TOKEN", "from-twitter-var")
    assert TwitterSettings().bearer_token.get_secret_value() == "from-twitter-var"
    monkeypatch.setenv("X_BEARER_TOKEN", "from-x-var")
    assert TwitterSettings().bearer_token.get_secret_value() == "from-x-var"
    assert TwitterSettings(bearer_token="explicit").bearer_token.get_secret_value() == "explicit"


@pytest.mark.parametrize("source", ["synthetic", "replay", "twitter", "search"])
def test_every_produce_option_is_explained_in_help(source: str) -> None:
    produce = build_parser()._subparsers._group_actions[0].choices["produce"]
    parser = produce._subparsers._group_actions[0].choices[source]
    for action in parser._actions:
        assert action.help, f"{source} {action.option_strings or action.dest} has no help"


def test_produce_search_once_writes_every_result_with_the_tag(
    settings: Settings, consume_all, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    with XApiServer(TOKEN) as server:
        server.search_tweets = [make_tweet(n) for n in range(120)]
        monkeypatch.setenv("X_BEARER_TOKEN", TOKEN)
        monkeypatch.setenv("TWEETPULSE_TWITTER__API_BASE_URL", server.url)
        argv = ["produce", "search", "café", "--tag", "cafe", "--once", "--topic", settings.topics.raw]
        assert main(argv) == 0
    summary = summary_of(capsys.readouterr().out)
    assert (summary["delivered"], summary["emitted"], summary["duplicates"]) == (120, 120, 0)
    tweets = [RawTweet.from_bytes(m.value()) for m in consume_all(settings.topics.raw, 120)]
    assert len({t.id for t in tweets}) == 120 and all(t.rule_tags == ["cafe"] for t in tweets)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_bearer_token_never_reaches_stderr_even_at_debug_in_any_escaped_form(fmt: str) -> None:
    token = 'AAAA%2Bq"uo\\ted=token-ü-0123456789'  # JSON and repr escape it differently from the raw
    with XApiServer(token) as server:
        server.add_rules([{"value": "cats", "tag": "pets"}])
        env = {**os.environ, "TWEETPULSE_TWITTER__BEARER_TOKEN": token, "TWEETPULSE_LOG_LEVEL": "DEBUG",
               "TWEETPULSE_LOG_FORMAT": fmt, "TWEETPULSE_TWITTER__API_BASE_URL": server.url}  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "tweetpulse", "produce", "twitter", "--list-rules"],
            capture_output=True,
            env=env,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    assert b"Authorization" in done.stderr and b"Bearer ***" in done.stderr  # tweepy dumped the headers
    forms = {token, json.dumps(token)[1:-1], json.dumps(token, ensure_ascii=False)[1:-1], repr(token)[1:-1]}
    for part in ('q"uo', "uo\\\\ted", "0123456789"):  # fragments of every form
        forms.add(part)
    leaked = [form for form in forms if form.encode() in done.stderr + done.stdout]
    assert not leaked
