"""Sending a batch's outputs: every record lands, becomes a dead letter, or the worker ends loudly.

- Transient errors (broker down, leader moving, timeouts) retry the failed records with backoff until
  ``processor.send_timeout_s``; then the worker exits (:data:`EXIT_BROKER_UNAVAILABLE`) with its
  offsets uncommitted, so another worker takes over.
- A record the broker refuses for its size is first re-sent alone, by a producer of its own that sends
  one record per request (a refused *batch* of the shared producer may hold several small records, and
  other batches keep adding to it); if it is refused alone, it is replaced by a dead letter of its source message (a
  dead letter keeps at most ``dlq_max_value_bytes`` of the original, so it fits). This is a property of
  the message, so dead-lettering it keeps every worker that inherits the partition from crash-looping.
- Refusals no retry can fix (topic missing, not authorized) end the worker with
  :data:`EXIT_MISCONFIGURED` and a message that says what to fix.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tweetpulse.processors import metrics
from tweetpulse.processors.exits import EXIT_BROKER_UNAVAILABLE, EXIT_MISCONFIGURED, fatal

log = logging.getLogger(__name__)

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 10.0
TOO_LARGE = ("MessageSizeTooLargeError", "RecordTooLargeError", "RecordListTooLargeError")
MISCONFIGURED = {
    "TopicAuthorizationFailedError": "grant this worker's principal WRITE on the topic",
    "ClusterAuthorizationFailedError": "grant this worker's principal the cluster permissions it needs",
    "TransactionalIdAuthorizationFailed": "grant this worker's principal access to its transactional id",
    "InvalidTopicError": "fix the topic name in the settings (TWEETPULSE_TOPICS__*)",
    "UnknownTopicOrPartitionError": "create the topic (`tweetpulse topics create`) or fix its name",
}


@dataclass(frozen=True)
class Output:
    """One record to produce; `source` is the raw message it came from (for its dead letter)."""

    topic: Any  # a Faust topic
    key: bytes | None
    value: bytes
    source: Any = None
    timestamp: float | None = None  # epoch seconds; None: the time it is sent


@dataclass
class Delivery:
    """Outputs queued in the producer, each with the future of its acknowledgement, and those the
    producer refused before queueing them."""

    queued: list[tuple[Output, Any]]
    refused: list[tuple[Output, Exception]]


class OutputSender:
    """Queues lists of outputs in the producer, then waits for every acknowledgement (at-least-once).

    The two steps are apart so that a caller can queue batch after batch in order (each output
    partition gets them in input order) while earlier ones are still being acknowledged. A record
    sent again lands after the records queued since (at-least-once, keyed by tweet id)."""

    def __init__(
        self,
        send_timeout_s: float,
        dead_letter_for: Callable[[Output, str, str], Output | None],
        client_options: dict[str, Any],
        producer: Any = None,
    ) -> None:
        self.send_timeout_s = send_timeout_s
        self.client_options = client_options  # aiokafka options of the one-record-at-a-time producer
        # (refused output, reason, error) -> its dead letter; None when it cannot get any smaller
        self.dead_letter_for = dead_letter_for
        # Faust's transport producer, a thin layer over aiokafka's send: a fifth of what topic.send
        # costs per record (benchmarks/faust_event_cost.py). None: topic.send, which exactly_once
        # needs (it picks the transaction's producer).
        self.producer = producer

    async def send_all(self, outputs: list[Output]) -> None:
        """Queue `outputs` and return once the broker acknowledged each one or its dead letter."""
        await self.delivered(await self.queue(outputs))

    async def queue(self, outputs: list[Output]) -> Delivery:
        """Queue every output in the producer, in order."""
        delivery = Delivery([], [])
        for output in outputs:
            try:
                delivery.queued.append((output, await self._queue(output)))
            except Exception as exc:  # refused before it was queued (size, metadata timeout)
                delivery.refused.append((output, exc))
        return delivery

    async def delivered(self, delivery: Delivery) -> None:
        """Wait until the broker acknowledged each output of `delivery` or its dead letter; transient
        failures are sent again with backoff for ``send_timeout_s`` from the first one seen here (a
        delivery that waited behind another's retries still gets its own)."""
        backoff = BACKOFF_START_S
        failed = await self._failures(delivery)
        deadline = time.monotonic() + self.send_timeout_s
        while failed:
            too_large = [(o, e) for o, e in failed if type(e).__name__ in TOO_LARGE]
            others = [(o, e) for o, e in failed if type(e).__name__ not in TOO_LARGE]
            self._refuse_if_misconfigured(others, final=time.monotonic() >= deadline)
            metrics.SEND_RETRIES.inc()
            retry = [o for o, _ in others] + await self._alone_or_dead_letter(too_large)
            if others:
                log.warning(
                    "sending failed; retrying",
                    extra={"outputs": len(others), "error": _describe(others[0][1]), "backoff_s": backoff},
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
            failed = await self._failures(await self.queue(retry))

    @staticmethod
    async def _failures(delivery: Delivery) -> list[tuple[Output, Exception]]:
        acks = await asyncio.gather(*(f for _, f in delivery.queued), return_exceptions=True)
        failed = [(o, a) for (o, _), a in zip(delivery.queued, acks, strict=True) if isinstance(a, Exception)]
        return delivery.refused + failed

    async def _queue(self, output: Output) -> Any:
        """Queues one record in the producer; returns the future of its acknowledgement."""
        if self.producer is None:
            return await output.topic.send(
                key=output.key, value=output.value, timestamp=output.timestamp, force=True
            )
        topic = output.topic.get_topic_name()
        return await self.producer.send(topic, output.key, output.value, None, output.timestamp, None)

    async def _alone_or_dead_letter(self, too_large: list[tuple[Output, Exception]]) -> list[Output]:
        """Re-send each refused record in a request of its own; those refused alone become dead letters
        (returned, to be sent). A record that is delivered alone counts as sent (order across batches is
        not kept for it: at-least-once, keyed by tweet id)."""
        if not too_large:
            return []
        from aiokafka import AIOKafkaProducer

        letters = []
        solo = AIOKafkaProducer(acks="all", linger_ms=0, **self.client_options)
        await solo.start()
        try:
            for output, _ in too_large:
                topic = output.topic.get_topic_name()
                try:
                    stamp = None if output.timestamp is None else int(output.timestamp * 1000)
                    await solo.send_and_wait(topic, output.value, key=output.key, timestamp_ms=stamp)
                except Exception as alone:
                    if type(alone).__name__ not in TOO_LARGE:
                        letters.append(output)  # something else went wrong: the normal retry handles it
                        continue
                    letters.append(self._letter_or_exit(output, alone))
        finally:
            await solo.stop()
        return letters

    def _letter_or_exit(self, output: Output, exc: BaseException) -> Output:
        """The dead letter that replaces `output`; ends the worker when there is none smaller."""
        topic = output.topic.get_topic_name()
        log.error(
            "record refused as too large; dead-lettering its source",
            extra={"topic": topic, "bytes": len(output.value)},
        )
        letter = self.dead_letter_for(output, "output-too-large", _describe(exc))
        if letter is None:
            fatal(
                EXIT_MISCONFIGURED,
                f"topic {topic} refuses even a {len(output.value)}-byte record; raise its max.message.bytes",
                topic=topic,
            )
        return letter

    def _refuse_if_misconfigured(self, failed: list[tuple[Output, Exception]], final: bool) -> None:
        for output, exc in failed:
            fix = MISCONFIGURED.get(type(exc).__name__)
            topic = output.topic.get_topic_name()
            # An unknown topic can be metadata catching up; anything else is final at once.
            if fix and (final or type(exc).__name__ != "UnknownTopicOrPartitionError"):
                fatal(
                    EXIT_MISCONFIGURED, f"cannot write to topic {topic}: {_describe(exc)}; {fix}", topic=topic
                )
        if failed and final:
            fatal(
                EXIT_BROKER_UNAVAILABLE,
                f"outputs not accepted for {self.send_timeout_s:g} s ({_describe(failed[0][1])}); exiting so "
                "another worker takes over (offsets stay uncommitted: nothing is lost)",
            )


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
