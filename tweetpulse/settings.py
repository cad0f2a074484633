"""One typed settings object for every role.

Values come from, highest priority first: keyword arguments, environment variables
(``TWEETPULSE_`` prefix, ``__`` between nested names, e.g. ``TWEETPULSE_KAFKA__BOOTSTRAP_SERVERS``),
a TOML config file (``TWEETPULSE_CONFIG`` or ``--config``), then the defaults below.
"""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import pydantic_settings
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_ENV = "TWEETPULSE_CONFIG"


class SettingsError(ValueError):
    """A setting is invalid; the message names the field."""


class KafkaSettings(BaseModel):
    """How every role connects to Kafka. ``extra`` is passed through to confluent-kafka as is; the Faust
    processor derives its options from ``confluent_config()`` (processors/brokers.py)."""

    model_config = ConfigDict(extra="forbid")

    bootstrap_servers: str = Field("127.0.0.1:9092", min_length=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    client_id: str = "tweetpulse"
    extra: dict[str, str | int | float | bool] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism is None:
                raise ValueError("kafka.sasl_mechanism is required when security_protocol is SASL_*")
            if self.sasl_mechanism != "OAUTHBEARER" and not (self.sasl_username and self.sasl_password):
                raise ValueError("kafka.sasl_username and kafka.sasl_password are required for SASL")
        return self

    def confluent_config(self, **overrides: Any) -> dict[str, Any]:
        """A confluent-kafka (librdkafka) config dict; ``overrides`` win over ``extra``."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
            "client.id": self.client_id,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        for key, value in {
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
        }.items():
            if value is not None:
                conf[key] = str(value)
        if self.ssl_key_password:
            conf["ssl.key.password"] = self.ssl_key_password.get_secret_value()
        conf.update(self.extra)
        conf.update(overrides)
        return conf

    def secrets(self) -> list[str]:
        """Secret values, for log redaction: the typed ones and every ``extra`` value whose librdkafka
        key names a secret (``sasl.password``, ``ssl.key.pem``, ``sasl.oauthbearer.client.secret``...)."""
        typed = [s.get_secret_value() for s in (self.sasl_password, self.ssl_key_password) if s]
        # credentials: passwords, client secrets, PEM private keys, the OAUTHBEARER config string
        parts = ("password", "secret", "passphrase", "key.pem", "private.key", "oauthbearer.config")
        extra = [str(v) for k, v in self.extra.items() if any(p in k.lower() for p in parts)]
        return typed + [v for v in extra if v]


class TopicSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    raw: str = "tweets.raw"
    sentiment: str = "tweets.sentiment"
    dlq: str = "tweets.dlq"
    aggregates: str = "tweets.sentiment.agg"
    models: str = "tweetpulse.models"
    labeled: str = "tweets.labeled"  # human feedback and weak labels, for retraining
    drift: str = "tweets.drift"  # drift events that can trigger a retrain
    partitions: int = Field(6, ge=1, le=10_000)
    replication_factor: int = Field(1, ge=1, le=32)


class RegistrySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: Path = (
        Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "tweetpulse" / "models"
    )


def _bearer_token_from_env() -> str | None:
    """The conventional X API token variables, used when TWEETPULSE_TWITTER__BEARER_TOKEN is unset."""
    return os.environ.get("X_BEARER_TOKEN") or os.environ.get("TWITTER_BEARER_TOKEN") or None


class TwitterSettings(BaseModel):
    """The X API producers (``tweetpulse produce twitter|search``). Backoffs follow X's reconnect guide."""

    model_config = ConfigDict(extra="forbid")

    bearer_token: SecretStr | None = Field(default_factory=_bearer_token_from_env, validate_default=True)
    api_base_url: str | None = Field(
        None, pattern=r"^https?://", description="None: tweepy's api.twitter.com"
    )
    rules: list[str] = Field(default_factory=list, description="filtered-stream rules, 'VALUE:TAG' each")
    keepalive_timeout_s: float = Field(25.0, gt=0, description="X sends a keep-alive every 20 s")
    dedupe_window: int = Field(
        100_000, ge=1, le=1_000_000, description="recent tweet ids remembered to drop replays (~150 B each)"
    )
    network_backoff_step_s: float = Field(0.25, gt=0)
    network_backoff_max_s: float = Field(16.0, gt=0)
    http_backoff_start_s: float = Field(5.0, gt=0)
    http_backoff_max_s: float = Field(320.0, gt=0)
    rate_limit_backoff_start_s: float = Field(60.0, gt=0)
    rate_limit_wait_max_s: float = Field(900.0, gt=0)
    search_interval_s: float = Field(15.0, gt=0)
    search_max_results: int = Field(100, ge=10, le=100)
    search_max_pages: int = Field(
        10, ge=1, le=1_000, description="next_token pages read per poll; older matches past them are skipped"
    )


class DashboardSettings(BaseModel):
    """The live dashboard (``tweetpulse dashboard``): where it listens and what it keeps."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8088, ge=1, le=65_535)
    processor_group: str | None = Field(None, min_length=1)  # lag is shown for it; None: processor.app_id
    replay_minutes: int = Field(0, ge=0, le=1_440)  # 0: start at the end of the sentiment topic
    window_minutes: int = Field(60, ge=1, le=1_440)  # per-minute buckets kept
    latest_tweets: int = Field(50, ge=1, le=1_000)
    max_tags: int = Field(12, ge=1, le=100)  # tags shown; at most 50x that many are tracked
    lag_interval_s: float = Field(5.0, gt=0, le=3_600)
    push_interval_s: float = Field(1.0, gt=0, le=60)
    max_clients: int = Field(100, ge=1, le=10_000)  # open event streams; more get 503
    # Host header names answered besides loopback names and the bound address (DNS rebinding guard);
    # "*" answers any Host (behind a proxy that checks it). Env: a JSON list.
    allowed_hosts: list[str] = Field(default_factory=list, max_length=1_000)

    @model_validator(mode="after")
    def _host_names(self) -> DashboardSettings:
        """Allowed hosts as the Host check compares them: lower case, IPv6 without brackets, no port."""
        names = [h.strip().lower().removeprefix("[").removesuffix("]") for h in self.allowed_hosts]
        bad = [h for h in names if not h or any(c.isspace() or c in "/@" for c in h)]
        if bad:
            raise ValueError(f"dashboard.allowed_hosts: {bad[0]!r} is not a host name")
        self.allowed_hosts = names
        return self


class ProcessorSettings(BaseModel):
    """The Faust classification workers (``tweetpulse process``). The app id is the consumer group."""

    model_config = ConfigDict(extra="forbid")

    app_id: str = Field("tweetpulse-processor", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    batch_size: int = Field(128, ge=1, le=10_000)  # most tweets one model call sees
    batch_wait_s: float = Field(0.01, gt=0, le=60)  # longest wait to fill a fetch (consume()) from Kafka
    inference_chunk: int = Field(64, ge=1, le=4_096)  # most texts in one ONNX Runtime run (see pad_budget)
    inference_workers: int = Field(2, ge=1, le=64)  # model calls running at once (threads)
    ort_threads: int = Field(0, ge=0, le=256)  # intra-op threads per call; 0: cores / inference_workers

    def intra_op_threads(self) -> int:
        """ONNX Runtime threads per model call: explicit, or the cores shared by the inference workers."""
        return self.ort_threads or max(1, (os.cpu_count() or 1) // self.inference_workers)

    provider: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when a GPU is present
    model_variant: Literal["auto", "int8", "fp32"] = "auto"  # auto: int8 on CPU, fp32 on CUDA
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "exactly_once",
        description="exactly_once: each input's outputs are committed once, in one Kafka transaction with "
        "its offsets (read_committed readers see them once); at_least_once: a worker that dies has its "
        "last commit interval's input classified again",
    )
    transactional_id: str | None = Field(
        None,
        min_length=1,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="exactly_once's producer id; None: app id, host name and process id. Set a stable one "
        "per replica (a StatefulSet's pod name) to have a restarted worker fence its predecessor at once",
    )
    fetch_max_records: int = Field(
        512, ge=1, le=100_000, description="most records one fetch hands the agents"
    )
    web_host: str = "127.0.0.1"
    web_port: int = Field(6066, ge=1, le=65_535)  # status, counts and /metrics; one per worker
    datadir: Path | None = None  # Faust state; None: a temporary folder per worker process
    agg_window_s: int = Field(60, ge=1, le=86_400)  # tumbling window of the label counts
    agg_expires_s: int = Field(600, ge=1, le=604_800)  # windows kept this long, then dropped
    # Tags per window; more count as "(other)", as do tags past 900 KB of text (aggregates.MAX_TAG_BYTES):
    # a window's counts are one record, below Kafka's default 1 MiB limit.
    agg_max_tags: int = Field(5_000, ge=1, le=50_000)
    # The count agent's writes (window totals to the changelog and tweets.sentiment.agg), whatever
    # arrives on the count-events topic: past this rate it waits, and its input partitions pause.
    # Legit load writes 2 x a window's total per count event: 3 workers flushing 2 windows of
    # 900 KB (the tag-text bound) each second is 10.8 MB/s.
    agg_write_bytes_per_s: int = Field(16_000_000, ge=10_000, le=1_000_000_000)
    session_timeout_s: float = Field(30.0, gt=0)  # a dead worker's partitions move after this
    heartbeat_interval_s: float = Field(3.0, gt=0)
    rebalance_timeout_s: float = Field(60.0, gt=0)
    commit_interval_s: float = Field(
        0.1,
        gt=0,
        le=60,
        description="how often outputs and their input offsets are committed together (exactly_once: "
        "how long read_committed readers may wait for a result)",
    )
    lag_interval_s: float = Field(5.0, gt=0)
    # Untrusted input: work is bounded before parsing, and a dead letter always fits on its topic.
    max_message_bytes: int = Field(64 * 1024, ge=1_024, le=16 * 1024 * 1024)  # larger: oversized-message
    max_json_depth: int = Field(16, ge=2, le=1_000)  # deeper arrays/objects: too-deep
    dlq_max_value_bytes: int = Field(8 * 1024, ge=0, le=1024 * 1024)  # original bytes kept per dead letter
    buffer_max_bytes: int = Field(
        128 * 1024 * 1024,
        ge=4 * 1024 * 1024,
        le=16 * 1024**3,
        description="raw bytes held ahead of the model: each consumer prefetches at most a quarter of it "
        "(queued.max.messages.kbytes, source.consumer_overrides), and the classify agent takes no more "
        "fetches while the record values it holds until they are produced pass it",
    )
    # A worker that cannot make progress exits (named exit codes, see processors/exits.py).
    send_timeout_s: float = Field(60.0, gt=0)  # transient send errors retry this long, then exit
    inference_timeout_s: float = Field(60.0, gt=0)  # one model call
    stall_timeout_s: float = Field(180.0, gt=0)  # tweets in flight and no batch finished
    shutdown_grace_s: float = Field(25.0, gt=0, le=3_600)  # SIGTERM: stopped within this, in any state
    liveness_timeout_s: float = Field(120.0, gt=0)  # /livez fails: output uncommitted this long, or lag

    @model_validator(mode="after")
    def _stall_outlasts_a_batch(self) -> ProcessorSettings:
        if self.stall_timeout_s <= self.inference_timeout_s + self.send_timeout_s:
            raise ValueError(
                "processor.stall_timeout_s must exceed inference_timeout_s + send_timeout_s (one batch's "
                "longest legitimate time)"
            )
        if self.liveness_timeout_s <= self.commit_interval_s:
            raise ValueError("processor.liveness_timeout_s must exceed commit_interval_s")
        return self


class RetrainSettings(BaseModel):
    """The closed loop (``tweetpulse retrain``): data gathering, the deploy gate, weak labels, drift."""

    model_config = ConfigDict(extra="forbid")

    base_data: list[str] = Field(default_factory=lambda: ["builtin"], min_length=1)  # training specs
    max_base_samples: int | None = Field(20_000, ge=1)  # base examples kept per run (seeded sample)
    val_file: Path | None = None  # the fixed gate set; None: a seeded hold-out of the base data
    max_val_samples: int | None = Field(2_000, ge=1)
    preset: str = "distilled"  # MiniLM taught by production's teacher (`best` is MPNet, ~17x slower)
    max_steps: int | None = Field(None, ge=1)
    work_dir: Path | None = None  # keep checkpoints and exports here; None: a temporary folder
    labeled_cap: int = Field(50_000, ge=0)  # newest labeled-topic examples used per run
    labeled_window_h: float = Field(24 * 30, gt=0)  # labels older than this are left out
    weak_max_share: float = Field(0.3, ge=0, le=1)  # weak labels' largest share of the training set
    human_max_share: float = Field(0.5, ge=0, le=1)  # human labels' too: feedback is untrusted input
    # (all topic labels together: at most the larger of the two shares, whatever source they claim)
    label_clock_skew_s: float = Field(300, ge=0)  # labels dated further in the future are refused
    tolerance: float = Field(0.005, ge=0, le=1)  # a candidate may be this much less accurate
    min_accuracy: float = Field(0.75, ge=0, le=1)  # absolute floor: no candidate below it is promoted
    min_gate_examples: int = Field(200, ge=1)  # smaller gate sets decide nothing (production kept)
    gate_variant: Literal["fp32", "int8"] = "fp32"  # graph scored by the gate (int8 is gated at export)
    weak_labels: bool = False  # the processors emit emoticon/emoji (distant supervision) labels
    weak_label_rate: float = Field(0.1, ge=0, le=1)  # share of cue-bearing tweets they emit
    drift_window_s: int = Field(300, ge=1)  # tumbling window of the drift statistics
    drift_min_count: int = Field(200, ge=1)  # smaller windows are not compared
    drift_reference_windows: int = Field(3, ge=1)  # first full windows that form the reference
    drift_positive_rate_delta: float = Field(0.15, gt=0, le=1)  # absolute change that is drift
    drift_confidence_delta: float = Field(0.1, gt=0, le=1)
    drift_cooldown_s: float = Field(3_600, ge=0)  # least time between drift-triggered retrains
    drift_max_open_windows: int = Field(288, ge=1)  # beyond it the oldest open window is closed early


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TWEETPULSE_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    twitter: TwitterSettings = Field(default_factory=TwitterSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    processor: ProcessorSettings = Field(default_factory=ProcessorSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_ENV)
        if config_file:
            if not Path(config_file).is_file():
                raise SettingsError(f"{CONFIG_ENV}={config_file}: no such config file")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    def secrets(self) -> list[str]:
        token = self.twitter.bearer_token
        return self.kafka.secrets() + ([token.get_secret_value()] if token else [])


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings, raising :class:`SettingsError` in one line that names the problem: every
    invalid field, a config file that is missing, unreadable or not TOML (UTF-8), or an environment
    value that cannot be parsed (a list or dict that is not JSON)."""
    if config_file is not None:
        os.environ[CONFIG_ENV] = str(config_file)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"config file {os.environ.get(CONFIG_ENV)}: not valid TOML: {exc}") from None
    except pydantic_settings.SettingsError as exc:  # e.g. TWEETPULSE_KAFKA__EXTRA=notjson
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        raise SettingsError(f"invalid settings: {exc}{cause}") from None
    except OSError as exc:  # the config file exists but cannot be read (permissions, a directory race)
        name = exc.filename or os.environ.get(CONFIG_ENV)
        raise SettingsError(f"config file {name}: {exc.strerror or exc}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, loaded once."""
    return load_settings()
