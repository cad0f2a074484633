"""Continuous batching: fetches from the classify agent through the model and out, in order.

A batch passes three stages, each a small task, strictly in input order:

1. ``submit`` (the agent): parse the fetch (dead letters apart) on the parser thread, so that no
   message's bytes cost the event loop more than a thread switch, and queue it; it waits while a full
   model batch is already queued or the held bytes pass ``buffer_max_bytes``, which holds the consumer
   thread back (back-pressure).
2. model: a free model slot (``processor.inference_workers`` threads) takes everything queued, up to
   ``batch_size``: batches grow with the load, and the model never idles while tweets wait.
3. produce: waits for the batch's predictions and has the checkpoint produce its records (results,
   dead letters, weak labels) and count its tweets. A batch's records are all produced before the
   next batch's, so every output partition gets results in input order even when two model calls
   finish out of order. They become durable with their input offsets at the next commit
   (checkpoint.py); records of a partition revoked or rewound meanwhile are dropped there.
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
from tweetpulse.processors.checkpoint import Checkpoint, Output
from tweetpulse.processors.classifier import Prediction
from tweetpulse.processors.dlq import BadMessageError, parse_raw
from tweetpulse.processors.exits import exit_on_failure
from tweetpulse.processors.models import ServedModel
from tweetpulse.processors.outputs import Outputs
from tweetpulse.processors.source import Record
from tweetpulse.processors.watchdog import Watchdog
from tweetpulse.settings import ProcessorSettings

log = logging.getLogger(__name__)

BATCHES_IN_FLIGHT = 4  # batches classified and not yet produced before the model waits


@dataclass
class Batch:
    """Raw records on their way through the model: the valid tweets and the dead letters, each with
    its record."""

    records: list[Record]
    good: list[tuple[Record, RawTweet]]
    letters: list[tuple[Record, DeadLetter]]

    def slice(self, start: int, stop: int) -> Batch:
        """The part of the batch whose records are records[start:stop]."""
        if start == 0 and stop >= len(self.records):
            return self
        records = self.records[start:stop]
        kept = {id(record) for record in records}
        good = [g for g in self.good if id(g[0]) in kept]
        return Batch(records, good, [letter for letter in self.letters if id(letter[0]) in kept])


def parse_batch(records: list[Record], conf: ProcessorSettings, outputs: Outputs) -> Batch:
    good: list[tuple[Record, RawTweet]] = []
    letters: list[tuple[Record, DeadLetter]] = []
    for record in records:
        try:
            good.append((record, parse_raw(record.value, conf.max_message_bytes, conf.max_json_depth)))
        except BadMessageError as bad:
            letters.append((record, outputs.dead_letter(record, bad)))
    return Batch(records, good, letters)


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
    """Await `coro`; if the caller is cancelled (worker stopping), finish it first, then re-raise:
    a fetch being queued is queued whole, so a stop never leaves half a batch behind."""
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
    """The three stages above for the classify agent."""

    def __init__(
        self,
        conf: ProcessorSettings,
        model: ServedModel,
        inference: Executor,
        outputs: Outputs,
        checkpoint: Checkpoint,
        watchdog: Watchdog,
    ) -> None:
        self.conf = conf
        self.model = model
        self.inference = inference
        self.outputs = outputs
        self.checkpoint = checkpoint
        self.watchdog = watchdog
        self.counts = PendingCounts(conf.agg_window_s, conf.agg_max_tags)
        self.processed_offsets: dict[Any, int] = {}  # tp -> next offset to classify (lag, status)
        self._waiting: deque[Batch] = deque()  # parsed fetches waiting for the model
        self._waiting_records = 0
        self._waiting_changed = asyncio.Event()
        self._room = asyncio.Event()  # set when waiting batches are taken or held ones produced
        self._held_bytes = 0  # raw bytes of the records held from submit to produce
        self._draining = False
        self._to_send: asyncio.Queue[tuple[Batch, str, asyncio.Future | None]] = asyncio.Queue()
        self._in_flight = asyncio.Semaphore(conf.inference_workers + BATCHES_IN_FLIGHT)
        self._parser: Executor | None = None  # the parser thread, while the stages run

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Batcher]:
        """The stages run while the agent iterates its stream; on the way out (a stop), everything
        submitted is classified and produced before the agent ends."""
        self._parser = ThreadPoolExecutor(1, thread_name_prefix="parse")  # one: batches stay in order
        model = asyncio.ensure_future(self._model_stage())
        stages = [model, asyncio.ensure_future(self._send_stage())]
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

    async def submit(self, records: list[Record]) -> None:
        """Parse one fetch and queue it for the model; waits while a full model batch is queued."""
        metrics.MESSAGES_IN.inc(len(records))
        self.watchdog.taken(len(records))
        await run_to_completion(self._parse_and_queue(records))  # held records are queued, even on a stop
        # Back-pressure: a full model batch waiting, or more raw bytes held than buffer_max_bytes
        # (each held record keeps its value until it is produced: up to 1 MiB for an oversized one).
        while self._waiting_records >= self.conf.batch_size or self._held_bytes > self.conf.buffer_max_bytes:
            self._room.clear()
            await self._room.wait()

    async def _parse_and_queue(self, records: list[Record]) -> None:
        loop = asyncio.get_running_loop()
        batch = await loop.run_in_executor(self._parser, parse_batch, records, self.conf, self.outputs)
        size = self.conf.batch_size  # a fetch larger than a model batch is queued in model batches
        for start in range(0, len(batch.records), size):
            self._waiting.append(batch.slice(start, start + size))
        self._waiting_records += len(records)
        self._held_bytes += held_bytes(records)
        self._waiting_changed.set()

    def count_events(self) -> list[Output]:
        """The label counts of the batches produced since the last commit, one count event per window
        (the checkpoint produces them in that commit)."""
        return [self.outputs.count_event(increment) for increment in self.counts.take()]

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
        """The waiting fetches, oldest first, merged up to batch_size records (at least one fetch)."""
        taken = [self._waiting.popleft()]
        size = len(taken[0].records)
        while self._waiting and size + len(self._waiting[0].records) <= self.conf.batch_size:
            size += len(self._waiting[0].records)
            taken.append(self._waiting.popleft())
        self._waiting_records -= size
        self._room.set()
        metrics.BATCH_SIZE.observe(size)
        return Batch(
            [r for b in taken for r in b.records],
            [g for b in taken for g in b.good],
            [letter for b in taken for letter in b.letters],
        )

    async def _send_stage(self) -> None:
        while True:
            batch, version, inference = await self._to_send.get()
            results, letters = await self._classified(batch, version, inference)
            build = functools.partial(self._outputs, batch, results, letters)
            await run_to_completion(self.checkpoint.produce(batch.records, build))
            self._in_flight.release()
            self.watchdog.finished(len(batch.records))
            self._held_bytes -= held_bytes(batch.records)
            self._room.set()
            self._to_send.task_done()

    async def _classified(
        self, batch: Batch, version: str, inference: asyncio.Future | None
    ) -> tuple[list[SentimentResult], list[tuple[Record, DeadLetter]]]:
        """A batch's results (one per valid tweet) and dead letters."""
        good, letters = batch.good, batch.letters
        if inference is None:
            return [], letters
        try:
            predictions, seconds = await inference
        except Exception as exc:  # the model itself failed: every tweet becomes a dead letter
            log.error(
                "inference failed; batch goes to the DLQ", extra={"batch": len(good), "error": str(exc)}
            )
            return [], letters + self.outputs.inference_failed(good, exc)
        metrics.INFERENCE_SECONDS.observe(seconds)
        return self.outputs.results(good, predictions, version, seconds), letters

    def _outputs(
        self,
        batch: Batch,
        results: list[SentimentResult],
        letters: list[tuple[Record, DeadLetter]],
        live: list[Record],
    ) -> list[Output]:
        """The records of a batch's `live` records (results, dead letters, weak labels); their tweets
        are counted (runs under the checkpoint's lock)."""
        good = list(zip(batch.good, results, strict=False))  # no results: the model failed
        if len(live) < len(batch.records):  # some partitions were revoked or rewound meanwhile
            kept = {id(record) for record in live}
            good = [g for g in good if id(g[0][0]) in kept]
            letters = [letter for letter in letters if id(letter[0]) in kept]
        for record in live:
            self.processed_offsets[record.tp] = record.offset + 1
        records = [self.outputs.result(record, result) for (record, _), result in good]
        records += [self.outputs.dead_letter_output(record, letter) for record, letter in letters]
        records += self.outputs.weak_labels(tweet for (_, tweet), _ in good)
        self.outputs.observe([result for _, result in good], [letter for _, letter in letters])
        self.counts.add(((aggregate_tags(t.rule_tags, t.text), r.label) for (_, t), r in good), time.time())
        return records

    async def _drain(self, model: asyncio.Future) -> None:
        self._draining = True
        self._waiting_changed.set()
        try:
            await model  # everything waiting is taken
            await self._to_send.join()  # every batch's records are produced and its tweets counted
        finally:
            self._draining = False


def held_bytes(records: list[Record]) -> int:
    return sum(len(record.value or b"") for record in records)
