"""settings.kafka mapped to Faust's broker URLs and credentials, and to aiokafka client options."""

from __future__ import annotations

from typing import Any

from tweetpulse.settings import KafkaSettings, SettingsError


def broker_urls(kafka: KafkaSettings) -> list[str]:
    return [f"kafka://{host.strip()}" for host in kafka.bootstrap_servers.split(",") if host.strip()]


def _ssl_context(kafka: KafkaSettings) -> Any:
    if not kafka.security_protocol.endswith("SSL"):
        return None
    from aiokafka.helpers import create_ssl_context

    return create_ssl_context(
        cafile=str(kafka.ssl_ca_location) if kafka.ssl_ca_location else None,
        certfile=str(kafka.ssl_certificate_location) if kafka.ssl_certificate_location else None,
        keyfile=str(kafka.ssl_key_location) if kafka.ssl_key_location else None,
        password=kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None,
    )


def faust_credentials(kafka: KafkaSettings) -> Any:
    """Faust ``broker_credentials`` for SSL / SASL, or None for PLAINTEXT."""
    import faust

    if kafka.sasl_mechanism == "OAUTHBEARER":
        raise SettingsError("kafka.sasl_mechanism OAUTHBEARER is not supported by the Faust processor")
    context = _ssl_context(kafka)
    if kafka.security_protocol.startswith("SASL"):
        password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=password,
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    return faust.SSLCredentials(context) if context is not None else None


def aiokafka_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments for a plain aiokafka client with the same connection as the Faust app."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "security_protocol": kafka.security_protocol,
        "client_id": kafka.client_id,
    }
    if kafka.sasl_mechanism:
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        if kafka.sasl_password:
            options["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    context = _ssl_context(kafka)
    if context is not None:
        options["ssl_context"] = context
    return options
