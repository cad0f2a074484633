"""`tweetpulse produce synthetic|replay|twitter|search`: every source into the raw-tweet topic.

Each run ends with one summary line (delivered, failed, malformed, duplicates) on stdout, also after
SIGINT/SIGTERM, which stop the source and flush what was accepted. Exit status 0 when nothing failed.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from tweetpulse.cli import CommandError, number
from tweetpulse.settings import Settings
from tweetpulse.tweetfiles import FORMATS

SYNTHETIC_TOPICS = ("airlines", "food", "gaming", "movies", "sports", "tech")
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")  # what Kafka accepts as a topic name


def topic_name(text: str) -> str:
    """An argparse type: a legal Kafka topic name, so a typo fails before any message is sent."""
    if not _TOPIC_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a Kafka topic name (1 to 249 letters, digits, '.', '_' or '-')"
        )
    return text


def register(subparsers: Any) -> None:
    produce = subparsers.add_parser(
        "produce",
        help="write tweets into Kafka from the X API, a file or a generator",
        description="Write raw-tweet contract messages (key = tweet id) to the raw topic through an "
        "idempotent, acks=all producer. Every run prints a final summary; SIGINT/SIGTERM flush first.",
    )
    sources = produce.add_subparsers(dest="source", required=True, metavar="SOURCE")
    _add_synthetic(sources)
    _add_replay(sources)
    _add_twitter(sources)
    _add_search(sources)


def _common(parser: argparse.ArgumentParser, paced: bool) -> None:
    parser.add_argument("--topic", type=topic_name, help="target topic (default: the raw topic, topics.raw)")
    if paced:
        parser.add_argument(
            "--rate",
            type=number(float, above=0),
            default=None,
            help="target messages per second (default: as fast as possible)",
        )
        parser.add_argument(
            "--progress",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="show a progress bar on stderr (default: when stderr is a terminal)",
        )


def _add_synthetic(sources: Any) -> None:
    p = sources.add_parser(
        "synthetic",
        help="generated, labeled tweets (no data needed)",
        description="A seeded generator of realistic labeled tweets: mentions, hashtags, emoji, links, "
        "varied length; the topic is the rule tag. The same seed gives the same tweets.",
    )
    p.add_argument(
        "--count",
        type=number(int, at_least=0),
        default=1000,
        help="tweets to produce; 0 = endless (default 1000)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--positive-share",
        type=number(float, at_least=0, at_most=1),
        default=0.5,
        help="share of positive tweets, 0..1 (default 0.5)",
    )
    p.add_argument(
        "--topics",
        nargs="+",
        choices=SYNTHETIC_TOPICS,
        default=None,
        help="topics to draw from, carried as rule tags (default: all)",
    )
    _common(p, paced=True)
    p.set_defaults(handler=_run_synthetic)


def _add_replay(sources: Any) -> None:
    p = sources.add_parser(
        "replay",
        help="tweets from a JSONL or CSV file",
        description="Replay a file: raw-tweet contract JSONL, {text,label} JSONL, Sentiment140 CSV (0/4; "
        "2 = neutral is skipped), TweetEval *_text.txt (+ *_labels.txt) or a CSV with text and label "
        "columns. Labels are carried when present. A malformed line is logged with its line number and "
        "reason, counted and skipped.",
    )
    p.add_argument("file", help="the file to replay")
    p.add_argument("--format", choices=FORMATS, default="auto", help="file format (default: by content)")
    p.add_argument("--encoding", default="utf-8", help="text encoding (default utf-8)")
    p.add_argument(
        "--loop", action="store_true", help="start over at the end of the file, until --limit or stopped"
    )
    p.add_argument("--limit", type=number(int, at_least=1), default=None, help="stop after this many tweets")
    _common(p, paced=True)
    p.set_defaults(handler=_run_replay)


def _add_twitter(sources: Any) -> None:
    p = sources.add_parser(
        "twitter",
        help="the X API v2 filtered stream",
        description="Stream tweets matching the filtered-stream rules (each message carries the tags of "
        "the rules it matched), reconnecting with backoff. The bearer token comes from "
        "TWEETPULSE_TWITTER__BEARER_TOKEN, X_BEARER_TOKEN or TWITTER_BEARER_TOKEN. Rules from "
        "twitter.rules in the config are added too. Runs until Ctrl-C or SIGTERM, then flushes and prints "
        "the summary.",
    )
    p.add_argument(
        "--rule",
        action="append",
        default=[],
        metavar="VALUE:TAG",
        help="a stream rule; the tag follows the last colon, so give a value that ends in an operator a tag: "
        "'cats lang:en:cats' (repeatable; without a tag the value is the tag)",
    )
    p.add_argument(
        "--rules-mode",
        choices=["add", "replace"],
        default="add",
        help="add: keep the stream's other rules; replace: delete them (default add)",
    )
    p.add_argument("--list-rules", action="store_true", help="print the stream's rules and exit")
    p.add_argument("--delete-rules", nargs="+", metavar="ID", help="delete rules by id and exit")
    _common(p, paced=False)
    p.set_defaults(handler=_run_twitter)


def _add_search(sources: Any) -> None:
    p = sources.add_parser(
        "search",
        help="poll the X API v2 recent search (for accounts without stream access)",
        description="Poll search_recent_tweets for QUERY every --interval seconds, fetching only tweets "
        "newer than the last poll and waiting out rate limits.",
    )
    p.add_argument("query", help="an X search query, e.g. '(love OR hate) lang:en -is:retweet'")
    p.add_argument(
        "--interval",
        type=number(float, above=0),
        default=None,
        help="seconds between polls (default twitter.search_interval_s)",
    )
    p.add_argument("--tag", default=None, help="rule tag carried by each tweet (default: the query)")
    p.add_argument("--once", action="store_true", help="poll once and exit")
    _common(p, paced=False)
    p.set_defaults(handler=_run_search)


# --- runners ---------------------------------------------------------------------------------------


@contextmanager
def _interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C: the source stops, the sink flushes, the summary prints."""

    def _raise(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _produce(
    settings: Settings,
    args: argparse.Namespace,
    run: Callable[[Any], None],
    counts: Callable[[], dict[str, int]] = dict,
) -> int:
    """``run(sink)`` feeds one sink until its source ends or a signal comes; then the sink flushes and
    the summary (sink stats plus the source's ``counts()``) prints. Exit status 1 if any delivery failed."""
    from tweetpulse.producers.sink import KafkaSink

    started = time.monotonic()
    interrupted = False
    with _interrupt_on_sigterm(), KafkaSink(settings, topic=args.topic) as sink:
        try:
            run(sink)
        except KeyboardInterrupt:
            interrupted = True
    elapsed = time.monotonic() - started
    summary = {"topic": sink.topic, **sink.stats.as_dict(), "malformed": 0, **counts()}
    summary.update(
        interrupted=interrupted,
        seconds=round(elapsed, 2),
        msgs_per_s=round(sink.stats.delivered / elapsed, 1) if elapsed else 0.0,
    )
    print("summary " + json.dumps(summary, sort_keys=True))
    return 0 if sink.stats.failed == 0 else 1


def _paced(args: argparse.Namespace, tweets: Iterable[Any], total: int | None) -> Callable[[Any], None]:
    """A run that sends ``tweets`` at ``--rate`` with the progress bar when asked."""
    from tweetpulse.producers.replay import Pacer

    def run(sink: Any) -> None:
        pacer, bar, send = Pacer(args.rate), _progress(args, total), sink.send
        if bar is None and not pacer.interval:  # the hot loop, for as-fast-as-possible replays
            for tweet in tweets:
                send(tweet)
            return
        try:
            for tweet in tweets:
                pacer.wait()
                send(tweet)
                if bar is not None:
                    bar.update()
        finally:
            if bar is not None:
                bar.close()

    return run


def _wants_progress(args: argparse.Namespace) -> bool:
    wanted = getattr(args, "progress", False)
    return sys.stderr.isatty() if wanted is None else bool(wanted)


def _progress(args: argparse.Namespace, total: int | None) -> Any:
    if not _wants_progress(args):
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="msg", dynamic_ncols=True, file=sys.stderr)


