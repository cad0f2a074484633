"""The Faust worker: tweets from ``tweets.raw`` through the ONNX classifier to ``tweets.sentiment``.

The topology, top to bottom: the app, its topics and table, two agents (``classify`` and
``count-labels``), a task, two timers and the web pages. The work is done by small parts:

- batching.py: continuous batching from the classify agent through the model, sends and acks;
- models.py: the model in service and its hot swap from the registry;
- outputs.py: the records a batch produces (results, dead letters, weak labels, count events);
- sender.py: sending with retries, and dead letters for records refused for their size;
- aggregates.py: the label counts per window and tag;
- faust_consumer.py, monitor.py: Faust's consumer and monitor, with the worker's commit guards and
  without their per-record costs; watchdog.py: the exit deadlines; views.py: health and status.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

from tweetpulse.contracts import ContractError, LabelCounts
from tweetpulse.processors import metrics
from tweetpulse.processors.aggregates import (
    WINDOW_KEYS,
    WINDOW_TOTALS,
    WriteBudget,
    count_event,
    next_total,
    totals_of,
)
from tweetpulse.processors.batching import Batcher, run_to_completion
from tweetpulse.processors.brokers import aiokafka_options, broker_urls, faust_credentials
from tweetpulse.processors.classifier import Classifier
from tweetpulse.processors.exits import crashed, exit_on_failure
from tweetpulse.processors.faust_consumer import buffers, guarded_transport
from tweetpulse.processors.models import ServedModel, load_production
from tweetpulse.processors.monitor import WorkerMonitor
from tweetpulse.processors.outputs import Outputs, Topics
from tweetpulse.processors.sender import OutputSender
from tweetpulse.processors.views import WorkerViews
from tweetpulse.processors.watchdog import Limits, Watchdog
from tweetpulse.retraining.weak_labels import WeakLabeler
from tweetpulse.settings import Settings

log = logging.getLogger(__name__)

COUNTS_TICK_S = 0.25  # how often pending label counts are checked for being due


class Worker:
    """One worker process: the Faust app, its topology, and the parts that do the work."""

    def __init__(self, settings: Settings, classifier: Classifier) -> None:
        import faust

        conf, names = settings.processor, settings.topics
        self.settings = settings
        self.stopping = False  # a stop was requested: label counts go out at once
        self._sending_counts: asyncio.Task | None = None  # asyncio keeps only weak references to tasks
        self.datadir = conf.datadir or Path(tempfile.mkdtemp(prefix=f"tweetpulse-{conf.app_id}-"))
        self.watchdog = Watchdog(
            Limits(
                conf.inference_timeout_s, conf.stall_timeout_s, conf.shutdown_grace_s, conf.liveness_timeout_s
            )
        )
        self.model = ServedModel(settings, classifier)
        self.inference = ThreadPoolExecutor(conf.inference_workers, thread_name_prefix="inference")

        self.app = app = faust.App(
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
            topic_partitions=names.partitions,
            topic_replication_factor=names.replication_factor,
            topic_disable_leader=True,
            store="memory://",
            datadir=str(self.datadir),
            web_enabled=True,
            web_host=conf.web_host,
            web_port=conf.web_port,
            web_bind=conf.web_host,
            web_router_enabled=False,  # /router/ and /table/ expose the cluster's routing and table contents
            web_tables_enabled=False,
            web_stats_enabled=False,
            web_graph_enabled=False,
            **buffers(conf, names.partitions).faust_settings(),  # bounded in bytes, not messages
            producer_acks=-1,
            producer_linger_ms=5,
            monitor=WorkerMonitor(on_commit=self.watchdog.committed, on_rebalance=self.send_counts_soon),
        )
        count_events_name = f"{conf.app_id}-label-count-events"
        # Before any topic is declared: the topics' conductor is built on the app's transport.
        app.transport = guarded_transport([names.raw, count_events_name])(app.conf.broker_consumer, app)

        raw = app.topic(names.raw)
        count_events = app.topic(count_events_name, internal=True)
        aggregates = app.topic(names.aggregates)
        topics = Topics(
            app.topic(names.sentiment), app.topic(names.dlq), app.topic(names.labeled), count_events
        )
        table = app.Table("label-counts", default=dict, help="label counts of a window, in all and per tag")
        table.key_serializer, table.value_serializer = WINDOW_KEYS, WINDOW_TOTALS  # before first use
        counts = table.tumbling(
            timedelta(seconds=conf.agg_window_s), expires=timedelta(seconds=conf.agg_expires_s)
        )

        weak_labeler = WeakLabeler(settings.retrain.weak_label_rate) if settings.retrain.weak_labels else None
        self.outputs = Outputs(topics, conf.dlq_max_value_bytes, weak_labeler)
        self.sender = OutputSender(
            conf.send_timeout_s, self.outputs.replacement, aiokafka_options(settings.kafka)
        )
        if conf.processing_guarantee == "at_least_once":  # exactly_once sends through its transactions
            self.sender.producer = app.producer
        self.batcher = Batcher(
            conf,
            self.model,
            self.inference,
            self.outputs,
            self.sender,
            self.watchdog,
            urgent=lambda: self.stopping or bool(app.rebalancing),
        )
        self.views = WorkerViews(
            app, names.raw, self.model, self.watchdog, self.batcher.processed_offsets, counts
        )

        @app.agent(raw, name="classify")
        @exit_on_crash
        async def classify(stream: Any) -> None:
            async with self.batcher.running(stream) as batcher:
                async for events in stream.take_events(conf.batch_size, within=conf.batch_wait_s):
                    await run_to_completion(batcher.submit(events))

        @app.agent(count_events, name="count-labels")
        @exit_on_crash
        async def count_labels(stream: Any) -> None:
            budget = WriteBudget(conf.agg_write_bytes_per_s)
            async for event in stream.events():
                window = self._count(event, counts)
                if window is None:
                    continue
                record = window.to_bytes()
                # Not forced: Faust publishes it before committing the count event's offset.
                await aggregates.send(key=window.key, value=record)
                await budget.spend(2 * len(record))  # the total's changelog record and its publication

        app.task(self.model.watch)
        app.timer(COUNTS_TICK_S)(self.batcher.send_counts_if_due)
        app.timer(conf.lag_interval_s)(self.views.update_lag)
        self.views.register()
        app.on_partitions_assigned.connect(self._on_assigned)
        app.on_partitions_revoked.connect(self._on_revoked)

    def _count(self, event: Any, counts: Any) -> LabelCounts | None:
        """The window total after one count event, stored in the table; None for an event that is not
        one (anyone can write to a topic, the table's changelog included): skipped and counted."""
        conf = self.settings.processor
        increment = count_event(event.value, event.message.timestamp, conf.agg_window_s)
        try:
            if increment is None:
                raise ContractError("not a count event of the window its timestamp falls in")
            key = increment.window_start.isoformat()  # the event's timestamp is in this window
            window = next_total(counts[key].current(), increment, conf.agg_window_s, conf.agg_max_tags)
        except ContractError as exc:
            metrics.DEAD_LETTERS.labels("bad-count-event").inc()
            log.warning(
                "bad count event skipped", extra={"offset": event.message.offset, "error": str(exc)[:300]}
            )
            return None
        counts[key] = totals_of(window)
        return window

    async def _on_assigned(self, sender: Any, assigned: set[Any], **_: Any) -> None:
        self.watchdog.committed()  # a fresh assignment restarts the liveness clock
        self.watchdog.ready = True
        partitions = self.views.raw_partitions(assigned)
        log.info(
            "partitions assigned",
            extra={"partitions": partitions, "generation": self.app.consumer_generation_id},
        )

    async def _on_revoked(self, sender: Any, revoked: set[Any], **_: Any) -> None:
        log.info("partitions revoked", extra={"partitions": self.views.raw_partitions(revoked)})

    def send_counts_soon(self) -> None:
        """Send the pending label counts from the worker's loop (safe to call from any thread)."""

        def send() -> None:
            self._sending_counts = self.app.loop.create_task(self.batcher.send_counts())
            self._sending_counts.add_done_callback(exit_on_failure("sending label counts"))

        self.app.loop.call_soon_threadsafe(send)

    def stop_requested(self) -> None:
        self.watchdog.stop_requested()
        self.stopping = True
        self.send_counts_soon()

    def close(self) -> None:
        self.inference.shutdown(wait=False)
        self.model.close()
        if self.settings.processor.datadir is None:
            shutil.rmtree(self.datadir, ignore_errors=True)


def exit_on_crash(agent: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    """An agent that raises is a bug: Faust would restart it without the events it held, so the worker
    exits instead and the partitions' next owner reads them again."""

    @functools.wraps(agent)
    async def run(stream: Any) -> None:
        try:
            await agent(stream)
        except Exception as exc:
            crashed(f"agent {agent.__name__}", exc)

    return run


def run_worker(settings: Settings, on_ready: Callable[[Worker], None] | None = None) -> int:
    """Start one worker in this process; returns when it stops (SIGINT / SIGTERM)."""
    import faust

    if settings.processor.processing_guarantee == "exactly_once":
        log.warning(
            "exactly_once is experimental: it works with ONE worker only; with several, Faust finds no "
            "transactional producer for results on partitions another worker owns (see README)"
        )

    worker = Worker(settings, load_production(settings))
    if on_ready:
        on_ready(worker)

    class FaustWorker(faust.Worker):
        """Faust's worker, with a deadline on every stop: the watchdog ends it when the grace runs out."""

        def _on_sigterm(self) -> None:
            worker.stop_requested()
            super()._on_sigterm()

        def _on_sigint(self) -> None:
            worker.stop_requested()
            super()._on_sigint()

    runner = FaustWorker(
        worker.app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False, override_logging=False
    )

    def beat() -> None:  # the watchdog's proof that the event loop runs
        worker.watchdog.beat()
        runner.loop.call_later(1.0, beat)

    runner.loop.call_soon(beat)
    worker.watchdog.start()
    try:
        runner.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        worker.close()
    return 0
