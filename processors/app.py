"""The worker: tweets from ``tweets.raw`` through the ONNX classifier to ``tweets.sentiment``.

The topology, top to bottom: the Faust app (web pages, timers, agents; its Kafka I/O is the
worker's own), two channels the consumer fills with whole fetches, two agents (``classify`` and
``count-labels``), the commit timer, a task and the web pages. The work is done by small parts:

- source.py: the consumer thread (cooperative rebalancing) and the records' epochs;
- checkpoint.py: the producer and the commits (exactly_once: one transaction per interval);
- batching.py: continuous batching from the classify agent through the model and out;
- models.py: the model in service and its hot swap from the registry;
- outputs.py: the records a batch produces (results, dead letters, weak labels, count events);
- aggregates.py: the label counts per window and tag, and their totals;
- watchdog.py: the exit deadlines; views.py: health and status.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import faust
from confluent_kafka import KafkaException
from faust.app.base import BootStrategy
from mode import Service

from tweetpulse.kafka import COMPACTED, TopicSpec, create_topics
from tweetpulse.processors.aggregates import WindowTotals, WriteBudget
from tweetpulse.processors.batching import Batcher, run_to_completion
from tweetpulse.processors.brokers import client_spec, verify_login
from tweetpulse.processors.checkpoint import Checkpoint
from tweetpulse.processors.classifier import Classifier
from tweetpulse.processors.exits import EXIT_BROKER_UNAVAILABLE, crashed, fatal
from tweetpulse.processors.models import ServedModel, load_production
from tweetpulse.processors.outputs import Outputs, Topics
from tweetpulse.processors.source import TP, Record, Source
from tweetpulse.processors.views import WorkerViews
from tweetpulse.processors.watchdog import Limits, Watchdog
from tweetpulse.processors.weak_labels import WeakLabeler
from tweetpulse.settings import Settings

log = logging.getLogger(__name__)

FETCHES_QUEUED = 2  # fetches a channel holds ahead of its agent (the batcher holds the rest)


class WithoutKafka(BootStrategy):
    """Faust's app services less its Kafka clients: the worker's consumer and producer are
    confluent-kafka's (source.py, checkpoint.py)."""

    enable_kafka = False


class WorkerApp(faust.App):
    BootStrategy = WithoutKafka

    async def _producer_flush(self, logger: Any) -> None:
        pass  # Faust's producer is never started (see WithoutKafka)


