"""Continuous batching: micro-batches from the classify agent through the model and out, acked in order.

A batch passes four stages, each a small task, strictly in input order:

1. ``submit`` (the agent): parse the micro-batch (dead letters apart) on the parser thread, so that
   no message's bytes cost the event loop (heartbeats, commits) more than a thread switch, and queue
   it; it waits while a full model batch is already queued, which holds the stream back.
2. model: a free model slot (``processor.inference_workers`` threads) takes everything queued, up to
   ``batch_size``: batches grow with the load, and the model never idles while tweets wait.
3. send: waits for the batch's predictions, queues its records in the producer, adds its label
   counts. A batch's records are all queued before the next batch's, so every output partition gets
   results in input order even when two model calls finish out of order. (A record sent again, after
   the producer gave up on it or alone for its size, lands after later batches' records.)
4. deliver, then ack: once the broker acknowledged every record of the batch, and later its count
   event, its events are acked (Faust commits the highest contiguous acked offset).

The events are held (one extra reference each, so ``take_events`` leaving the loop body does not
ack them) until stage 4. A worker that dies before then leaves their offsets uncommitted, so the
partition's next owner classifies those tweets again (at-least-once).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from tweetpulse.contracts import DeadLetter, RawTweet, SentimentResult, aggregate_tags
from tweetpulse.processors import metrics
from tweetpulse.processors.aggregates import PendingCounts
from tweetpulse.processors.classifier import Prediction
from tweetpulse.processors.dlq import BadMessageError, parse_raw
from tweetpulse.processors.exits import exit_on_failure
from tweetpulse.processors.models import ServedModel
from tweetpulse.processors.outputs import Outputs
from tweetpulse.processors.sender import Delivery, Output, OutputSender
from tweetpulse.processors.watchdog import Watchdog
from tweetpulse.settings import ProcessorSettings

log = logging.getLogger(__name__)

BATCHES_IN_FLIGHT = 4  # batches classified and not yet acknowledged by the broker before the model waits


@dataclass
class Batch:
    """Raw events on their way through the model: the valid tweets and the dead letters, each with
    its Faust message."""

    events: list[Any]
    good: list[tuple[Any, RawTweet]]
    letters: list[tuple[Any, DeadLetter]]


def parse_batch(events: list[Any], conf: ProcessorSettings, outputs: Outputs) -> Batch:
    good: list[tuple[Any, RawTweet]] = []
    letters: list[tuple[Any, DeadLetter]] = []
    for event in events:
        msg = event.message
        try:
            good.append((msg, parse_raw(msg.value, conf.max_message_bytes, conf.max_json_depth)))
        except BadMessageError as bad:
            letters.append((msg, outputs.letter(msg, bad)))
    return Batch(events, good, letters)


def timed(
    classify: Callable[[list[str]], list[Prediction]], texts: list[str], watchdog: Watchdog
) -> tuple[list[Prediction], float]:
    """Predictions and the seconds they took (runs on an inference thread, watched for a timeout)."""
    call = watchdog.call_started()
    started = time.perf_counter()
    try:
        predictions = classify(texts)
    finally:
        watchdog.call_finished(call)
    return predictions, time.perf_counter() - started


async def run_to_completion(coro: Coroutine[Any, Any, Any]) -> Any:
    """Await `coro`; if the caller is cancelled (worker stopping), finish it first, then re-raise.

    Faust acks a micro-batch's events when the agent leaves its loop body, even by cancellation, so
    what is being queued or sent must be complete before the cancellation propagates.
    """
    task = asyncio.ensure_future(coro)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True  # the caller, perhaps more than once: `coro` still runs to its end
    if cancelled:
        raise asyncio.CancelledError
    return task.result()


class Batcher:
    """The four stages above for one agent's stream."""

    def __init__(
        self,
        conf: ProcessorSettings,
        model: ServedModel,
        inference: Executor,
        outputs: Outputs,
        sender: OutputSender,
        watchdog: Watchdog,
        urgent: Callable[[], bool],
    ) -> None:
        self.conf = conf
        self.model = model
        self.inference = inference
        self.outputs = outputs
        self.sender = sender
        self.watchdog = watchdog
        self.urgent = urgent  # a rebalance or a stop is waiting for held events: counts go out at once
        self.counts = PendingCounts(conf.agg_window_s, conf.agg_flush_s, conf.agg_max_tags)
        self.processed_offsets: dict[Any, int] = {}  # tp -> next offset to classify (lag, status)
        self.stream: Any = None
        self._waiting: deque[Batch] = deque()  # parsed micro-batches waiting for the model
        self._waiting_events = 0
        self._waiting_changed = asyncio.Event()
        self._room = asyncio.Event()  # set when waiting batches are taken or held ones acked
        self._held_bytes = 0  # raw bytes of the events held from submit to ack
        self._draining = False
        self._to_send: asyncio.Queue[tuple[Batch, str, asyncio.Future | None]] = asyncio.Queue()
        self._to_deliver: asyncio.Queue[tuple[Batch, Delivery, asyncio.Future | None]] = asyncio.Queue()
        self._to_ack: asyncio.Queue[tuple[Batch, asyncio.Future | None]] = asyncio.Queue()
        self._in_flight = asyncio.Semaphore(conf.inference_workers + BATCHES_IN_FLIGHT)
        self._parser: Executor | None = None  # the parser thread, while the stages run

    @asynccontextmanager
    async def running(self, stream: Any) -> AsyncIterator[Batcher]:
        """The stages run while the agent iterates `stream`; on the way out (a stop), everything
        submitted is classified, sent, counted and acked before the agent ends."""
        self.stream = stream
        self._parser = ThreadPoolExecutor(1, thread_name_prefix="parse")  # one: batches stay in order
        model = asyncio.ensure_future(self._model_stage())
        stages = [model] + [
            asyncio.ensure_future(stage())
            for stage in (self._send_stage, self._deliver_stage, self._ack_stage)
        ]
        for task in stages:
            task.add_done_callback(exit_on_failure("a batch stage"))
        try:
            yield self
        finally:
            try:
                await run_to_completion(self._drain(model))
            finally:  # also when the drain is cancelled or fails: no stage outlives the agent
                for task in stages:
                    task.cancel()
                self._parser.shutdown(wait=False)

    async def submit(self, events: list[Any]) -> None:
        """Parse one micro-batch and queue it for the model; waits while a full model batch is queued."""
        for event in events:
            event.message.incref()  # take_events acks on leaving the loop body; this holds them
        metrics.MESSAGES_IN.inc(len(events))
        self.watchdog.taken(len(events))
        await run_to_completion(self._parse_and_queue(events))  # held events are queued, even on a stop
        # Back-pressure: a full model batch waiting, or more raw bytes held than buffer_max_bytes
        # (each held event keeps its record's value until its ack: up to 1 MiB for an oversized one).
        while self._waiting_events >= self.conf.batch_size or self._held_bytes > self.conf.buffer_max_bytes:
            self._room.clear()
            await self._room.wait()

    async def _parse_and_queue(self, events: list[Any]) -> None:
        loop = asyncio.get_running_loop()
        batch = await loop.run_in_executor(self._parser, parse_batch, events, self.conf, self.outputs)
        self._waiting.append(batch)
        self._waiting_events += len(events)
        self._held_bytes += held_bytes(events)
        self._waiting_changed.set()

    async def send_counts_if_due(self) -> None:
        if self.urgent() or self._draining or self.counts.due(time.time()):
            await self.send_counts()

    async def send_counts(self) -> None:
        """The pending label counts as count events, one per window; the batches they count are
        acked once these are acknowledged."""
        taken = self.counts.take()
        if taken is None:
            return
        increments, sent = taken
        count_outputs = [self.outputs.count_event(increment) for increment in increments]
        sending = asyncio.ensure_future(self.sender.send_all(count_outputs))
        # The batches these count are acked once `sent` resolves; it fails with the send (the ack
        # stage then ends the worker), and resolves even when the caller is cancelled meanwhile.
        sending.add_done_callback(functools.partial(_settle, sent))
        await run_to_completion(sending)

    # -- the stages -------------------------------------------------------------------------------

    async def _model_stage(self) -> None:
        slots = asyncio.Semaphore(self.conf.inference_workers)
        loop = asyncio.get_running_loop()
        while True:
            if not self._waiting:
                if self._draining:
                    return
                self._waiting_changed.clear()
                await self._waiting_changed.wait()
                continue
            await self._in_flight.acquire()
            await slots.acquire()
            batch = self._take()
            classifier = self.model.classifier  # one model per batch: a swap takes effect at the next
            inference: asyncio.Future | None = None
            if batch.good:
                texts = [tweet.text for _, tweet in batch.good]
                inference = loop.run_in_executor(
                    self.inference, timed, classifier.classify, texts, self.watchdog
                )
                inference.add_done_callback(lambda _: slots.release())
            else:
                slots.release()
            self._to_send.put_nowait((batch, classifier.version, inference))

    def _take(self) -> Batch:
        """The waiting micro-batches, oldest first, merged up to batch_size events (at least one)."""
        taken = [self._waiting.popleft()]
        size = len(taken[0].events)
        while self._waiting and size + len(self._waiting[0].events) <= self.conf.batch_size:
            size += len(self._waiting[0].events)
            taken.append(self._waiting.popleft())
        self._waiting_events -= size
        self._room.set()
        metrics.BATCH_SIZE.observe(size)
        return Batch(
            [e for b in taken for e in b.events],
            [g for b in taken for g in b.good],
            [letter for b in taken for letter in b.letters],
        )

    async def _send_stage(self) -> None:
        while True:
            batch, version, inference = await self._to_send.get()
            outputs, counted = await self._outputs(batch, version, inference)
            delivery = await run_to_completion(self.sender.queue(outputs))
            self._to_deliver.put_nowait((batch, delivery, counted))
            self._to_send.task_done()
            await self.send_counts_if_due()

    async def _deliver_stage(self) -> None:
        while True:
            batch, delivery, counted = await self._to_deliver.get()
            await run_to_completion(self.sender.delivered(delivery))
            self._in_flight.release()
            self._to_ack.put_nowait((batch, counted))
            self._to_deliver.task_done()

    async def _ack_stage(self) -> None:
        while True:
            batch, counted = await self._to_ack.get()
            if counted is not None:
                await counted
            for event in batch.events:
                await self.stream.ack(event)
            self.watchdog.finished(len(batch.events))
            self._held_bytes -= held_bytes(batch.events)
            self._room.set()
            self._to_ack.task_done()

    async def _outputs(
        self, batch: Batch, version: str, inference: asyncio.Future | None
    ) -> tuple[list[Output], asyncio.Future | None]:
        """A batch's records (results, dead letters, weak labels) and the future of the count event
        that carries its label counts."""
        good, letters = batch.good, batch.letters
        results: list[SentimentResult] = []
        if inference is not None:
            try:
                predictions, seconds = await inference
            except Exception as exc:  # the model itself failed: every tweet becomes a dead letter
                log.error(
                    "inference failed; batch goes to the DLQ", extra={"batch": len(good), "error": str(exc)}
                )
                letters = letters + self.outputs.inference_failed(good, exc)
            else:
                metrics.INFERENCE_SECONDS.observe(seconds)
                results = self.outputs.results(good, predictions, version, seconds)
        for event in batch.events:
            self.processed_offsets[event.message.tp] = event.message.offset + 1
        records = [self.outputs.result(msg, result) for (msg, _), result in zip(good, results, strict=False)]
        records += [self.outputs.dead_letter(msg, letter) for msg, letter in letters]
        records += self.outputs.weak_labels(tweet for _, tweet in good)
        self.outputs.observe(results, [letter for _, letter in letters])
        tweets = (
            (aggregate_tags(t.rule_tags, t.text), r.label) for (_, t), r in zip(good, results, strict=False)
        )
        counted = self.counts.add(tweets, time.time())
        return records, counted

    async def _drain(self, model: asyncio.Future) -> None:
        self._draining = True
        self._waiting_changed.set()
        try:
            await model  # everything waiting is taken
            await self._to_send.join()  # every batch's records are queued and its counts added
            await self.send_counts()
            await self._to_deliver.join()
            await self._to_ack.join()
        finally:
            self._draining = False


def held_bytes(events: list[Any]) -> int:
    return sum(len(event.message.value or b"") for event in events)


def _settle(future: asyncio.Future, task: asyncio.Future) -> None:
    """Resolves `future` as `task` ended."""
    if task.cancelled():
        future.cancel()
    elif task.exception() is not None:
        future.set_exception(task.exception())
    else:
        future.set_result(None)
