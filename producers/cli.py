"""`tweetpulse produce synthetic|replay|twitter|search`: every source into the raw-tweet topic.

Each run ends with one summary line (delivered, failed, malformed, duplicates) on stdout, also after
SIGINT/SIGTERM, which stop the source and flush what was accepted. Exit status 0 when nothing failed.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, Literal

from pydantic import BaseModel, Field
from tqdm import tqdm

from tweetpulse.cli import CommandError
from tweetpulse.options import add_command_options, add_settings_options
from tweetpulse.producers.replay import Pacer, ReplayCounts, replay_tweets
from tweetpulse.producers.sink import KafkaSink
from tweetpulse.producers.synthetic import SyntheticTweets
from tweetpulse.settings import Settings
from tweetpulse.tweetfiles import FORMATS, check_file

SYNTHETIC_TOPICS = ("airlines", "food", "gaming", "movies", "sports", "tech")


TOPIC_NAME = r"^[A-Za-z0-9._-]{1,249}$"  # what Kafka accepts as a topic name


class OutputOptions(BaseModel):
    """Where every source writes."""

    topic: str | None = Field(None, pattern=TOPIC_NAME, description="target topic (none: topics.raw)")


class PacedOptions(OutputOptions):
    """The options of the sources that read as fast as they are allowed (synthetic, replay)."""

    rate: float | None = Field(
        None, gt=0, description="target messages per second (none: as fast as possible)"
    )
    progress: bool | None = Field(
        None, description="show a progress bar on stderr (none: when stderr is a terminal)"
    )


class SyntheticOptions(PacedOptions):
    count: int = Field(1000, ge=0, description="tweets to produce; 0 = endless")
    seed: int = Field(0, description="random seed")
    positive_share: float = Field(0.5, ge=0, le=1, description="share of positive tweets, 0..1")
    topics: list[Literal[SYNTHETIC_TOPICS]] | None = Field(
        None,
        description=f"topics to draw from, carried as rule tags: {', '.join(SYNTHETIC_TOPICS)} (none: all)",
    )


class ReplayOptions(PacedOptions):
    format: Literal[FORMATS] = Field("auto", description="file format (auto: by content)")
    encoding: str = Field("utf-8", description="text encoding")
    loop: bool = Field(False, description="start over at the end of the file, until --limit or stopped")
    limit: int | None = Field(None, ge=1, description="stop after this many tweets (none: the whole file)")


class TwitterOptions(OutputOptions):
    rule: list[str] = Field(
        default_factory=list,
        description="a stream rule, VALUE:TAG; the tag follows the last colon, so give a value that ends in "
        "an operator a tag: 'cats lang:en:cats' (without a tag the value is the tag); added to twitter.rules",
    )
    rules_mode: Literal["add", "replace"] = Field(
        "add", description="add: keep the stream's other rules; replace: delete them"
    )
    list_rules: bool = Field(False, description="print the stream's rules and exit")
    delete_rules: list[str] | None = Field(None, description="delete rules by id and exit")


class SearchOptions(OutputOptions):
    tag: str | None = Field(None, description="rule tag carried by each tweet (none: the query)")
    once: bool = Field(False, description="poll once and exit")


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


def _add_synthetic(sources: Any) -> None:
    p = sources.add_parser(
        "synthetic",
        help="generated, labeled tweets (no data needed)",
        description="A seeded generator of realistic labeled tweets: mentions, hashtags, emoji, links, "
        "varied length; the topic is the rule tag. The same seed gives the same tweets.",
    )
    add_command_options(p, SyntheticOptions)
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
    add_command_options(p, ReplayOptions)
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
    add_command_options(p, TwitterOptions)
    add_settings_options(p, "twitter")
    p.set_defaults(handler=_run_twitter)


def _add_search(sources: Any) -> None:
    p = sources.add_parser(
        "search",
        help="poll the X API v2 recent search (for accounts without stream access)",
        description="Poll search_recent_tweets for QUERY every --interval seconds, fetching only tweets "
        "newer than the last poll and waiting out rate limits (--interval: twitter.search_interval_s).",
    )
    p.add_argument("query", help="an X search query, e.g. '(love OR hate) lang:en -is:retweet'")
    add_command_options(p, SearchOptions)
    add_settings_options(p, "twitter")
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

    return tqdm(total=total, unit="msg", dynamic_ncols=True, file=sys.stderr)


def _run_synthetic(args: argparse.Namespace, settings: Settings) -> int:

    count = args.count or None
    tweets = SyntheticTweets(args.seed, args.positive_share, args.topics, count=count)
    return _produce(settings, args, _paced(args, tweets, count))


def _run_replay(args: argparse.Namespace, settings: Settings) -> int:
    """TweetFileError before connecting when the file is no tweet file; CommandError after the run
    when not one line of it was a valid tweet."""

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
        # tweepy: 0.2 s to import, paid only by the X API sources
        from tweetpulse.producers.xapi import TweetEmitter

        emitter = TweetEmitter(sink.send, self.settings.twitter.dedupe_window)
        self.source = self.make_source(emitter)
        self.start(self.source)

    def counts(self) -> dict[str, int]:
        return dict(self.source.emitter.counts.__dict__) if self.source else {}


def _run_twitter(args: argparse.Namespace, settings: Settings) -> int:
    # tweepy (and requests under it): 0.2 s to import, paid only by the X API sources
    import requests
    import tweepy

    from tweetpulse.producers import xapi  # tweepy, as above

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
    # tweepy: 0.2 s to import, paid only by the X API sources
    from tweetpulse.producers import xapi

    try:
        xapi.bearer_token(settings.twitter)
    except xapi.MissingTokenError as exc:
        print(f"tweetpulse produce search: {exc}", file=sys.stderr)
        return 2
    run = _XRun(
        settings,
        lambda emitter: xapi.RecentSearch(settings.twitter, emitter, args.query, args.tag),
        lambda search: search.poll_once() if args.once else search.run(),
    )
    return _produce(settings, args, run, run.counts)
