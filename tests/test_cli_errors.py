"""Bad input at the edges: every command, given a bad file, option, setting or config, ends with one
line on stderr that names the problem and a non-zero exit, never a traceback. Each case runs the real
CLI in a subprocess, as a user would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Case:
    argv: list[str]
    names: str  # a fragment of the message that names the problem
    env: dict[str, str] = field(default_factory=dict)
    exit: int = 2
    kafka: bool = False  # needs the local broker
    only_line: bool = True  # False: the source's own per-line warnings come first


CASES: dict[str, Case] = {
    # produce replay: the file
    "replay-missing-file": Case(["produce", "replay", "{tmp}/absent.jsonl"], "absent.jsonl: no such file"),
    "replay-directory": Case(["produce", "replay", "{tmp}/folder"], "a directory, not a file"),
    "replay-empty-file": Case(["produce", "replay", "{tmp}/empty.jsonl"], "empty file"),
    "replay-binary-file": Case(["produce", "replay", "{tmp}/garbage.bin"], "binary file"),
    "replay-headerless-csv": Case(
        ["produce", "replay", "{tmp}/twocol.csv"], "needs a header with text and label"
    ),
    "replay-not-utf8": Case(["produce", "replay", "{tmp}/latin1.csv"], "line 1 is not utf-8 text"),
    "replay-unknown-encoding": Case(
        ["produce", "replay", "{tmp}/good.jsonl", "--encoding", "klingon"], "unknown text encoding 'klingon'"
    ),
    "replay-tweeteval-misnamed": Case(
        ["produce", "replay", "{tmp}/good.jsonl", "--format", "tweeteval"], "named *_text.txt"
    ),
    "replay-tweeteval-no-labels": Case(["produce", "replay", "{tmp}/x_text.txt"], "the labels file"),
    "replay-every-line-malformed": Case(
        ["produce", "replay", "{tmp}/allbad.jsonl", "--topic", "tweetpulse.cli-errors"],
        "no valid tweet in 2 malformed lines",
        kafka=True,
        only_line=False,
    ),
    "replay-bad-format": Case(["produce", "replay", "{tmp}/good.jsonl", "--format", "xml"], "invalid choice"),
    "replay-limit-zero": Case(
        ["produce", "replay", "{tmp}/good.jsonl", "--limit", "0"],
        "--limit: input should be greater than or equal to 1",
    ),
    # produce synthetic / search / twitter: options and settings
    "synthetic-negative-rate": Case(
        ["produce", "synthetic", "--rate", "-5"], "--rate: input should be greater than 0"
    ),
    "synthetic-share-above-one": Case(["produce", "synthetic", "--positive-share", "2"], "--positive-share"),
    "synthetic-count-not-a-number": Case(
        ["produce", "synthetic", "--count", "many"], "--count: input should be a valid integer"
    ),
    "synthetic-negative-count": Case(
        ["produce", "synthetic", "--count", "-1"], "--count: input should be greater than or equal to 0"
    ),
    "synthetic-bad-topic-name": Case(
        ["produce", "synthetic", "--topic", "no spaces!"], "--topic: string should match pattern"
    ),
    "synthetic-unknown-topic-choice": Case(
        ["produce", "synthetic", "--topics", "knitting"], "invalid choice"
    ),
    "search-zero-interval": Case(
        ["produce", "search", "q", "--interval", "0"],
        "--interval: twitter.search_interval_s: input should be greater than 0",
    ),
    "search-without-token": Case(["produce", "search", "q", "--once"], "no X API bearer token"),
    "twitter-without-token": Case(["produce", "twitter", "--list-rules"], "no X API bearer token"),
    "twitter-api-unreachable": Case(
        ["produce", "twitter", "--list-rules"],
        "cannot reach the X API at http://127.0.0.1:{closed_port}",
        env={
            "X_BEARER_TOKEN": "tok-0123456789",
            "TWEETPULSE_TWITTER__API_BASE_URL": "http://127.0.0.1:{closed_port}",
        },
    ),
    "twitter-empty-rule": Case(
        ["produce", "twitter", "--rule", " "], "empty stream rule", env={"X_BEARER_TOKEN": "tok-0123456789"}
    ),
    "twitter-bad-api-url": Case(
        ["produce", "twitter", "--list-rules"],
        "twitter.api_base_url",
        env={"TWEETPULSE_TWITTER__API_BASE_URL": "ftp://example.com"},
    ),
    # settings: config file and environment, whatever the command
    "config-missing": Case(
        ["--config", "{tmp}/absent.toml", "topics", "list"], "absent.toml: no such config file"
    ),
    "config-directory": Case(["--config", "{tmp}/folder", "topics", "list"], "no such config file"),
    "config-bad-toml": Case(["--config", "{tmp}/bad.toml", "topics", "list"], "not valid TOML"),
    "config-binary": Case(["--config", "{tmp}/garbage.bin", "topics", "list"], "not valid TOML"),
    "config-unknown-key": Case(["--config", "{tmp}/unknown.toml", "topics", "list"], "Extra inputs"),
    "env-not-a-number": Case(
        ["topics", "list"], "topics.partitions", env={"TWEETPULSE_TOPICS__PARTITIONS": "many"}
    ),
    "env-unknown-log-level": Case(
        ["schemas", "{tmp}/schemas"], "log_level", env={"TWEETPULSE_LOG_LEVEL": "LOUD"}
    ),
    "env-extra-not-json": Case(
        ["topics", "list"], 'field "kafka"', env={"TWEETPULSE_KAFKA__EXTRA": "notjson"}
    ),
    "env-unknown-librdkafka-property": Case(
        ["topics", "list"],
        "No such configuration property",
        env={"TWEETPULSE_KAFKA__EXTRA": '{"no.such": 1}'},
    ),
    "env-bad-allowed-host": Case(
        ["dashboard"], "allowed_hosts", env={"TWEETPULSE_DASHBOARD__ALLOWED_HOSTS": '["http://x/"]'}
    ),
    # topics, schemas, kafka
    "topics-unknown-action": Case(["topics", "frobnicate"], "invalid choice"),
    "topics-describe-unknown-topic": Case(
        ["topics", "describe", "no.such.topic.cli-errors"], "no such topic", kafka=True
    ),
    "schemas-into-a-file": Case(["schemas", "{tmp}/good.jsonl"], "good.jsonl: file exists"),
    "kafka-port-out-of-range": Case(
        ["kafka", "status", "--port", "99999"], "--port: input should be less than or equal to 65535"
    ),
    # dashboard
    "dashboard-port-out-of-range": Case(["dashboard", "--port", "70000"], "port"),
    "dashboard-zero-window": Case(["dashboard", "--window-minutes", "0"], "window_minutes"),
    "dashboard-unknown-host": Case(["dashboard", "--host", "no-such-host.invalid"], "cannot listen on"),
    "dashboard-port-in-use": Case(["dashboard", "--port", "{busy_port}"], "cannot listen on 127.0.0.1"),
    # models, process, evaluate, bench, retrain, watch, train: other roles, through the same edges
    "models-unknown-version": Case(["models", "show", "v9999"], "no model version", exit=1),
    "models-promote-without-version": Case(["models", "promote"], "needs a VERSION", exit=1),
    "process-without-model": Case(["process"], "no production model"),
    "process-bad-provider": Case(["process", "--provider", "tpu"], "invalid choice"),
    "process-zero-batch": Case(
        ["process", "--batch-size", "0"],
        "--batch-size: processor.batch_size: input should be greater than or equal to 1",
    ),
    "process-bad-app-id": Case(["process", "--app-id", "a b"], "processor.app_id"),
    "process-options-that-break-a-rule-together": Case(
        ["process", "--liveness-timeout-s", "0.05"], "liveness_timeout_s must exceed commit_interval_s"
    ),
    "watch-zero-every": Case(
        ["watch", "--every", "0"], "--every: input should be greater than or equal to 1"
    ),
    "watch-zero-limit": Case(
        ["watch", "--limit", "0"], "--limit: input should be greater than or equal to 1"
    ),
    "demo-zero-rate": Case(["demo", "--rate", "0"], "--rate: input should be greater than 0"),
    "evaluate-not-a-model-folder": Case(
        ["evaluate", "--data", "{tmp}/good.jsonl", "--model", "{tmp}/folder"], "no manifest.json", exit=1
    ),
    "bench-not-a-model-folder": Case(["bench", "--model", "{tmp}/folder", "--quick"], "no manifest.json"),
    "retrain-bad-duration": Case(["retrain", "--every", "5q"], "invalid duration"),
    "retrain-tolerance-above-one": Case(
        ["retrain", "--tolerance", "5"],
        "--tolerance: retrain.tolerance: input should be less than or equal to 1",
    ),
    "retrain-missing-val-file": Case(
        ["retrain", "--val", "{tmp}/absent.jsonl"], "absent.jsonl: no such validation file"
    ),
    "retrain-val-directory": Case(["retrain", "--val", "{tmp}/folder"], "a directory, not a file"),
    "retrain-unknown-preset": Case(["retrain", "--preset", "nope"], "retrain.preset: unknown preset 'nope'"),
    "retrain-unknown-preset-setting": Case(
        ["retrain"], "retrain.preset: unknown preset 'nope'", env={"TWEETPULSE_RETRAIN__PRESET": "nope"}
    ),
    "retrain-missing-data-file": Case(["retrain", "--data", "{tmp}/absent.jsonl"], "no such data file"),
    "retrain-empty-hf-spec": Case(["retrain", "--data", "hf:"], "no dataset name"),
    "watch-every-not-a-number": Case(["watch", "--every", "x"], "--every: input should be a valid integer"),
    "train-missing-data-file": Case(["train", "--data", "{tmp}/absent.jsonl"], "no such data file"),
    "train-missing-val-file": Case(["train", "--val", "{tmp}/absent.jsonl"], "no such data file"),
    "train-empty-data-file": Case(["train", "--data", "{tmp}/empty.jsonl"], "empty file"),
    "train-empty-hf-spec": Case(["train", "--data", "hf:"], "hf:: no dataset name"),
    "train-hf-empty-split": Case(["train", "--data", "hf:tweet_eval:"], "empty split"),
    "train-hf-malformed-name": Case(["train", "--data", "hf:a b"], "not a Hugging Face dataset name"),
    "train-zero-batch": Case(
        ["train", "--batch-size", "0"], "--batch-size: input should be greater than or equal to 1"
    ),
    "train-val-fraction-above-half": Case(
        ["train", "--val-fraction", "2"], "--val-fraction: input should be less than or equal to 0.5"
    ),
    "export-empty-hf-spec": Case(
        ["export", "--adapter", "{tmp}/folder", "--val", "hf:", "--output", "{tmp}/out"], "no dataset name"
    ),
    "evaluate-missing-data-file": Case(
        ["evaluate", "--data", "{tmp}/absent.jsonl", "--model", "{tmp}/folder"], "no such data file"
    ),
    "topics-unreachable-broker": Case(
        ["topics", "list"],
        "Kafka: Failed to get metadata",
        env={"TWEETPULSE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:{closed_port}"},
    ),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("bad-inputs")
    (tmp / "folder").mkdir()
    (tmp / "empty.jsonl").write_bytes(b"")
    (tmp / "garbage.bin").write_bytes(bytes(range(256)) * 16)
    (tmp / "twocol.csv").write_text("hello,world\nfoo,bar\n")
    (tmp / "latin1.csv").write_bytes("text,label,café\nbon,positive,x\n".encode("latin-1"))
    (tmp / "good.jsonl").write_text('{"text": "a fine day", "label": "positive"}\n')
    (tmp / "allbad.jsonl").write_text('{"text": oops\n["not", "an object"]\n')
    (tmp / "x_text.txt").write_text("no labels beside me\n")
    (tmp / "bad.toml").write_text("[kafka\nbootstrap_servers = 1\n")
    (tmp / "unknown.toml").write_text("[kafka]\nbootstrap_servers = 'x:1'\nbrokers = 3\n")
    (tmp / "registry").mkdir()
    return tmp


@pytest.fixture(scope="module")
def ports() -> Iterator[dict[str, str]]:
    """A port something listens on, and one nothing listens on."""
    with socket.create_server(("127.0.0.1", 0)) as busy, socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        yield {"busy_port": str(busy.getsockname()[1]), "closed_port": str(closed.getsockname()[1])}


def fill(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


def run_cli(case: Case, files: Path, ports: dict[str, str]) -> subprocess.CompletedProcess[str]:
    values = {"tmp": str(files), **ports}
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWEETPULSE_") and "BEARER" not in k}
    env.update(
        {
            "TWEETPULSE_REGISTRY__ROOT": str(files / "registry"),  # never the user's models
            "TWEETPULSE_LOG_LEVEL": "WARNING",  # progress logs are not part of the message
            **{k: fill(v, values) for k, v in case.env.items()},
        }
    )
    argv = [fill(arg, values) for arg in case.argv]
    return subprocess.run(
        [sys.executable, "-m", "tweetpulse", *argv], capture_output=True, text=True, env=env, timeout=300
    )


def check(case: Case, done: subprocess.CompletedProcess[str], files: Path, ports: dict[str, str]) -> None:
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == case.exit, done.stderr
    assert lines, "no message on stderr"
    if case.only_line:
        assert len(lines) == 1, done.stderr
    assert lines[-1].startswith(("tweetpulse", "python -m tweetpulse")), lines[-1]
    assert fill(case.names, {"tmp": str(files), **ports}) in lines[-1]


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_ends_with_one_line_naming_the_problem_and_a_nonzero_exit(
    name: str, files: Path, ports: dict[str, str], request: pytest.FixtureRequest
) -> None:
    case = CASES[name]
    if case.kafka:
        request.getfixturevalue("kafka_bootstrap")
    check(case, run_cli(case, files, ports), files, ports)


@pytest.mark.parametrize(
    ("config", "env", "names"),
    [
        ("bad.toml", {}, "bad.toml: not valid TOML: Expected ']'"),
        ("garbage.bin", {}, "garbage.bin: not valid TOML"),
        (None, {"TWEETPULSE_KAFKA__EXTRA": "notjson"}, 'error parsing value for field "kafka"'),
    ],
)
def test_load_settings_itself_raises_one_line_settings_errors(
    config: str | None, env: dict[str, str], names: str, files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Direct callers, not only the CLI, get SettingsError for a broken config file or environment."""
    from tweetpulse.settings import CONFIG_ENV, SettingsError, load_settings

    monkeypatch.delenv(CONFIG_ENV, raising=False)
    if config:
        monkeypatch.setenv(CONFIG_ENV, str(files / config))  # restored afterwards, unlike load_settings(path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert names in str(raised.value) and "\n" not in str(raised.value)


def test_librdkafka_logs_go_through_python_logging() -> None:
    """The clients get a Python logger, so librdkafka does not print raw lines to stderr."""
    from tweetpulse.kafka import admin_client, consumer_config, producer_config
    from tweetpulse.settings import load_settings

    settings = load_settings()
    assert producer_config(settings)["logger"].name == "librdkafka"
    assert consumer_config(settings, **{"group.id": "g"})["logger"].name == "librdkafka"
    admin_client(settings)  # AdminClient accepts logger=
