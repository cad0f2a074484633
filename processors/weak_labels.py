"""Weak labels by distant supervision: a tweet with a clear emoticon/emoji polarity gets that label.

This is the Sentiment140 method (Go, Bhayani & Huang, 2009): tweets with ``:)`` are taken as positive
and tweets with ``:(`` as negative, and the cue is removed from the text so a model trained on them
has to learn from the words. A tweet with cues of both polarities, or none, gets no label. Pure
Python: the processors run it without torch.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from tweetpulse.contracts import Label, LabeledTweet, RawTweet

POSITIVE_EMOTICONS = (":)", ":-)", ": )", ":D", ":-D", "=)", "=D", ";)", ";-)", ":]", "<3")
NEGATIVE_EMOTICONS = (":(", ":-(", ": (", ":'(", ":’(", "=(", ";(", ":[", "</3")
POSITIVE_EMOJI = "😀😃😄😁😊☺😍🥰😘🙂😻👍🎉🥳❤♥💕💖💗"
NEGATIVE_EMOJI = "😢😭😞😔😟😠😡🤬👎💔😩😫☹🙁😿"

_URL_OR_MENTION = re.compile(r"https?://\S+|@\w+")
# Variation selector 16 and skin-tone modifiers travel with the emoji they modify.
_EMOJI_TAIL = "[\ufe0f\U0001f3fb-\U0001f3ff]*"


def _emoticon_pattern(emoticons: Iterable[str]) -> str:
    # Longest first so ":-)" wins over ":-"; an emoticon glued to a following word (":Design") is not one.
    alternatives = "|".join(re.escape(e) for e in sorted(emoticons, key=len, reverse=True))
    return rf"(?:{alternatives})+(?![A-Za-z0-9])"


_POSITIVE = re.compile(rf"{_emoticon_pattern(POSITIVE_EMOTICONS)}|[{POSITIVE_EMOJI}]{_EMOJI_TAIL}")
_NEGATIVE = re.compile(rf"{_emoticon_pattern(NEGATIVE_EMOTICONS)}|[{NEGATIVE_EMOJI}]{_EMOJI_TAIL}")
_SPACES = re.compile(r"[ \t]{2,}")


@dataclass(frozen=True)
class WeakLabel:
    label: Label
    text: str  # the tweet without its cues
    cues: tuple[str, ...]


def _cue_spans(pattern: re.Pattern[str], text: str, protected: list[tuple[int, int]]) -> list[re.Match]:
    """Matches outside URLs and @mentions (``http://x.co/a:D`` holds no smiley)."""
    return [m for m in pattern.finditer(text) if not any(a <= m.start() < b for a, b in protected)]


def weak_label(text: str) -> WeakLabel | None:
    """The label of `text`'s cues and the text without them; None if no cue, mixed cues or no words left."""
    protected = [m.span() for m in _URL_OR_MENTION.finditer(text)]
    positive = _cue_spans(_POSITIVE, text, protected)
    negative = _cue_spans(_NEGATIVE, text, protected)
    if bool(positive) == bool(negative):  # none, or both polarities: no clear signal
        return None
    matches = positive or negative
    stripped = text
    for m in sorted(matches, key=lambda m: m.start(), reverse=True):
        stripped = stripped[: m.start()] + " " + stripped[m.end() :]
    stripped = _SPACES.sub(" ", stripped).strip()
    if not re.search(r"\w", stripped):
        return None  # nothing but the cue: a model cannot learn anything from it
    cues = tuple(dict.fromkeys(m.group(0).replace("\ufe0f", "") for m in matches))
    return WeakLabel("positive" if positive else "negative", stripped, cues)


def sampled(tweet_id: str, rate: float) -> bool:
    """A deterministic `rate` share of tweet ids, so a re-delivered tweet gets the same decision."""
    if rate >= 1.0:
        return True
    digest = hashlib.blake2b(tweet_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest) / 2**64 < rate


class WeakLabeler:
    """Labels the cue-bearing share `rate` of tweets; the rest, and tweets without a clear cue, pass."""

    def __init__(self, rate: float) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"weak label rate must lie in [0, 1], got {rate}")
        self.rate = rate

    def label(self, tweet: RawTweet) -> LabeledTweet | None:
        if not sampled(tweet.id, self.rate):
            return None
        weak = weak_label(tweet.text)
        if weak is None:
            return None
        return LabeledTweet(
            id=tweet.id, text=weak.text, label=weak.label, source="weak", cue=" ".join(weak.cues)[:64]
        )

    def label_all(self, tweets: Iterable[RawTweet]) -> list[LabeledTweet]:
        return [labeled for tweet in tweets if (labeled := self.label(tweet)) is not None]
