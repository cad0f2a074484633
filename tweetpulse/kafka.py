"""Kafka helpers on confluent-kafka: admin (topics) and client configs built from the settings."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from tweetpulse.settings import Settings

log = logging.getLogger(__name__)

# librdkafka's own log lines go to this logger (through the project's redacting handler) instead of
# raw to stderr: an unreachable broker would otherwise print a "Connect ... failed" line every ~50 ms.
# Producer and Consumer pass them on from poll()/flush(); AdminClient only from admin.poll().
LIBRDKAFKA_LOGGER = "librdkafka"

COMPACTED = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01", "segment.ms": "60000"}

# Admin metadata waits are cut into steps of this, with admin.poll() between them: the only place an
# AdminClient serves its error_cb (a refused login) and its logs.
ADMIN_STEP_S = 0.5


class KafkaFatalError(KafkaException):
    """Raised from a client's poll()/flush()/consume() by the ``error_cb`` of the configs built here: the
    broker refused the login or the TLS certificate (librdkafka would retry that until a timeout, minutes
    later), or librdkafka reports a fatal error (the client cannot go on). ``args[0]`` is a KafkaError
    whose ``str()`` is one line naming the setting to check, without any secret."""


# librdkafka's text after "BROKER/NODE: ", its own "(after Nms in state X)" dropped.
_ERROR_TEXT = re.compile(
    r"^(?:\w+://)?(?P<broker>[^/\s]+)/\S*: (?P<reason>.*?)(?: \(after \d+ms in state \w+\))?$"
)
# Failures that no retry mends: authentication (SASL) errors, and a TLS certificate not trusted.
_FINAL_TEXTS = ("SASL authentication error", "mechanism handshake failed", "certificate verify failed")


def refusal_message(err: KafkaError, conf: Mapping[str, Any]) -> str | None:
    """The one-line message for an error librdkafka would retry in vain (a refused SASL login, an
    untrusted broker certificate), or None for any other error. ``conf``: the client's config, for
    the user name, mechanism and protocol it names (never the password)."""
    code, text = err.code(), " ".join((err.str() or "").split())
    final_tls = code == KafkaError._SSL and "certificate verify failed" in text
    if not final_tls and code != KafkaError._AUTHENTICATION:
        return None  # other TLS errors (a connection cut short, say) included: a reconnect may mend them
    match = _ERROR_TEXT.match(text)
    broker, reason = (match["broker"], match["reason"]) if match else ("the broker", text)
    if final_tls:
        return (
            f"the TLS certificate of {broker} is not trusted (certificate verify failed): "
            "check kafka.ssl_ca_location (and the host names the broker certificate holds)"
        )
    mechanism = conf.get("sasl.mechanism") or conf.get("sasl.mechanisms") or "GSSAPI"
    user = conf.get("sasl.username")
    login = f"the SASL {mechanism} login" + (f" of user {user!r}" if user else "")
    reason = reason.removeprefix("SASL authentication error: ")
    if "Unsupported SASL mechanism" in reason:
        return (
            f"authentication failed: {broker} does not offer SASL mechanism {mechanism} ({reason}): "
            "check kafka.sasl_mechanism"
        )
    if "not valid in current SASL state" in reason:
        return (
            f"authentication failed: {broker} does not take a SASL login ({reason.rstrip(': ')}): "
            f"check kafka.security_protocol ({conf.get('security.protocol')}) against the broker's listener"
        )
    hint = (
        "kafka.sasl_username / kafka.sasl_password"
        if "credentials" in reason
        else "the kafka.sasl_* settings"
    )
    return f"authentication failed: {broker} refused {login} ({reason}): check {hint}"


def error_callback(conf: Mapping[str, Any]) -> Callable[[KafkaError], None]:
    """A librdkafka ``error_cb`` for a client built from ``conf``: a refused login or certificate, or a
    fatal error, raises KafkaFatalError (confluent-kafka re-raises it from the poll()/flush() that
    served the callback); any other error is transient (librdkafka retries it) and only logged."""

    def on_error(err: KafkaError) -> None:
        message = refusal_message(err, conf)
        if message is not None:
            raise KafkaFatalError(KafkaError(err.code(), message, fatal=True))
        if err.fatal():
            raise KafkaFatalError(err)
        client_logger().debug("client error: %s (%s)", err.str(), err.name())

    return on_error


def with_error_callback(conf: dict[str, Any]) -> dict[str, Any]:
    """``conf`` with an ``error_cb`` from :func:`error_callback`, unless it sets one of its own."""
    return conf if "error_cb" in conf else {**conf, "error_cb": error_callback(conf)}


class _FinalFailures(logging.Filter):
    """Drops librdkafka's FAIL log lines for the failures error_cb raises as KafkaFatalError: the
    exception's one line says the same, and a refused login would log it on every retry."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if len(args) != 3 or args[0] != "FAIL":  # confluent-kafka logs ("%s [%s] %s", fac, name, text)
            return True
        return not any(final in str(args[2]) for final in _FINAL_TEXTS)


_FINAL_FAILURES = _FinalFailures()