class Worker:
    """One worker process: the Faust app, its topology, and the parts that do the work."""

    def __init__(self, settings: Settings, classifier: Classifier) -> None:
        conf, names = settings.processor, settings.topics
        self.settings = settings
        self.datadir = conf.datadir or Path(tempfile.mkdtemp(prefix=f"tweetpulse-{conf.app_id}-"))
        self.watchdog = Watchdog(
            Limits(
                conf.inference_timeout_s, conf.stall_timeout_s, conf.shutdown_grace_s, conf.liveness_timeout_s
            )
        )
        self.model = ServedModel(settings, classifier)
        self.inference = ThreadPoolExecutor(conf.inference_workers, thread_name_prefix="inference")

        self.app = app = WorkerApp(
            conf.app_id,
            datadir=str(self.datadir),
            web_enabled=True,
            web_host=conf.web_host,
            web_port=conf.web_port,
            web_bind=conf.web_host,
            web_router_enabled=False,  # /router/ and /table/ would expose the app's internals
            web_tables_enabled=False,
            web_stats_enabled=False,
            web_graph_enabled=False,
        )
        self.count_events = f"{conf.app_id}-label-count-events"
        self.changelog = f"{conf.app_id}-label-counts-changelog"
        raw_fetches = app.channel(maxsize=FETCHES_QUEUED)
        count_fetches = app.channel(maxsize=FETCHES_QUEUED)

        weak_labeler = WeakLabeler(settings.retrain.weak_label_rate) if settings.retrain.weak_labels else None
        topics = Topics(names.sentiment, names.dlq, names.labeled, self.count_events)
        self.outputs = Outputs(topics, conf.dlq_max_value_bytes, weak_labeler)
        self.totals = WindowTotals(settings, self.count_events, self.changelog, names.aggregates)
        self.source = Source(settings, names.raw, conf.app_id, _deliver_to(raw_fetches), self)
        self.count_source = Source(
            settings,
            self.count_events,
            f"{conf.app_id}-counts",
            _deliver_to(count_fetches),
            self,
            self.totals.restore,
        )
        self.checkpoint = Checkpoint(
            settings,
            [self.source, self.count_source],
            [names.sentiment, names.dlq, names.labeled, names.aggregates, self.count_events, self.changelog],
            self.outputs.dead_letter_for_refused,
            self._count_events,
            self.watchdog,
        )
        self.batcher = Batcher(conf, self.model, self.inference, self.outputs, self.checkpoint, self.watchdog)
        self.views = WorkerViews(
            app,
            names.raw,
            self.model,
            self.watchdog,
            self.batcher.processed_offsets,
            self.source,
            self.totals,
        )

        @app.agent(raw_fetches, name="classify")
        @exit_on_crash
        async def classify(fetches: Any) -> None:
            async with self.batcher.running() as batcher:
                async for records in fetches:
                    await run_to_completion(batcher.submit(records))

        @app.agent(count_fetches, name="count-labels")
        @exit_on_crash
        async def count_labels(fetches: Any) -> None:
            budget = WriteBudget(conf.agg_write_bytes_per_s)
            async for records in fetches:
                await budget.spend(await self.checkpoint.produce(records, self.totals.add))

        @app.task
        async def consume() -> None:  # once the agents run: a fetch handed to a channel reaches them
            app.flow_control.resume()  # Faust's channels wait for it (its consumer would resume it)
            for source in (self.source, self.count_source):
                source.start(asyncio.get_running_loop())

        app.timer(conf.commit_interval_s)(self.checkpoint.commit)
        app.task(self.model.watch)
        app.timer(conf.lag_interval_s)(self.views.update_lag)
        self.views.register()

    def _count_events(self) -> list[Any]:
        return self.batcher.count_events()

    # -- the consumer's rebalance callbacks (run on the loop; see source.py) ----------------------

    async def assigned(self, tps: list[TP]) -> None:
        self.watchdog.committed()  # a fresh assignment restarts the liveness clock
        self.watchdog.ready = True
        if tps:
            log.info("partitions assigned", extra={"topic": tps[0].topic, "partitions": _numbers(tps)})

    async def revoked(self, tps: list[TP]) -> None:
        """Commit what was produced of them (and of the others) before they move; the rest of their
        records is dropped by their ended epoch."""
        await self.checkpoint.commit()
        self.checkpoint.forget(tps)
        for tp in tps:
            self.batcher.processed_offsets.pop(tp, None)
        if tps:
            log.info("partitions revoked", extra={"topic": tps[0].topic, "partitions": _numbers(tps)})

    async def lost(self, tps: list[TP]) -> None:
        await self.checkpoint.abort(f"partitions lost: {len(tps)} (the group moved them on)")
        for tp in tps:
            self.batcher.processed_offsets.pop(tp, None)

    # -- life -------------------------------------------------------------------------------------

    def data_plane(self) -> Service:
        """The service that starts the producer and stops the consumer and producer (see DataPlane)."""
        return DataPlane(self)

    def stop_requested(self) -> None:
        self.watchdog.stop_requested()

    def close(self) -> None:
        self.inference.shutdown(wait=False)
        self.model.close()
        if self.settings.processor.datadir is None:
            shutil.rmtree(self.datadir, ignore_errors=True)


class DataPlane(Service):
    """The producer before the app starts; the consumer and the producer once the app stopped (its
    agents have produced what they held): leaving the group commits it."""

    def __init__(self, worker: Worker, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.worker = worker

    async def on_start(self) -> None:
        worker, loop = self.worker, asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, create_internal_topics, worker)
            await loop.run_in_executor(None, worker.checkpoint.start)
        except KafkaException as exc:
            servers = worker.settings.kafka.bootstrap_servers
            fatal(
                EXIT_BROKER_UNAVAILABLE,
                f"cannot start on the Kafka cluster at {servers}: {exc.args[0].str()}",
            )

    async def on_stop(self) -> None:
        worker, loop = self.worker, asyncio.get_running_loop()
        await asyncio.gather(
            *(loop.run_in_executor(None, source.close) for source in (worker.source, worker.count_source))
        )
        worker.checkpoint.close()


def _numbers(tps: list[TP]) -> list[int]:
    return sorted(tp.partition for tp in tps)


def _deliver_to(channel: Any) -> Callable[[list[Record]], Awaitable[None]]:
    async def deliver(records: list[Record]) -> None:
        await channel.send(value=records)

    return deliver


def create_internal_topics(worker: Worker) -> None:
    """The count events and their totals' changelog, co-partitioned (the totals of count-events
    partition p are on changelog partition p)."""
    conf, names = worker.settings.processor, worker.settings.topics
    retention = {
        "cleanup.policy": "compact,delete",
        "retention.ms": str(1000 * (conf.agg_expires_s + conf.agg_window_s)),
    }
    create_topics(
        worker.settings,
        [
            TopicSpec(worker.count_events, names.partitions, names.replication_factor, {}),
            TopicSpec(
                worker.changelog, names.partitions, names.replication_factor, {**COMPACTED, **retention}
            ),
        ],
    )


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
    spec = client_spec(settings.kafka)
    if spec.security_protocol != "PLAINTEXT":
        verify_login(spec)  # a refused login ends the start with one line
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
        worker.app,
        worker.data_plane(),
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
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
