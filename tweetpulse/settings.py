"""One typed settings object for every role.

Values come from, highest priority first: keyword arguments, environment variables
(``TWEETPULSE_`` prefix, ``__`` between nested names, e.g. ``TWEETPULSE_KAFKA__BOOTSTRAP_SERVERS``),
a TOML config file (``TWEETPULSE_CONFIG`` or ``--config``), then the defaults below.
"""

from __future__ import annotations

import os
import tomllib
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

    bootstrap_servers: str = Field(
        "127.0.0.1:9092", min_length=1, description="Kafka brokers, host:port, comma-separated"
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how clients talk to the brokers"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = Field(
        None, description="SASL mechanism (required with SASL_*)"
    )
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never logged)")
    ssl_ca_location: Path | None = Field(
        None, description="CA certificate file that signs the brokers' certificates"
    )
    ssl_certificate_location: Path | None = Field(None, description="client certificate file (mutual TLS)")
    ssl_key_location: Path | None = Field(None, description="client private key file (mutual TLS)")
    ssl_key_password: SecretStr | None = Field(
        None, description="password of the client private key (never logged)"
    )
    client_id: str = Field("tweetpulse", description="client.id every Kafka client sends")
    extra: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="more librdkafka settings, passed through as is (env: a JSON object)",
    )

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

    raw: str = Field("tweets.raw", description="raw tweets, the producers' output and the processors' input")
    sentiment: str = Field("tweets.sentiment", description="one classification result per tweet")
    dlq: str = Field(
        "tweets.dlq", description="dead letters: input that could not be classified, with the reason"
    )
    aggregates: str = Field("tweets.sentiment.agg", description="label counts per window and tag")
    models: str = Field(
        "tweetpulse.models",
        description="model announcements (compacted): workers hot-swap to the announced version",
    )
    labeled: str = Field("tweets.labeled", description="human feedback and weak labels, for retraining")
    drift: str = Field("tweets.drift", description="drift events that can trigger a retrain")
    partitions: int = Field(
        6,
        ge=1,
        le=10_000,
        description="partitions of each topic created (the most workers that share the raw topic)",
    )
    replication_factor: int = Field(1, ge=1, le=32, description="replicas of each topic created")


class RegistrySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: Path = Field(
        Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "tweetpulse" / "models",
        description="model registry folder (versions, the production pointer, the decisions log)",
        json_schema_extra={"cli": ["--registry"]},
    )


def _bearer_token_from_env() -> str | None:
    """The conventional X API token variables, used when TWEETPULSE_TWITTER__BEARER_TOKEN is unset."""
    return os.environ.get("X_BEARER_TOKEN") or os.environ.get("TWITTER_BEARER_TOKEN") or None


class TwitterSettings(BaseModel):
    """The X API producers (``tweetpulse produce twitter|search``). Backoffs follow X's reconnect guide."""

    model_config = ConfigDict(extra="forbid")

    bearer_token: SecretStr | None = Field(
        default_factory=_bearer_token_from_env,
        validate_default=True,
        description="X API bearer token (also X_BEARER_TOKEN or TWITTER_BEARER_TOKEN; never logged)",
    )
    api_base_url: str | None = Field(
        None, pattern=r"^https?://", description="X API base URL (none: tweepy's api.twitter.com)"
    )
    rules: list[str] = Field(default_factory=list, description="filtered-stream rules, 'VALUE:TAG' each")
    keepalive_timeout_s: float = Field(25.0, gt=0, description="X sends a keep-alive every 20 s")
    dedupe_window: int = Field(
        100_000, ge=1, le=1_000_000, description="recent tweet ids remembered to drop replays (~150 B each)"
    )
    network_backoff_step_s: float = Field(
        0.25, gt=0, description="a network error's backoff grows by this per retry"
    )
    network_backoff_max_s: float = Field(16.0, gt=0, description="longest network-error backoff")
    http_backoff_start_s: float = Field(
        5.0, gt=0, description="first backoff after an HTTP error, doubled per retry"
    )
    http_backoff_max_s: float = Field(320.0, gt=0, description="longest HTTP-error backoff")
    rate_limit_backoff_start_s: float = Field(
        60.0, gt=0, description="first backoff after a 429 without a reset time, doubled per retry"
    )
    rate_limit_wait_max_s: float = Field(900.0, gt=0, description="longest wait for a rate-limit reset")
    search_interval_s: float = Field(
        15.0,
        gt=0,
        description="seconds between recent-search polls",
        json_schema_extra={"cli": ["--interval"]},
    )
    search_max_results: int = Field(100, ge=10, le=100, description="results per recent-search page")
    search_max_pages: int = Field(
        10, ge=1, le=1_000, description="next_token pages read per poll; older matches past them are skipped"
    )


