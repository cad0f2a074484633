"""The model a worker serves, and its hot swap from the registry without downtime."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from tweetpulse.contracts import ModelAnnouncement
from tweetpulse.processors import metrics
from tweetpulse.processors.brokers import aiokafka_options
from tweetpulse.processors.classifier import Classifier, load_classifier
from tweetpulse.registry import ModelRegistry
from tweetpulse.settings import Settings

log = logging.getLogger(__name__)


class ServedModel:
    """The classifier in service; `watch` swaps in each new production version (read its
    `classifier` once per batch: a swap takes effect at the next one)."""

    def __init__(self, settings: Settings, classifier: Classifier) -> None:
        self.settings = settings
        self.classifier = classifier
        self.loader = ThreadPoolExecutor(1, thread_name_prefix="model-loader")
        metrics.MODEL.info({"version": classifier.version, "provider": classifier.provider})

    async def watch(self) -> None:
        """Follows the compacted models topic (no consumer group: every worker reads all of it).

        An announcement is only a hint to look: the worker serves what the registry's PRODUCTION
        pointer names, so a forged or stale record can never make it load another version. Nothing
        read here can stop the worker: errors are logged, counted, and the watch starts again.
        """
        backoff = 1.0
        while True:
            try:
                await self._follow_announcements()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("model watch failed; retrying", extra={"error": str(exc), "retry_s": backoff})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)

    async def _follow_announcements(self) -> None:
        # aiokafka (Faust's client, ~0.1 s to import): only a running worker follows announcements
        from aiokafka import AIOKafkaConsumer, TopicPartition

        tp = TopicPartition(self.settings.topics.models, 0)
        consumer = AIOKafkaConsumer(enable_auto_commit=False, **aiokafka_options(self.settings.kafka))
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            announced = False
            while await consumer.position(tp) < end:  # catch up: one look at the registry for all of it
                for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                    announced = _is_announcement(record.value) or announced
            if announced:
                await self.swap_to_production()
            async for record in consumer:
                if _is_announcement(record.value):
                    await self.swap_to_production()
        finally:
            await consumer.stop()

    async def swap_to_production(self) -> bool:
        """Load, verify and warm the registry's production version off the event loop, then serve it from
        the next batch on. Any failure keeps the current model serving (logged, and counted)."""
        loop = asyncio.get_running_loop()
        try:
            new = await loop.run_in_executor(self.loader, self._load_production_if_new)
        except Exception as exc:  # ArtifactError, or anything a broken artifact makes a library raise
            metrics.MODEL_SWAPS.labels("refused").inc()
            log.error(
                "model refused; the current one keeps serving",
                extra={"serving": self.classifier.version, "error": f"{type(exc).__name__}: {exc}"},
            )
            return False
        if new is None:
            return False
        old, self.classifier = self.classifier, new
        metrics.MODEL_SWAPS.labels("swapped").inc()
        metrics.MODEL.info({"version": new.version, "provider": new.provider})
        log.info("model swapped", extra={"from": old.version, "to": new.version})
        return True

    def _load_production_if_new(self) -> Classifier | None:
        registry = ModelRegistry(self.settings.registry.root)
        version = registry.production()
        if version is None or version == self.classifier.version:
            return None
        return load_production(self.settings, version)

    def close(self) -> None:
        self.loader.shutdown(wait=False)


def load_production(settings: Settings, version: str | None = None) -> Classifier:
    """The registry's production model (or `version`), verified, warmed and served as the settings
    say; :class:`ArtifactError` if there is none."""
    c = settings.processor
    artifact = ModelRegistry(settings.registry.root).load(version)
    return load_classifier(artifact, c.provider, c.model_variant, c.intra_op_threads(), c.inference_chunk)


def _is_announcement(value: bytes | None) -> bool:
    try:
        ModelAnnouncement.from_bytes(value or b"")
    except Exception as exc:  # ContractError, or anything a hostile record makes the parser raise
        metrics.MODEL_SWAPS.labels("bad-announcement").inc()
        log.error("bad model announcement ignored", extra={"error": str(exc)[:300]})
        return False
    return True