def _run_synthetic(args: argparse.Namespace, settings: Settings) -> int:
    from tweetpulse.producers.synthetic import SyntheticTweets

    count = args.count or None
    tweets = SyntheticTweets(args.seed, args.positive_share, args.topics, count=count)
    return _produce(settings, args, _paced(args, tweets, count))


def _run_replay(args: argparse.Namespace, settings: Settings) -> int:
    """TweetFileError before connecting when the file is no tweet file; CommandError after the run
    when not one line of it was a valid tweet."""
    from tweetpulse.producers.replay import ReplayCounts, replay_tweets
    from tweetpulse.tweetfiles import check_file

    check_file(args.file, args.format, args.encoding)
    counts = ReplayCounts()
    tweets = replay_tweets(args.file, args.format, args.encoding, args.loop, args.limit, counts)
    total = args.limit
    if total is None and not args.loop and _wants_progress(args):
        with open(args.file, "rb") as f:
            total = sum(1 for _ in f)  # an upper bound: blank, neutral and malformed lines count too
    run = _paced(args, tweets, total)
    status = _produce(settings, args, run, lambda: {"read": counts.read, "malformed": counts.malformed})
    if counts.malformed and not counts.read:
        raise CommandError(
            f"{args.file}: no valid tweet in {counts.malformed} malformed lines (is --format right?)"
        )
    return status


