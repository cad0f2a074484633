"""The Faust worker: micro-batches from ``tweets.raw`` through the ONNX classifier to ``tweets.sentiment``.

The agent parses each micro-batch from ``take_events`` and queues it; a model loop takes everything
queued while the model was busy (continuous batching, up to ``batch_size``), so the model is never
idle while tweets wait and batches grow with the load. Results and dead letters of one batch are
sent while the next is classified. Delivery stays at-least-once: the input events are held (one
extra reference each, so ``take_events`` leaving the loop body does not ack them) until every
output of their batch is acknowledged by the broker, and so are the count events that carry their
label counts (accumulated over batches, see aggregates.py); batches are acked strictly in order
(Faust commits the highest contiguous acked offset). A worker that dies before that leaves the
offsets uncommitted, so the partition's next owner classifies those tweets again.

Its parts: the model in service and its hot swap (models.py), sending with retries and dead letters
(sender.py), the label counts (aggregates.py), the consumer's commit guards (faust_consumer.py) and
the exit deadlines (watchdog.py).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from faust.sensors import Sensor

from tweetpulse.contracts import (
    LABELS,
    MAX_TAG_CHARS,
    DeadLetter,
    RawTweet,
    SentimentResult,
    aggregate_tags,
    utcnow,
)
from tweetpulse.processors import metrics
from tweetpulse.processors.aggregates import PendingCounts, WindowTags, window_start
from tweetpulse.processors.brokers import aiokafka_options, broker_urls, faust_credentials
from tweetpulse.processors.classifier import Classifier, Prediction
from tweetpulse.processors.dlq import BadMessageError, dead_letter, dead_letter_key, parse_raw
from tweetpulse.processors.exits import EXIT_AGENT_CRASHED, fatal
from tweetpulse.processors.faust_consumer import guarded_transport
from tweetpulse.processors.models import ServedModel, load_production
from tweetpulse.processors.sender import Output, OutputSender
from tweetpulse.processors.watchdog import Limits, Watchdog
from tweetpulse.retraining.weak_labels import WeakLabeler
from tweetpulse.settings import ProcessorSettings, Settings

log = logging.getLogger(__name__)

BATCHES_IN_FLIGHT = 4  # classified batches still being sent before the model waits
COUNTS_TICK_S = 0.25  # how often pending label counts are checked for being due


def result_for(tweet: RawTweet, prediction: Prediction, version: str, inference_ms: float) -> SentimentResult:
    return SentimentResult(
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
        inference_ms=inference_ms,
    )


@dataclass
class _Batch:
    """Raw events on their way through the model: the valid tweets and the dead letters."""

    events: list[Any]
    good: list[tuple[Any, RawTweet]]
    letters: list[tuple[Any, DeadLetter]]  # each with its raw message


def parse_events(
    events: list[Any], conf: ProcessorSettings
) -> tuple[list[tuple[Any, RawTweet]], list[tuple[Any, DeadLetter]]]:
    """Valid raw tweets and dead letters for the rest, each with its message, in input order."""
    good: list[tuple[Any, RawTweet]] = []
    letters: list[tuple[Any, DeadLetter]] = []
    for event in events:
        msg = event.message
        try:
            good.append((msg, parse_raw(msg.value, conf.max_message_bytes, conf.max_json_depth)))
        except BadMessageError as bad:
            letters.append((msg, letter_for(msg, bad, conf.dlq_max_value_bytes)))
    return good, letters


def letter_for(msg: Any, bad: BadMessageError, max_value_bytes: int) -> DeadLetter:
    """The dead letter of one raw message (a Faust message)."""
    return dead_letter(bad, msg.topic, msg.partition, msg.offset, msg.key, msg.value, max_value_bytes)


def timed(
    classify: Callable[[list[str]], list[Prediction]], texts: list[str], watchdog: Watchdog
) -> tuple[list[Prediction], float]:
    """Predictions and the seconds they took (runs on the inference thread, watched for a timeout)."""
    call = watchdog.call_started()
    started = time.perf_counter()
    try:
        predictions = classify(texts)
    finally:
        watchdog.call_finished(call)
    return predictions, time.perf_counter() - started


async def run_to_completion(coro: Awaitable[Any]) -> Any:
    """Await `coro`; if the caller is cancelled (worker stopping), finish it first, then re-raise.

    Faust acks the batch's events when the agent leaves its loop body, even by cancellation, so
    the batch in flight must be fully sent before the cancellation propagates.
    """
    task = asyncio.ensure_future(coro)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


class Processor:
    """One worker: the Faust app, its agents, table, web views, and the model being served."""

    def __init__(self, settings: Settings, classifier: Classifier) -> None:
        import faust

        self.settings = settings
        self.conf = conf = settings.processor
        self.model = ServedModel(settings, classifier)
        self.inference = ThreadPoolExecutor(conf.inference_workers, thread_name_prefix="inference")
        self.datadir = conf.datadir or Path(tempfile.mkdtemp(prefix=f"tweetpulse-{conf.app_id}-"))
        self.next_offsets: dict[Any, int] = {}
        self.window_tags = WindowTags(conf.agg_max_tags, timedelta(seconds=conf.agg_expires_s))
        self.pending_counts = PendingCounts(conf.agg_window_s, conf.agg_flush_s)
        self.queue: deque[_Batch] = deque()  # parsed micro-batches waiting for the model
        self.queued = 0  # events in the queue
        self.queue_changed = asyncio.Event()
        self.queue_taken = asyncio.Event()
        self.draining = False
        self.stopping = False  # a stop was requested: nothing waits for being due any more
        self.finishing: deque[asyncio.Future] = deque()  # _finish tasks, oldest first
        self.acking: set[asyncio.Future] = set()  # batches sent, waiting for their counts to be sent
        self.last_acked: asyncio.Future | None = None  # the newest batch's ack task
        self.last_issued: asyncio.Future | None = None  # set once the newest batch's sends are queued
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}"
        self.watchdog = Watchdog(
            Limits(
                conf.inference_timeout_s, conf.stall_timeout_s, conf.shutdown_grace_s, conf.liveness_timeout_s
            )
        )
        self.sender = OutputSender(
            conf.send_timeout_s, self._dead_letter_output, aiokafka_options(settings.kafka)
        )
        self.app = faust.App(
            conf.app_id,
            broker=broker_urls(settings.kafka),
            broker_credentials=faust_credentials(settings.kafka),
            broker_client_id=f"{settings.kafka.client_id}-processor",
            key_serializer="raw",
            value_serializer="raw",  # malformed bytes reach parse_raw and the DLQ, not a codec crash
            processing_guarantee=conf.processing_guarantee,
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=conf.session_timeout_s,
            broker_heartbeat_interval=conf.heartbeat_interval_s,
            broker_rebalance_timeout=conf.rebalance_timeout_s,
            broker_commit_interval=conf.commit_interval_s,
            stream_recovery_delay=conf.recovery_delay_s,
            topic_partitions=settings.topics.partitions,
            topic_replication_factor=settings.topics.replication_factor,
            topic_disable_leader=True,
            store="memory://",
            datadir=str(self.datadir),
            web_enabled=True,
            web_host=conf.web_host,
            web_port=conf.web_port,
            web_bind=conf.web_host,
            producer_acks=-1,
            producer_linger_ms=5,
        )
        if conf.processing_guarantee == "at_least_once":  # exactly_once sends through its transactions
            self.sender.producer = self.app.producer
        count_events = f"{conf.app_id}-label-count-events"
        # Before any topic is declared: the topics' conductor is built on the app's transport.
        transport = guarded_transport([settings.topics.raw, count_events])
        self.app.transport = transport(self.app.conf.broker_consumer, self.app)
        self.raw_topic = self.app.topic(settings.topics.raw)
        self.sentiment_topic = self.app.topic(settings.topics.sentiment)
        self.dlq_topic = self.app.topic(settings.topics.dlq)
        self.agg_topic = self.app.topic(settings.topics.aggregates)
        # Hook (retraining): optional emoticon/emoji weak labels to tweets.labeled; off by default.
        rt = settings.retrain
        self.weak_labeler = WeakLabeler(rt.weak_label_rate) if rt.weak_labels else None
        self.labeled_topic = self.app.topic(settings.topics.labeled)
        self.count_events = self.app.topic(count_events, internal=True)
        self.counts = self.app.Table(
            "label-counts", default=int, help="tweets per tag|label per tumbling window"
        ).tumbling(timedelta(seconds=conf.agg_window_s), expires=timedelta(seconds=conf.agg_expires_s))
        self._wire()
        self.app.sensors.add(_WorkerSensor(self.watchdog, self.send_counts_soon))

    # -- wiring -------------------------------------------------------------------------------

    def _wire(self) -> None:
        app = self.app
        app.agent(self.raw_topic, name="classify")(_exit_on_crash(self._classify_agent))
        app.agent(self.count_events, name="count-labels")(_exit_on_crash(self._count_agent))
        app.task(self.model.watch)
        app.timer(self.conf.lag_interval_s)(self._update_lag)
        app.timer(COUNTS_TICK_S)(self._send_counts_if_due)
        app.page("/livez")(self._live_view)
        app.page("/readyz")(self._ready_view)
        app.page("/metrics")(self._metrics_view)
        app.page("/tweetpulse/status/")(self._status_view)
        app.page("/tweetpulse/counts/")(self._counts_view)
        app.on_partitions_assigned.connect(self._on_assigned)
        app.on_partitions_revoked.connect(self._on_revoked)

    async def _on_assigned(self, sender: Any, assigned: set[Any], **_: Any) -> None:
        self.watchdog.committed()  # a fresh assignment restarts the liveness clock
        self.watchdog.ready = True
        log.info(
            "partitions assigned",
            extra={
                "partitions": self._raw_partitions(assigned),
                "generation": self.app.consumer_generation_id,
            },
        )

    async def _on_revoked(self, sender: Any, revoked: set[Any], **_: Any) -> None:
        log.info("partitions revoked", extra={"partitions": self._raw_partitions(revoked)})

    def _raw_partitions(self, tps: set[Any]) -> list[int]:
        return sorted(tp.partition for tp in tps if tp.topic == self.settings.topics.raw)

    # -- classification -----------------------------------------------------------------------

    async def _classify_agent(self, stream: Any) -> None:
        model_loop = asyncio.ensure_future(self._model_loop(stream))
        try:
            async for events in stream.take_events(self.conf.batch_size, within=self.conf.batch_wait_s):
                await run_to_completion(self.enqueue(events))
        finally:  # stopping or rebalancing: what is queued or in flight lands before we go
            await run_to_completion(self._drain(model_loop))

    async def enqueue(self, events: list[Any]) -> None:
        """Parse one micro-batch and queue it for the model; waits while a full model batch is queued.

        The events are held (not acked) until `_finish` has every output of theirs acknowledged.
        """
        for event in events:
            event.message.incref()  # take_events acks on leaving the loop body; this keeps them
        metrics.MESSAGES_IN.inc(len(events))
        self.watchdog.taken(len(events))
        good, letters = parse_events(events, self.conf)
        self.queue.append(_Batch(events, good, letters))
        self.queued += len(events)
        self.queue_changed.set()
        while self.queued >= self.conf.batch_size:  # back-pressure
            self.queue_taken.clear()
            await self.queue_taken.wait()

    async def _model_loop(self, stream: Any) -> None:
        """Continuous batching: a free model slot takes everything queued (up to batch_size) at once."""
        slots = asyncio.Semaphore(self.conf.inference_workers)
        loop = asyncio.get_running_loop()
        while True:
            if not self.queue:
                if self.draining:
                    return
                self.queue_changed.clear()
                await self.queue_changed.wait()
                continue
            await slots.acquire()
            batch = self._take()
            classifier = self.model.classifier  # one model per batch: a swap takes effect at the next batch
            inference: asyncio.Future | None = None
            if batch.good:
                texts = [tweet.text for _, tweet in batch.good]
                inference = loop.run_in_executor(
                    self.inference, timed, classifier.classify, texts, self.watchdog
                )
                inference.add_done_callback(lambda _: slots.release())
            else:
                slots.release()
            previous_issued, self.last_issued = self.last_issued, loop.create_future()
            finishing = asyncio.ensure_future(
                self._finish(batch, stream, classifier.version, inference, previous_issued, self.last_issued)
            )
            finishing.add_done_callback(_crash_on_error)  # a batch that cannot finish ends the worker
            self.finishing.append(finishing)
            self.last_acked = asyncio.ensure_future(self._ack(batch, stream, finishing, self.last_acked))
            self.acking.add(self.last_acked)
            self.last_acked.add_done_callback(self.acking.discard)
            while self.finishing and self.finishing[0].done():
                self.finishing.popleft()
            while len(self.finishing) > BATCHES_IN_FLIGHT:  # the broker is slow: stop classifying
                await asyncio.wait([self.finishing.popleft()])

    def _take(self) -> _Batch:
        """The queued micro-batches, oldest first, merged up to batch_size events (at least one)."""
        taken = [self.queue.popleft()]
        size = len(taken[0].events)
        while self.queue and size + len(self.queue[0].events) <= self.conf.batch_size:
            size += len(self.queue[0].events)
            taken.append(self.queue.popleft())
        self.queued -= size
        self.queue_taken.set()
        metrics.BATCH_SIZE.observe(size)
        return _Batch(
            [e for b in taken for e in b.events],
            [g for b in taken for g in b.good],
            [letter for b in taken for letter in b.letters],
        )

    async def _drain(self, model_loop: asyncio.Future) -> None:
        self.draining = True
        self.queue_changed.set()
        try:
            await model_loop
            if self.finishing:
                await asyncio.wait(list(self.finishing))
            await self._send_counts()  # every finished batch has added its counts by now
            if self.acking:
                await asyncio.wait(list(self.acking))
        finally:
            self.draining = False

    async def _finish(
        self,
        batch: _Batch,
        stream: Any,
        version: str,
        inference: asyncio.Future | None,
        previous_issued: asyncio.Future | None,
        issued: asyncio.Future,
    ) -> asyncio.Future | None:
        """Results or dead letters for one batch, sent and acknowledged; returns the future of the
        count events that carry its label counts (None when it has none).

        Sends are issued in batch order (after `previous_issued`), so each output partition gets
        results in input order even when two model calls finish out of order.
        """
        try:
            good, letters = batch.good, batch.letters
            results: list[SentimentResult] = []
            if inference is not None:
                try:
                    predictions, seconds = await inference
                except Exception as exc:  # the model itself failed: every tweet becomes a dead letter
                    log.error(
                        "inference failed; batch goes to the DLQ",
                        extra={"batch": len(good), "error": str(exc)},
                    )
                    bad = BadMessageError("inference-error", f"model failed on this batch: {exc}")
                    letters = letters + [
                        (msg, letter_for(msg, bad, self.conf.dlq_max_value_bytes)) for msg, _ in good
                    ]
                else:
                    metrics.INFERENCE_SECONDS.observe(seconds)
                    per_tweet_ms = seconds * 1000 / len(good)
                    results = [
                        result_for(tweet, prediction, version, per_tweet_ms)
                        for (_, tweet), prediction in zip(good, predictions, strict=True)
                    ]
            outputs = [
                Output(self.sentiment_topic, r.key, r.to_bytes(), msg)
                for r, (msg, _) in zip(results, good, strict=False)
            ]
            outputs += [self._letter_output(msg, letter) for msg, letter in letters]
            if self.weak_labeler is not None:  # hook (retraining): sent and acked with the results
                weak = self.weak_labeler.label_all(tweet for _, tweet in good)
                outputs += [Output(self.labeled_topic, label.key, label.to_bytes()) for label in weak]
            if previous_issued is not None:
                await asyncio.wait([previous_issued])
            await self.sender.send_all(outputs, issued)
        finally:
            if not issued.done():  # never leave the next batch waiting
                issued.set_result(None)
        self._record(batch.events, results, letters)
        counted = self.pending_counts.add(_count_keys(good, results), len(results), time.time())
        await self._send_counts_if_due()
        return counted

    async def _ack(
        self, batch: _Batch, stream: Any, finishing: asyncio.Future, previous: asyncio.Future | None
    ) -> None:
        """Acks a batch's events once its outputs and its counts are sent, after the batch before it
        (Faust commits the highest contiguous acked offset). A batch that fails ends the worker."""
        counted = await asyncio.shield(finishing)
        if counted is not None:
            await counted
        if previous is not None:
            await asyncio.wait([previous])
        for event in batch.events:
            await stream.ack(event)
        self.watchdog.finished(len(batch.events))

    def _letter_output(self, msg: Any, letter: DeadLetter) -> Output:
        return Output(self.dlq_topic, dead_letter_key(msg.key), letter.to_bytes(), msg)

    def _dead_letter_output(self, refused: Output, reason: str, error: str) -> Output | None:
        """The dead letter that replaces an output the broker refused for its size (see sender.py)."""
        if refused.topic is self.dlq_topic:  # a dead letter too large: keep no original bytes at all
            if refused.source is None or b'"original_value_b64":""' in refused.value:
                return None
            letter = letter_for(refused.source, BadMessageError(reason, error), 0)
            return Output(self.dlq_topic, dead_letter_key(refused.source.key), letter.to_bytes())
        if refused.source is None:  # an aggregate or weak label: small by construction, so a config issue
            return None
        letter = letter_for(refused.source, BadMessageError(reason, error), self.conf.dlq_max_value_bytes)
        return self._letter_output(refused.source, letter)

    async def _send_counts_if_due(self) -> None:
        # While Faust waits for held events (a rebalance, a stop), counts are sent at once.
        if self.stopping or self.app.rebalancing or self.pending_counts.due(time.time()):
            await self._send_counts()

    def send_counts_soon(self) -> None:
        """Send the pending counts from the worker's loop (safe to call from any thread)."""

        def send() -> None:
            asyncio.ensure_future(self._send_counts()).add_done_callback(_crash_on_error)

        self.app.loop.call_soon_threadsafe(send)

    def stop_requested(self) -> None:
        self.stopping = True
        self.send_counts_soon()

    async def _send_counts(self) -> None:
        """The pending label counts as count events (one per window, tag and label), each stamped with
        its window's start so the count agent counts it in that window."""
        taken = self.pending_counts.take()
        if taken is None:
            return
        windows, sent = taken
        outputs = [
            Output(self.count_events, key.encode(), str(n).encode(), timestamp=window)
            for window, counts in windows.items()
            for key, n in counts.items()
        ]
        await run_to_completion(self.sender.send_all(outputs))  # its tweets wait for it: never half-sent
        sent.set_result(None)

    def _record(
        self, events: list[Any], results: list[SentimentResult], letters: list[tuple[Any, DeadLetter]]
    ) -> None:
        for event in events:
            self.next_offsets[event.message.tp] = event.message.offset + 1
        for result in results:
            metrics.RESULTS_OUT.labels(result.label).inc()
            latency = (result.classified_at - result.ingested_at).total_seconds()
            metrics.END_TO_END_SECONDS.observe(max(latency, 0.0))
        for _, letter in letters:
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

    # -- aggregates -----------------------------------------------------------------------------

    async def _count_agent(self, stream: Any) -> None:
        async for event in stream.events():
            parsed = _count_event(event.key, event.value)
            if parsed is None:  # anyone can write to a topic: a bad record is skipped, never a crash
                metrics.DEAD_LETTERS.labels("bad-count-event").inc()
                log.warning("bad count event skipped", extra={"offset": event.message.offset})
                continue
            start = self._window_start(event.message.timestamp)
            tag, label = self.window_tags.admit(parsed[0], start), parsed[1]
            key = f"{tag}|{label}"
            self.counts[key] += parsed[2]
            update = {
                "tag": tag,
                "label": label,
                "window_start": start.isoformat(),
                "window_end": (start + timedelta(seconds=self.conf.agg_window_s)).isoformat(),
                "count": self.counts[key].current(),
            }
            # Not forced: Faust publishes it before committing the count event's offset.
            await self.agg_topic.send(
                key=f"{key}|{update['window_start']}".encode(), value=json.dumps(update).encode()
            )

    def _window_start(self, timestamp: float) -> datetime:
        return datetime.fromtimestamp(window_start(timestamp, self.conf.agg_window_s), UTC)

    # -- monitoring ---------------------------------------------------------------------------

    async def _update_lag(self) -> None:
        """Consumer lag per assigned raw partition; a failure here must never crash the worker."""
        try:
            self.watchdog.lag = await self._measure_lag()
        except Exception:
            log.warning("could not measure consumer lag", exc_info=True)

    async def _measure_lag(self) -> int:
        consumer = self.app.consumer
        total = 0
        for tp in consumer.assignment():
            if tp.topic != self.settings.topics.raw:
                continue
            position = self.next_offsets.get(tp)
            if position is None:
                position = await consumer.position(tp)
            highwater = consumer.highwater(tp)  # None until the first fetch after an assignment
            if position is not None and highwater is not None:
                lag = max(highwater - position, 0)
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(lag)
                total += lag
        return total

    def status(self) -> dict[str, Any]:
        assigned = self._raw_partitions(self.app.consumer.assignment())
        return {
            "worker": self.worker_name,
            "app_id": self.conf.app_id,
            "model_version": self.model.classifier.version,
            "provider": self.model.classifier.provider,
            "assigned_partitions": assigned,
            "rebalancing": bool(self.app.rebalancing),
            "processed_offsets": {f"{tp.topic}:{tp.partition}": o for tp, o in self.next_offsets.items()},
        }

    async def _status_view(self, request: Any) -> Any:
        return self.app.web.json(self.status())

    def readiness(self) -> str | None:
        """None when ready (a model is loaded and the group assignment finished), else why not.

        A worker the group gave no partition (more workers than partitions) is ready: a spare."""
        if not self.watchdog.ready:
            return "waiting for the consumer group to assign partitions"
        if self.app.rebalancing:
            return "rebalancing"
        return None

    async def _live_view(self, request: Any) -> Any:
        return self._health(self.watchdog.liveness())

    async def _ready_view(self, request: Any) -> Any:
        return self._health(self.readiness())

    def _health(self, problem: str | None) -> Any:
        body = {"ok": problem is None, "model_version": self.model.classifier.version}
        if problem is not None:
            body["problem"] = problem
        return self.app.web.json(body, status=200 if problem is None else 503)

    async def _counts_view(self, request: Any) -> Any:
        rows = []
        for (key, (start, end)), count in sorted(self.counts.table.data.items()):
            tag, label = key.rsplit("|", 1)
            rows.append(
                {
                    "tag": tag,
                    "label": label,
                    "window_start": datetime.fromtimestamp(start, UTC).isoformat(),
                    "window_end": datetime.fromtimestamp(round(end), UTC).isoformat(),
                    "count": count,
                }
            )
        return self.app.web.json({"worker": self.worker_name, "counts": rows})

    async def _metrics_view(self, request: Any) -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return self.app.web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    def close(self) -> None:
        self.inference.shutdown(wait=False)
        self.model.close()
        if self.conf.datadir is None:
            shutil.rmtree(self.datadir, ignore_errors=True)