@dataclass(frozen=True)
class TopicSpec:
    """A topic's partitions, replication factor and non-default configs: what :func:`create_topics`
    creates and what :func:`describe_topics` reads back."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]


def pipeline_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic the pipeline uses, with the configured partition count and replication."""
    t = settings.topics
    spec = lambda name, parts, cfg=None: TopicSpec(name, parts, t.replication_factor, cfg or {})  # noqa: E731
    return [
        spec(t.raw, t.partitions),
        spec(t.sentiment, t.partitions),
        spec(t.dlq, max(1, t.partitions // 2)),
        spec(t.aggregates, max(1, t.partitions // 2)),
        spec(t.models, 1, COMPACTED),  # one partition: every worker reads the whole announcement log
        spec(t.labeled, max(1, t.partitions // 2)),
        spec(t.drift, 1),  # rare events; one partition keeps them in order
    ]


def client_logger() -> logging.Logger:
    """The logger confluent-kafka clients log to (their ``logger`` config key)."""
    logger = logging.getLogger(LIBRDKAFKA_LOGGER)
    if _FINAL_FAILURES not in logger.filters:
        logger.addFilter(_FINAL_FAILURES)
    return logger


class _DebugLogger(logging.LoggerAdapter):
    """Logs every record at DEBUG: for the AdminClient, whose logs (a "Connect ... failed" on each
    retry) :func:`cluster_metadata` serves only while it waits for an answer it reports itself."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(logging.DEBUG, msg, *args, **kwargs)


def admin_client(settings: Settings) -> AdminClient:
    """An AdminClient with the ``error_cb`` of :func:`error_callback`; it fires from ``admin.poll()``
    only, which :func:`cluster_metadata` serves while it waits."""
    conf = with_error_callback(settings.kafka.confluent_config())
    return AdminClient(conf, logger=_DebugLogger(client_logger()))


# list_topics() errors that mean "no broker answered yet": waited on until the deadline.
_METADATA_WAITS = (KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN)


def cluster_metadata(admin: AdminClient, timeout: float) -> Any:
    """``admin.list_topics()`` within ``timeout`` s, in short waits with ``admin.poll()`` between them so
    that a refused login raises KafkaFatalError at once instead of a "Broker transport failure" when
    the whole timeout has passed."""
    deadline = time.monotonic() + timeout
    while True:
        admin.poll(0)
        remaining = deadline - time.monotonic()
        try:
            return admin.list_topics(timeout=max(0.001, min(ADMIN_STEP_S, remaining)))
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if not isinstance(error, KafkaError) or error.code() not in _METADATA_WAITS:
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                admin.poll(0)  # a refusal that came during the last wait wins over the timeout
                raise
            admin.poll(min(ADMIN_STEP_S, remaining))


def create_topics(
    settings: Settings, specs: list[TopicSpec] | None = None, timeout: float = 30.0
) -> dict[str, str]:
    """Create missing topics; existing ones are left as they are. Returns name -> 'created'|'exists'."""
    specs = specs if specs is not None else pipeline_topics(settings)
    admin = admin_client(settings)
    existing = set(cluster_metadata(admin, timeout).topics)
    outcome = {s.name: "exists" for s in specs if s.name in existing}
    new = [
        NewTopic(
            s.name, num_partitions=s.partitions, replication_factor=s.replication_factor, config=s.config
        )
        for s in specs
        if s.name not in existing
    ]
    if new:
        for name, future in admin.create_topics(
            new, operation_timeout=timeout, request_timeout=timeout
        ).items():
            try:
                future.result()
                outcome[name] = "created"
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # a concurrent creator won the race
                    raise
                outcome[name] = "exists"
            log.info("topic %s", outcome[name], extra={"topic": name})
    return outcome


def list_topics(settings: Settings, timeout: float = 10.0) -> list[str]:
    metadata = cluster_metadata(admin_client(settings), timeout)
    return sorted(name for name in metadata.topics if not name.startswith("__"))


def describe_topics(settings: Settings, names: list[str], timeout: float = 10.0) -> list[TopicSpec]:
    admin = admin_client(settings)
    metadata = cluster_metadata(admin, timeout)
    missing = [n for n in names if n not in metadata.topics]
    if missing:
        raise KeyError(f"no such topic: {', '.join(missing)}")
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in names]
    configs = {
        r.name: f.result() for r, f in admin.describe_configs(resources, request_timeout=timeout).items()
    }
    infos = []
    for name in names:
        partitions = metadata.topics[name].partitions
        replicas = len(next(iter(partitions.values())).replicas) if partitions else 0
        non_default = {
            k: v.value for k, v in configs[name].items() if not v.is_default and v.value is not None
        }
        infos.append(TopicSpec(name, len(partitions), replicas, non_default))
    return infos


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Durable, throughput-tuned producer defaults; settings.kafka.extra and overrides win. Holds
    ``logger`` (librdkafka's logs through Python logging), which confluent-kafka takes from the dict,
    and ``error_cb`` (:func:`error_callback`: a refused login raises KafkaFatalError from poll()/flush())."""
    base = {
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 20,
        "batch.size": 256 * 1024,
        "queue.buffering.max.messages": 500_000,
        "logger": client_logger(),
    }
    conf = settings.kafka.confluent_config()
    return with_error_callback({**base, **conf, **overrides})


def consumer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """A confluent-kafka Consumer config: the settings' and ``overrides``, with librdkafka's logs
    through Python logging (``logger``) and ``error_cb`` (:func:`error_callback`: a refused login
    raises KafkaFatalError from poll()/consume())."""
    return with_error_callback({**settings.kafka.confluent_config(**overrides), "logger": client_logger()})