class _XRun:
    """Builds the X source once the sink exists, and reports its counts for the summary."""

    def __init__(self, settings: Settings, make_source: Callable[[Any], Any], start: Callable[[Any], None]):
        self.settings, self.make_source, self.start = settings, make_source, start
        self.source: Any = None

    def __call__(self, sink: Any) -> None:
        from tweetpulse.producers.xapi import TweetEmitter

        emitter = TweetEmitter(sink.send, self.settings.twitter.dedupe_window)
        self.source = self.make_source(emitter)
        self.start(self.source)

    def counts(self) -> dict[str, int]:
        return dict(self.source.emitter.counts.__dict__) if self.source else {}


def _run_twitter(args: argparse.Namespace, settings: Settings) -> int:
    import requests
    import tweepy

    from tweetpulse.producers import xapi

    try:
        client = xapi.rules_client(settings.twitter)
        if args.list_rules:
            for rule in xapi.list_rules(client):
                print(json.dumps({"id": rule.id, "value": rule.value, "tag": rule.tag}))
            return 0
        if args.delete_rules:
            print(f"deleted {xapi.delete_rules(client, args.delete_rules)} rules")
            return 0
        wanted = [xapi.parse_rule(r) for r in [*settings.twitter.rules, *args.rule]]
        if wanted or args.rules_mode == "replace":
            xapi.sync_rules(client, wanted, args.rules_mode)
    except (ValueError, tweepy.TweepyException) as exc:  # no token, a bad rule, the API said no
        print(f"tweetpulse produce twitter: {exc}", file=sys.stderr)
        return 2
    except requests.RequestException as exc:
        url = settings.twitter.api_base_url or xapi.TWEEPY_HOST
        raise CommandError(f"cannot reach the X API at {url}: {exc}") from None
    run = _XRun(settings, lambda emitter: xapi.FilteredStream(settings.twitter, emitter), lambda s: s.run())
    return _produce(settings, args, run, run.counts)


def _run_search(args: argparse.Namespace, settings: Settings) -> int:
    from tweetpulse.producers import xapi

    try:
        xapi.bearer_token(settings.twitter)
    except xapi.MissingTokenError as exc:
        print(f"tweetpulse produce search: {exc}", file=sys.stderr)
        return 2
    run = _XRun(
        settings,
        lambda emitter: xapi.RecentSearch(settings.twitter, emitter, args.query, args.tag),
        lambda search: search.poll_once() if args.once else search.run(args.interval),
    )
    return _produce(settings, args, run, run.counts)
