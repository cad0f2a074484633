"""One typed settings object for every role.

Values come from, highest priority first: keyword arguments, environment variables
(``TWEETPULSE_`` prefix, ``__`` between nested names, e.g. ``TWEETPULSE_KAFKA__BOOTSTRAP_SERVERS``),
a TOML config file (``TWEETPULSE_CONFIG`` or ``--config``), then the defaults below.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

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
    """How every role connects to Kafka. ``extra`` is passed through to confluent-kafka as is."""

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
        """Secret values, for log redaction."""
        return [s.get_secret_value() for s in (self.sasl_password, self.ssl_key_password) if s]


class TopicSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    raw: str = "tweets.raw"
    sentiment: str = "tweets.sentiment"
    dlq: str = "tweets.dlq"
    aggregates: str = "tweets.sentiment.agg"
    models: str = "tweetpulse.models"
    partitions: int = Field(6, ge=1, le=10_000)
    replication_factor: int = Field(1, ge=1, le=32)


class RegistrySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: Path = (
        Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "tweetpulse" / "models"
    )


class TwitterSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bearer_token: SecretStr | None = None


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
    """Build the settings, raising :class:`SettingsError` that names every invalid field."""
    if config_file is not None:
        os.environ[CONFIG_ENV] = str(config_file)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, loaded once."""
    return load_settings()
