"""What the readers of ``tweets.sentiment`` outside the worker (the dashboard feed, the drift monitor,
``tweetpulse watch``) are fuzzed with: tests/strategies.py's records of that topic, with records of
``tweets.sentiment.agg`` (another contract) and tombstones mixed in, and valid results timed near a
given instant, so that the time-windowed state (charts, latency, drift windows) is exercised too.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from tests.strategies import VALID, encode, iso_zones, models, records
from tweetpulse.contracts import ContractError, SentimentResult

READER_EXAMPLES = 150  # per test: a few seconds each on a shared two-core machine


def _timed(record: dict[str, Any], now: datetime, ago_s: int, latency_ms: int, zone: Any) -> dict[str, Any]:
    # Naive values are written as UTC wall time, as Python's utcnow().isoformat() does.
    at = (now - timedelta(seconds=ago_s)).astimezone(zone or UTC).replace(tzinfo=zone)
    ingested = at - timedelta(milliseconds=latency_ms)
    return {**record, "classified_at": at.isoformat(), "ingested_at": ingested.isoformat()}


def recent_results(now: datetime) -> st.SearchStrategy[dict[str, Any]]:
    """Result records classified within the two hours before `now` (a little after it too)."""
    return st.builds(
        _timed,
        VALID["sentiment-result"],
        st.just(now),
        st.integers(-600, 7200),
        st.integers(-(10**6), 10**6),
        iso_zones,  # naive, UTC or any whole-minute offset
    )


def sentiment_values(now: datetime) -> st.SearchStrategy[bytes | None]:
    """Anything a reader of ``tweets.sentiment`` can get."""
    return st.one_of(
        records("sentiment-result"),
        recent_results(now).map(encode),
        records("label-counts"),
        st.none(),  # a tombstone
    )


def valid_results(now: datetime) -> st.SearchStrategy[SentimentResult]:
    """Contract-valid results only, as a reader holds them once parsed."""
    return st.one_of(models("sentiment-result"), recent_results(now).map(encode).map(parses).filter(bool))


def parses(value: bytes | None) -> SentimentResult | None:
    """The result in `value` if it follows the contract, else None."""
    try:
        return SentimentResult.from_bytes(value or b"")
    except ContractError:
        return None