def _count_keys(good: list[tuple[Any, RawTweet]], results: list[SentimentResult]) -> list[str]:
    """One ``tag|label`` per classified tweet and aggregate tag."""
    return [
        f"{tag}|{result.label}"
        for (_, tweet), result in zip(good, results, strict=False)
        for tag in aggregate_tags(tweet.rule_tags, tweet.text)
    ]


def _count_event(key: bytes | None, value: bytes | None) -> tuple[str, str, int] | None:
    """(tag, label, count) of a count event, or None for a record that is not one."""
    try:
        tag, label = (key or b"").decode().rsplit("|", 1)
        count = int(value or b"")
    except (UnicodeDecodeError, ValueError):
        return None
    if label not in LABELS or not 0 < count <= 1_000_000 or not 0 < len(tag) <= MAX_TAG_CHARS:
        return None
    return tag, label, count


def _exit_on_crash(agent: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    """An agent that raises is a bug: Faust would restart it without the events it held, so the worker
    exits instead and the partitions' next owner reads them again."""

    @functools.wraps(agent)
    async def run(stream: Any) -> None:
        try:
            await agent(stream)
        except Exception as exc:
            log.error("agent crashed", exc_info=exc, extra={"agent": agent.__name__})
            fatal(EXIT_AGENT_CRASHED, f"agent {agent.__name__} crashed: {type(exc).__name__}: {exc}")

    return run


def _crash_on_error(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        exc = task.exception()
        log.error("batch failed", exc_info=exc)
        fatal(EXIT_AGENT_CRASHED, f"a batch failed: {type(exc).__name__}: {exc}")


class _WorkerSensor(Sensor):
    """Tells the watchdog when offsets were committed (liveness: a commit that moved an offset); sends the pending label counts when a
    rebalance starts (Faust waits for every held event to be acked before it revokes; called on the
    consumer's thread)."""

    def __init__(self, watchdog: Watchdog, on_rebalance_start: Callable[[], None]) -> None:
        super().__init__()
        self.watchdog = watchdog
        self.rebalance_started = on_rebalance_start

    def on_commit_initiated(self, consumer: Any) -> dict:
        return dict(consumer._committed_offset)

    def on_commit_completed(self, consumer: Any, state: Any) -> None:
        # Faust reports a commit with nothing to commit as completed too: that is no progress.
        if consumer._committed_offset != state:
            self.watchdog.committed()

    def on_rebalance_start(self, app: Any) -> dict:
        self.rebalance_started()
        return super().on_rebalance_start(app)


def run_worker(settings: Settings, on_ready: Callable[[Processor], None] | None = None) -> int:
    """Start one worker in this process; returns when it stops (SIGINT / SIGTERM)."""
    import faust

    if settings.processor.processing_guarantee == "exactly_once":
        log.warning(
            "exactly_once is experimental: it works with ONE worker only; with several, Faust finds no "
            "transactional producer for results on partitions another worker owns (see README)"
        )

    processor = Processor(settings, load_production(settings))
    if on_ready:
        on_ready(processor)
    watchdog = processor.watchdog

    class Worker(faust.Worker):
        """Faust's worker, with a deadline on every stop: the watchdog ends it when the grace runs out."""

        def _on_sigterm(self) -> None:
            watchdog.stop_requested()
            processor.stop_requested()
            super()._on_sigterm()

        def _on_sigint(self) -> None:
            watchdog.stop_requested()
            processor.stop_requested()
            super()._on_sigint()

    worker = Worker(
        processor.app,
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )

    def beat() -> None:  # the watchdog's proof that the event loop runs
        watchdog.beat()
        worker.loop.call_later(1.0, beat)

    worker.loop.call_soon(beat)
    watchdog.start()
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        processor.close()
    return 0
