import pytest

from tweetpulse.logs import configure_logging
from tweetpulse.settings import SettingsError, load_settings


def test_defaults_name_the_pipeline_topics() -> None:
    s = load_settings()
    assert (s.topics.raw, s.topics.sentiment, s.topics.dlq) == (
        "tweets.raw",
        "tweets.sentiment",
        "tweets.dlq",
    )
    assert (s.topics.aggregates, s.topics.models) == ("tweets.sentiment.agg", "tweetpulse.models")
    assert s.topics.partitions == 6


def test_environment_variables_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWEETPULSE_KAFKA__BOOTSTRAP_SERVERS", "broker-1:9093,broker-2:9093")
    monkeypatch.setenv("TWEETPULSE_TOPICS__PARTITIONS", "12")
    monkeypatch.setenv("TWEETPULSE_KAFKA__EXTRA", '{"socket.keepalive.enable": true}')
    s = load_settings()
    conf = s.kafka.confluent_config()
    assert conf["bootstrap.servers"] == "broker-1:9093,broker-2:9093"
    assert conf["socket.keepalive.enable"] is True
    assert s.topics.partitions == 12


def test_config_file_is_read_and_env_wins(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "tweetpulse.toml"
    cfg.write_text('[kafka]\nbootstrap_servers = "from-file:9092"\n[topics]\nraw = "in"\npartitions = 4\n')
    monkeypatch.setenv("TWEETPULSE_CONFIG", str(cfg))
    monkeypatch.setenv("TWEETPULSE_TOPICS__PARTITIONS", "8")
    s = load_settings()
    assert (s.kafka.bootstrap_servers, s.topics.raw, s.topics.partitions) == ("from-file:9092", "in", 8)


def test_missing_config_file_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWEETPULSE_CONFIG", "/nonexistent/tp.toml")
    with pytest.raises(SettingsError, match=r"/nonexistent/tp\.toml"):
        load_settings()


@pytest.mark.parametrize(
    ("env", "value", "field"),
    [
        ("TWEETPULSE_TOPICS__PARTITIONS", "0", "topics.partitions"),
        ("TWEETPULSE_TOPICS__PARTITIONS", "many", "topics.partitions"),
        ("TWEETPULSE_KAFKA__SECURITY_PROTOCOL", "CARRIER_PIGEON", "kafka.security_protocol"),
        ("TWEETPULSE_LOG_LEVEL", "LOUD", "log_level"),
    ],
)
def test_invalid_value_is_refused_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, field: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError, match=field.replace(".", r"\.")):
        load_settings()


def test_sasl_without_credentials_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWEETPULSE_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TWEETPULSE_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    with pytest.raises(SettingsError, match=r"sasl_username and kafka\.sasl_password"):
        load_settings()


def test_secrets_never_appear_in_repr_or_logs(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("TWEETPULSE_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TWEETPULSE_KAFKA__SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("TWEETPULSE_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("TWEETPULSE_KAFKA__SASL_PASSWORD", "s3cr3t-sasl-pw")
    monkeypatch.setenv("TWEETPULSE_TWITTER__BEARER_TOKEN", "AAAA-bearer-token")
    s = load_settings()
    assert "s3cr3t-sasl-pw" not in repr(s) and "AAAA-bearer-token" not in repr(s)
    assert s.kafka.confluent_config()["sasl.password"] == "s3cr3t-sasl-pw"  # still usable by the client

    import logging

    configure_logging("INFO", "json", s.secrets())
    logging.getLogger("tweetpulse.test").info("connecting with %s", s.kafka.confluent_config())
    logging.getLogger("tweetpulse.test").info("token", extra={"token": "AAAA-bearer-token"})
    err = capsys.readouterr().err
    assert "s3cr3t-sasl-pw" not in err and "AAAA-bearer-token" not in err
    assert err.count("***") >= 2


@pytest.mark.parametrize(
    "secret",
    ['pa"ss\\word', "pässwörd-ünïcode", "tab\there'and\"both", "line\nbreak-pw"],
    ids=["quote-backslash", "non-ascii", "tab-and-quotes", "newline"],
)
@pytest.mark.parametrize("fmt", ["json", "text"])
def test_secrets_are_redacted_in_their_escaped_forms_too(secret: str, fmt: str, capsys) -> None:
    import json
    import logging

    configure_logging("INFO", fmt, [secret])
    log = logging.getLogger("tweetpulse.test")
    log.info("raw %s", secret)
    log.info("in a dict %s", {"password": secret})  # repr-escaped
    log.info("as JSON %s", json.dumps({"password": secret}))  # JSON-escaped, then escaped again
    log.info("extra", extra={"password": secret})
    err = capsys.readouterr().err
    forms = {
        secret,
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret)[1:-1],
    }
    assert not [form for form in forms if form in err]
    assert err.count("***") >= 4


def test_kafka_extra_credentials_count_as_secrets_and_are_redacted(capsys) -> None:
    extra = {
        "sasl.oauthbearer.client.secret": "oauth-client-s3cret",
        "ssl.keystore.password": "keystore-pw-123",
        "ssl.key.pem": "-----BEGIN PRIVATE KEY-----\nMIIEvQ\n-----END PRIVATE KEY-----",
        "sasl.oauthbearer.config": "principal=svc token=eyJhbGciOi",
        "socket.timeout.ms": 1000,
        "client.rack": "rack-1",
    }
    s = load_settings(kafka={"extra": extra})
    assert set(s.secrets()) == {v for k, v in extra.items() if k not in ("socket.timeout.ms", "client.rack")}

    import logging

    configure_logging("INFO", "json", s.secrets())
    logging.getLogger("tweetpulse.test").info("connecting with %s", s.kafka.confluent_config())
    err = capsys.readouterr().err
    assert "oauth-client-s3cret" not in err and "keystore-pw-123" not in err and "MIIEvQ" not in err
    assert "eyJhbGciOi" not in err
    assert "rack-1" in err  # only credentials are hidden


def test_dashboard_allowed_hosts_are_normalized_and_bad_names_refused_by_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TWEETPULSE_DASHBOARD__ALLOWED_HOSTS", '["Dash.Example.com ", "[::1]"]')
    assert load_settings().dashboard.allowed_hosts == ["dash.example.com", "::1"]
    monkeypatch.setenv("TWEETPULSE_DASHBOARD__ALLOWED_HOSTS", '["http://dash.example.com/"]')
    with pytest.raises(SettingsError, match=r"dashboard.*allowed_hosts"):
        load_settings()


@pytest.mark.parametrize(
    ("env", "value", "field"),
    [
        ("TWEETPULSE_DASHBOARD__MAX_CLIENTS", "0", "dashboard.max_clients"),
        ("TWEETPULSE_TWITTER__DEDUPE_WINDOW", "100000000", "twitter.dedupe_window"),
    ],
)
def test_memory_bounds_are_settings_with_limits(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, field: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError, match=field.replace(".", r"\.")):
        load_settings()