class DashboardSettings(BaseModel):
    """The live dashboard (``tweetpulse dashboard``): where it listens and what it keeps."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="address the dashboard listens on (0.0.0.0: all)")
    port: int = Field(8088, ge=1, le=65_535, description="port the dashboard listens on")
    processor_group: str | None = Field(
        None,
        min_length=1,
        description="consumer group of the processors, whose lag on the raw topic is shown; none: processor.app_id",
        json_schema_extra={"cli": ["--group"]},
    )
    replay_minutes: int = Field(
        0, ge=0, le=1_440, description="start with the results of the last N minutes (0: only new ones)"
    )
    window_minutes: int = Field(
        60, ge=1, le=1_440, description="minutes of per-minute history kept and charted"
    )
    latest_tweets: int = Field(50, ge=1, le=1_000, description="latest classified tweets shown")
    max_tags: int = Field(12, ge=1, le=100, description="tags shown; at most 50x that many are tracked")
    lag_interval_s: float = Field(
        5.0, gt=0, le=3_600, description="seconds between measurements of the processors' consumer lag"
    )
    push_interval_s: float = Field(
        1.0, gt=0, le=60, description="seconds between updates pushed to each open page"
    )
    max_clients: int = Field(100, ge=1, le=10_000, description="open event streams at once; more get 503")
    training_status_file: Path | None = Field(
        None,
        description="a file whose first line a training job keeps current with its phase (tweetpulse demo "
        "writes its background model's there): shown under the model version",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        max_length=1_000,
        description="host names the page is served under besides loopback names and IP addresses, e.g. a proxy's; other Host headers get 421 (DNS rebinding guard); '*' answers any (env: a JSON list)",
        json_schema_extra={"cli": ["--allowed-host"]},
    )

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

    app_id: str = Field(
        "tweetpulse-processor",
        min_length=1,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="the workers' consumer group; workers with the same app id share the raw topic's partitions",
    )
    batch_size: int = Field(128, ge=1, le=10_000, description="most tweets one model call sees")
    batch_wait_s: float = Field(
        0.01,
        gt=0,
        le=60,
        description="longest wait to fill a fetch (consume()) from Kafka",
        json_schema_extra={"cli": ["--batch-wait"]},
    )
    inference_chunk: int = Field(
        64, ge=1, le=4_096, description="most texts in one ONNX Runtime run (see pad_budget)"
    )
    inference_workers: int = Field(2, ge=1, le=64, description="model calls running at once (threads)")
    ort_threads: int = Field(
        0,
        ge=0,
        le=256,
        description="intra-op threads per call; 0: cores / inference_workers",
        json_schema_extra={"cli": ["--threads"]},
    )

    def intra_op_threads(self) -> int:
        """ONNX Runtime threads per model call: explicit, or the cores shared by the inference workers."""
        return self.ort_threads or max(1, (os.cpu_count() or 1) // self.inference_workers)

    provider: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="ONNX Runtime execution provider (auto: CUDA when a GPU is present)"
    )
    model_variant: Literal["auto", "int8", "fp32"] = Field(
        "auto",
        description="model graph served (auto: int8 on CPU, fp32 on CUDA)",
        json_schema_extra={"cli": ["--variant"]},
    )
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "exactly_once",
        description="exactly_once: each input's outputs are committed once, in one Kafka transaction with "
        "its offsets (read_committed readers see them once); at_least_once: a worker that dies has its "
        "last commit interval's input classified again",
        json_schema_extra={"cli": ["--guarantee"]},
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
    web_host: str = Field(
        "127.0.0.1", description="interface of each worker's web views (health, status, metrics)"
    )
    web_port: int = Field(6066, ge=1, le=65_535, description="status, counts and /metrics; one per worker")
    datadir: Path | None = Field(None, description="Faust state; None: a temporary folder per worker process")
    agg_window_s: int = Field(60, ge=1, le=86_400, description="tumbling window of the label counts")
    agg_expires_s: int = Field(600, ge=1, le=604_800, description="windows kept this long, then dropped")
    # Tags per window; more count as "(other)", as do tags past 900 KB of text (aggregates.MAX_TAG_BYTES):
    # a window's counts are one record, below Kafka's default 1 MiB limit.
    agg_max_tags: int = Field(
        5_000,
        ge=1,
        le=50_000,
        description="tags counted per window; more count as '(other)', as do tags past 900 KB of text",
    )
    # The count agent's writes (window totals to the changelog and tweets.sentiment.agg), whatever
    # arrives on the count-events topic: past this rate it waits, and its input partitions pause.
    # Legit load writes 2 x a window's total per count event: 3 workers flushing 2 windows of
    # 900 KB (the tag-text bound) each second is 10.8 MB/s.
    agg_write_bytes_per_s: int = Field(
        16_000_000,
        ge=10_000,
        le=1_000_000_000,
        description="most bytes a second the count agent writes (window totals); past it the count-event partitions pause",
    )
    session_timeout_s: float = Field(30.0, gt=0, description="a dead worker's partitions move after this")
    heartbeat_interval_s: float = Field(3.0, gt=0, description="consumer group heartbeat interval")
    rebalance_timeout_s: float = Field(
        60.0, gt=0, description="longest a rebalance waits for a worker to rejoin"
    )
    commit_interval_s: float = Field(
        0.1,
        gt=0,
        le=60,
        description="how often outputs and their input offsets are committed together (exactly_once: "
        "how long read_committed readers may wait for a result)",
    )
    lag_interval_s: float = Field(
        5.0, gt=0, description="seconds between lag measurements (metrics and /livez)"
    )
    # Untrusted input: work is bounded before parsing, and a dead letter always fits on its topic.
    max_message_bytes: int = Field(
        64 * 1024,
        ge=1_024,
        le=16 * 1024 * 1024,
        description="largest raw record classified; larger ones are dead-lettered as oversized-message",
    )
    max_json_depth: int = Field(
        16,
        ge=2,
        le=1_000,
        description="deepest JSON nesting parsed; deeper input is dead-lettered as too-deep",
    )
    dlq_max_value_bytes: int = Field(
        8 * 1024, ge=0, le=1024 * 1024, description="original bytes kept per dead letter"
    )
    buffer_max_bytes: int = Field(
        128 * 1024 * 1024,
        ge=4 * 1024 * 1024,
        le=16 * 1024**3,
        description="raw bytes held ahead of the model: each consumer prefetches at most a quarter of it "
        "(queued.max.messages.kbytes, source.consumer_overrides), and the classify agent takes no more "
        "fetches while the record values it holds until they are produced pass it",
    )
    # A worker that cannot make progress exits (named exit codes, see processors/exits.py).
    send_timeout_s: float = Field(60.0, gt=0, description="transient send errors retry this long, then exit")
    inference_timeout_s: float = Field(
        60.0, gt=0, description="longest one model call may run before the worker exits as stuck"
    )
    stall_timeout_s: float = Field(180.0, gt=0, description="tweets in flight and no batch finished")
    shutdown_grace_s: float = Field(
        25.0, gt=0, le=3_600, description="SIGTERM: stopped within this, in any state"
    )
    liveness_timeout_s: float = Field(
        120.0, gt=0, description="/livez fails: output uncommitted this long, or lag"
    )

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

    base_data: list[str] = Field(
        default_factory=lambda: ["builtin"],
        min_length=1,
        description="base training data: files, builtin, hf:NAME, kafka:TOPIC",
        json_schema_extra={"cli": ["--data"]},
    )
    max_base_samples: int | None = Field(
        20_000, ge=1, description="base examples kept per run (seeded sample)"
    )
    val_file: Path | None = Field(
        None,
        description="the fixed validation file of the gate; none: a seeded hold-out of the base data",
        json_schema_extra={"cli": ["--val"]},
    )
    max_val_samples: int | None = Field(2_000, ge=1, description="gate examples kept per run (seeded sample)")
    preset: str = Field(
        "mpnet6",
        description="training preset of each run (mpnet6, as `tweetpulse train`: LoRA on MPNet's first 6 layers; "
        "fast: LoRA MiniLM; distilled: MiniLM taught by production's teacher; best is MPNet, ~17x slower)",
    )
    max_steps: int | None = Field(None, ge=1, description="cap on training steps per run")
    work_dir: Path | None = Field(
        None, description="keep checkpoints and exports here; None: a temporary folder"
    )
    labeled_cap: int = Field(50_000, ge=0, description="newest labeled-topic examples used per run")
    labeled_window_h: float = Field(24 * 30, gt=0, description="labels older than this are left out")
    weak_max_share: float = Field(
        0.3, ge=0, le=1, description="weak labels' largest share of the training set"
    )
    human_max_share: float = Field(
        0.5, ge=0, le=1, description="human labels' too: feedback is untrusted input"
    )
    # (all topic labels together: at most the larger of the two shares, whatever source they claim)
    label_clock_skew_s: float = Field(300, ge=0, description="labels dated further in the future are refused")
    tolerance: float = Field(0.005, ge=0, le=1, description="a candidate may be this much less accurate")
    min_accuracy: float = Field(
        0.75, ge=0, le=1, description="absolute floor: no candidate below it is promoted"
    )
    min_gate_examples: int = Field(
        200, ge=1, description="smaller gate sets decide nothing (production kept)"
    )
    gate_variant: Literal["fp32", "int8"] = Field(
        "fp32", description="graph scored by the gate (int8 is gated at export)"
    )
    weak_labels: bool = Field(
        False, description="the processors emit emoticon/emoji (distant supervision) labels"
    )
    weak_label_rate: float = Field(0.1, ge=0, le=1, description="share of cue-bearing tweets they emit")
    drift_window_s: int = Field(300, ge=1, description="tumbling window of the drift statistics")
    drift_min_count: int = Field(200, ge=1, description="tweets a drift window needs to be compared")
    drift_reference_windows: int = Field(3, ge=1, description="first full windows that form the reference")
    drift_positive_rate_delta: float = Field(0.15, gt=0, le=1, description="absolute change that is drift")
    drift_confidence_delta: float = Field(
        0.1, gt=0, le=1, description="absolute change of the mean confidence that is drift"
    )
    drift_cooldown_s: float = Field(3_600, ge=0, description="least time between drift-triggered retrains")
    drift_max_open_windows: int = Field(
        288, ge=1, description="beyond it the oldest open window is closed early"
    )


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
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="log level of every role"
    )
    log_format: Literal["json", "text"] = Field(
        "json", description="json: one JSON object per line; text: for people"
    )

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
