"""The records a batch produces (results, dead letters, weak labels, count events), and the dead
letters that replace records the broker refuses for their size."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tweetpulse.contracts import DeadLetter, LabelCounts, RawTweet, SentimentResult, utcnow
from tweetpulse.processors import dlq, metrics
from tweetpulse.processors.checkpoint import Output
from tweetpulse.processors.classifier import Prediction
from tweetpulse.processors.weak_labels import WeakLabeler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Topics:
    """The names of the topics a worker writes."""

    sentiment: str
    dlq: str
    labeled: str
    count_events: str


class Outputs:
    """Builds a batch's records; ``max_letter_bytes`` bounds the original bytes a dead letter keeps."""

    def __init__(self, topics: Topics, max_letter_bytes: int, weak_labeler: WeakLabeler | None) -> None:
        self.topics = topics
        self.max_letter_bytes = max_letter_bytes
        self.weak_labeler = weak_labeler  # hook (retraining): weak labels go out and are acked with results

    def results(
        self, good: list[tuple[Any, RawTweet]], predictions: list[Prediction], version: str, seconds: float
    ) -> list[SentimentResult]:
        return sentiment_results([tweet for _, tweet in good], predictions, version, seconds)

    def result(self, msg: Any, result: SentimentResult) -> Output:
        return Output(self.topics.sentiment, result.key, result.to_bytes(), msg)

    def dead_letter(self, msg: Any, bad: dlq.BadMessageError, max_bytes: int | None = None) -> DeadLetter:
        """The dead letter of one raw record (:func:`dlq.dead_letter`, the record's bytes bounded)."""
        kept = self.max_letter_bytes if max_bytes is None else max_bytes
        return dlq.dead_letter(bad, msg.topic, msg.partition, msg.offset, msg.key, msg.value, kept)

    def dead_letter_output(self, msg: Any, letter: DeadLetter) -> Output:
        """The DLQ record that carries `letter`, the dead letter of raw record `msg`."""
        return Output(self.topics.dlq, dlq.dead_letter_key(msg.key), letter.to_bytes(), msg)

    def inference_failed(
        self, good: list[tuple[Any, RawTweet]], exc: Exception
    ) -> list[tuple[Any, DeadLetter]]:
        bad = dlq.BadMessageError("inference-error", f"model failed on this batch: {exc}")
        return [(msg, self.dead_letter(msg, bad)) for msg, _ in good]

    def weak_labels(self, tweets: Iterable[RawTweet]) -> list[Output]:
        if self.weak_labeler is None:
            return []
        labels = self.weak_labeler.label_all(tweets)
        return [Output(self.topics.labeled, label.key, label.to_bytes()) for label in labels]

    def count_event(self, increment: LabelCounts) -> Output:
        """Stamped with its window's start, so that the count agent counts it in that window."""
        return Output(
            self.topics.count_events,
            increment.key,
            increment.to_bytes(),
            None,
            increment.window_start.timestamp(),
        )

    def dead_letter_for_refused(self, refused: Output, reason: str, error: str) -> Output | None:
        """The DLQ record that replaces an output too large for its topic (see checkpoint.py): the
        dead letter of its source record; None when there is nothing smaller to send."""
        if refused.topic == self.topics.dlq:  # a dead letter too large: keep no original bytes at all
            if refused.source is None or b'"original_value_b64":""' in refused.value:
                return None
            letter = self.dead_letter(refused.source, dlq.BadMessageError(reason, error), 0)
            return Output(self.topics.dlq, dlq.dead_letter_key(refused.source.key), letter.to_bytes())
        if refused.source is None:  # a count event or weak label: small by construction, so a config issue
            return None
        letter = self.dead_letter(refused.source, dlq.BadMessageError(reason, error))
        return self.dead_letter_output(refused.source, letter)

    def observe(self, results: list[SentimentResult], letters: list[DeadLetter]) -> None:
        """Metrics of a batch's outputs; a log line per dead letter."""
        for result in results:
            metrics.RESULTS_OUT.labels(result.label).inc()
            latency = (result.classified_at - result.ingested_at).total_seconds()
            metrics.END_TO_END_SECONDS.observe(max(latency, 0.0))
        for letter in letters:
            metrics.DEAD_LETTERS.labels(letter.reason).inc()
            log.warning(
                "dead letter",
                extra={
                    "reason": letter.reason,
                    "error": letter.error[:300],
                    "partition": letter.source_partition,
                    "offset": letter.source_offset,
                },
            )


def sentiment_results(
    tweets: list[RawTweet], predictions: list[Prediction], version: str, seconds: float
) -> list[SentimentResult]:
    """The tweets' results; `seconds` is the model time of the batch they were classified in."""
    per_tweet_ms = seconds * 1000 / len(tweets)
    return [
        SentimentResult(
            id=tweet.id,
            text=tweet.text,
            label=prediction.label,
            probabilities=prediction.probabilities,
            model_version=version,
            rule_tags=tweet.rule_tags,
            source=tweet.source,
            true_label=tweet.label,
            ingested_at=tweet.ingested_at,
            classified_at=utcnow(),
            inference_ms=per_tweet_ms,
        )
        for tweet, prediction in zip(tweets, predictions, strict=True)
    ]
