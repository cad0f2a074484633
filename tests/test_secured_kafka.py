"""Every role through a real SASL_SSL broker: SCRAM-SHA-512 over TLS, with a CA this module makes.

The project's own broker (``TWEETPULSE_KAFKA_SECURITY=sasl_ssl tweetpulse kafka start``, see
deploy/kafka/kafka.sh) runs on ports of its own with its own state folder, for this module only; the
shared PLAINTEXT broker is never touched. Every role gets its settings the way users pass them, as
TWEETPULSE_KAFKA__* environment variables, and the CLI roles run as subprocesses. The mapping of
those settings to Faust/aiokafka (processors/brokers.py) is checked first, without a broker.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from tweetpulse.bench.workers import WorkerProcess, wait_until_assigned, worker_env
from tweetpulse.contracts import LABELS, SentimentResult
from tweetpulse.dashboard.lag import measure_lag
from tweetpulse.kafka import admin_client, pipeline_topics
from tweetpulse.processors.brokers import HONOURED, aiokafka_options, client_spec, verify_login
from tweetpulse.registry import ModelRegistry, announce_production
from tweetpulse.retraining.data import read_labeled_tweets
from tweetpulse.settings import KafkaSettings, Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[1]
TWEETPULSE = [sys.executable, "-m", "tweetpulse"]
KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"
DEV_TLS = ROOT / "deploy" / "kafka" / "dev-tls.sh"
USER = "alice"
PASSWORD = f"pw-{uuid.uuid4().hex}"  # must never appear in any output
WRONG_PASSWORD = f"wrong-{uuid.uuid4().hex}"
TWEETS = 120
REFUSAL_BOUND_S = 60  # a refused login ends the command within this, never a hang
LIBRDKAFKA_REFUSAL_S = 30  # topics and produce: librdkafka's error_cb ends them at the first refusal
WORKER_TUNING = {
    "TWEETPULSE_PROCESSOR__PROVIDER": "cpu",
    "TWEETPULSE_PROCESSOR__ORT_THREADS": "1",
    "TWEETPULSE_PROCESSOR__BATCH_SIZE": "32",
    "TWEETPULSE_PROCESSOR__COMMIT_INTERVAL_S": "1",
    "TWEETPULSE_PROCESSOR__LAG_INTERVAL_S": "1",
    "TWEETPULSE_PROCESSOR__SESSION_TIMEOUT_S": "6",
    "TWEETPULSE_PROCESSOR__HEARTBEAT_INTERVAL_S": "1",
}


# -- the mapping, without a broker -----------------------------------------------------------------


def secured(**kafka: object) -> KafkaSettings:
    base = {
        "bootstrap_servers": "127.0.0.1:1,127.0.0.1:2",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": USER,
        "sasl_password": PASSWORD,
    }
    return KafkaSettings.model_validate({**base, **kafka})


def test_aiokafka_options_come_from_the_librdkafka_config_extra_winning_in_both() -> None:
    kafka = secured(
        client_id="tp-test",
        extra={"sasl.username": "bob", "ssl.endpoint.identification.algorithm": "none", "linger.ms": 5},
    )
    conf = kafka.confluent_config()
    options = aiokafka_options(kafka)
    assert conf["sasl.username"] == options["sasl_plain_username"] == "bob"  # extra wins, in both
    assert conf["sasl.password"] == options["sasl_plain_password"] == PASSWORD
    assert options["bootstrap_servers"] == conf["bootstrap.servers"]
    assert options["security_protocol"] == conf["security.protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert options["client_id"] == conf["client.id"] == "tp-test"
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname is False  # extra: none
    assert client_spec(kafka).not_applied == ("linger.ms",)  # tuning: named at worker start
    assert PASSWORD not in repr(client_spec(kafka))
    default = aiokafka_options(secured())["ssl_context"]
    assert default.check_hostname is True and default.verify_mode == ssl.CERT_REQUIRED  # as librdkafka


def test_every_typed_setting_reaches_the_processor_or_is_refused(tmp_path: Path) -> None:
    """Each key confluent_config() makes from the typed settings is one the processor honours; a new
    typed setting whose librdkafka key is not mapped is refused (next test), so the two cannot drift."""
    ca = make_ca(tmp_path, "typed")
    client = make_cert(tmp_path, ca, "client", "client")
    everything = secured(
        ssl_ca_location=ca.cert,
        ssl_certificate_location=client.cert,
        ssl_key_location=client.key,
        ssl_key_password="unused-the-key-is-not-encrypted",
        client_id="every-field",
    )
    unset = set(KafkaSettings.model_fields) - everything.model_fields_set - {"extra"}
    assert not unset, f"set {unset} here, and map its librdkafka key in processors/brokers.py"
    typed_keys = set(everything.confluent_config())
    assert typed_keys <= HONOURED, typed_keys - HONOURED
    spec = client_spec(everything)
    assert spec.tls is not None and spec.tls.cafile == str(ca.cert) and spec.tls.certfile == str(client.cert)
    assert spec.bootstrap_servers == ("127.0.0.1:1", "127.0.0.1:2") and spec.not_applied == ()
    options = aiokafka_options(everything)
    assert options["ssl_context"].get_ca_certs()[0]["subject"] == ((("commonName", "typed"),),)


@pytest.mark.parametrize(
    ("kafka", "names"),
    [
        ({"extra": {"ssl.keystore.location": "/etc/kafka/client.p12"}}, "ssl.keystore.location"),
        ({"extra": {"ssl.key.pem": "-----BEGIN PRIVATE KEY-----"}}, "ssl.key.pem"),
        ({"extra": {"sasl.oauthbearer.config": "principal=x"}}, "sasl.oauthbearer.config"),
        ({"extra": {"ssl.providers": "legacy"}}, "ssl.providers"),
        ({"extra": {"metadata.broker.list": "a:1"}}, "kafka.bootstrap_servers"),
        ({"extra": {"sasl.mechanism": "GSSAPI"}}, "GSSAPI"),
        ({"sasl_mechanism": "OAUTHBEARER"}, "OAUTHBEARER"),
        ({"extra": {"enable.ssl.certificate.verification": "maybe"}}, "enable.ssl.certificate.verification"),
        ({"extra": {"ssl.endpoint.identification.algorithm": "dns"}}, "ssl.endpoint.identification"),
        ({"ssl_ca_location": "/nonexistent/ca.pem"}, "/nonexistent/ca.pem"),
    ],
)
def test_a_setting_the_processor_cannot_honour_is_refused_in_one_line(kafka: dict, names: str) -> None:
    with pytest.raises(SettingsError) as refused:
        aiokafka_options(secured(**kafka))
    message = str(refused.value)
    assert names in message and "\n" not in message and PASSWORD not in message


# -- certificates, made here -----------------------------------------------------------------------


@dataclass(frozen=True)
class Pem:
    cert: Path
    key: Path


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def make_ca(folder: Path, name: str) -> Pem:
    ca = Pem(folder / f"{name}-ca.pem", folder / f"{name}-ca.key")
    openssl("req", "-x509", "-new", "-newkey", "rsa:2048", "-noenc", "-sha256", "-days", "2",
            "-subj", f"/CN={name}", "-keyout", ca.key, "-out", ca.cert,
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")  # fmt: skip
    return ca


def make_cert(folder: Path, ca: Pem, name: str, usage: str, san: str = "IP:127.0.0.1,DNS:localhost") -> Pem:
    """A certificate signed by `ca`; `usage` is serverAuth for a broker, clientAuth for a client."""
    pem = Pem(folder / f"{name}.pem", folder / f"{name}.key")
    ext = folder / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\nextendedKeyUsage={usage}Auth\nbasicConstraints=CA:FALSE\n")
    csr = folder / f"{name}.csr"
    openssl("req", "-new", "-newkey", "rsa:2048", "-noenc", "-subj", f"/CN={name}",
            "-keyout", pem.key, "-out", csr)  # fmt: skip
    openssl("x509", "-req", "-sha256", "-days", "2", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key,
            "-set_serial", str(uuid.uuid4().int >> 64), "-extfile", ext, "-out", pem.cert)  # fmt: skip
    return pem


# -- the broker and the settings of every role -------------------------------------------------------


@dataclass(frozen=True)
class Broker:
    port: int
    state: Path
    ca: Pem
    rogue_ca: Pem  # a CA that signed nothing the broker presents
    env: dict[str, str]  # kafka.sh's environment for this broker

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def free_port_pair(start: int = 19492) -> int:
    """A port P with P and P+1 (the controller) both free on 127.0.0.1."""
    for port in range(start, start + 200, 2):
        try:
            with socket.create_server(("127.0.0.1", port)), socket.create_server(("127.0.0.1", port + 1)):
                return port
        except OSError:
            continue
    raise RuntimeError("no two free consecutive ports")


def clean_env() -> dict[str, str]:
    """The environment without any TWEETPULSE_ setting of the caller (none leaks into a role)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TWEETPULSE_")}


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """The project's broker with SASL_SSL, started through the CLI as a user would, stopped at the end."""
    tls = tmp_path_factory.mktemp("tls")
    ca = make_ca(tls, "tweetpulse-test")
    server = make_cert(tls, ca, "broker", "server")
    rogue = make_ca(tls, "rogue")
    port = free_port_pair()
    state = tmp_path_factory.mktemp("secured-kafka") / "state"
    env = {
        **clean_env(),
        "TWEETPULSE_KAFKA_STATE": str(state),
        "TWEETPULSE_KAFKA_SECURITY": "sasl_ssl",
        "TWEETPULSE_KAFKA_SASL_USERS": f"{USER}:{PASSWORD}",
        "TWEETPULSE_KAFKA_SSL_CERT": str(server.cert),
        "TWEETPULSE_KAFKA_SSL_KEY": str(server.key),
        "TWEETPULSE_KAFKA_SSL_CA": str(ca.cert),
    }
    started = subprocess.run(
        [*TWEETPULSE, "kafka", "start", "--port", str(port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    info = Broker(port, state, ca, rogue, env)
    try:
        assert started.returncode == 0, started.stderr
        yield info
    finally:
        subprocess.run(
            [*TWEETPULSE, "kafka", "stop", "--port", str(port)], env=env, capture_output=True, timeout=120
        )


def role_env(broker: Broker, password: str = PASSWORD, **extra: str) -> dict[str, str]:
    """A role's environment: the secured cluster as users configure it, and this module's topics."""
    return {
        **clean_env(),
        "TWEETPULSE_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
        "TWEETPULSE_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "TWEETPULSE_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "TWEETPULSE_KAFKA__SASL_USERNAME": USER,
        "TWEETPULSE_KAFKA__SASL_PASSWORD": password,
        "TWEETPULSE_KAFKA__SSL_CA_LOCATION": str(broker.ca.cert),
        "TWEETPULSE_LOG_FORMAT": "text",
        **extra,
    }


# Set for every role of the pipeline: one key with an aiokafka equivalent (honoured by both
# libraries), one librdkafka tuning key (taken by the worker's confluent-kafka clients).
EXTRA = json.dumps({"ssl.endpoint.identification.algorithm": "https", "message.timeout.ms": 120000})


@dataclass
class Pipeline:
    env: dict[str, str]
    settings: Settings  # what load_settings() makes of `env`, for the in-process roles
    registry: ModelRegistry
    outputs: dict[str, str]  # every command's and worker's output, checked for the password


@pytest.fixture(scope="module")
def pipeline(
    broker: Broker,
    tiny_model_registry: ModelRegistry,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    suffix = uuid.uuid4().hex[:8]
    root = tmp_path_factory.mktemp("secured-registry") / "registry"
    shutil.copytree(tiny_model_registry.root, root)
    topics = {
        f"TWEETPULSE_TOPICS__{name.upper()}": f"secured.{name}.{suffix}"
        for name in ("raw", "sentiment", "dlq", "aggregates", "models", "labeled", "drift")
    }
    env = role_env(
        broker,
        **topics,
        TWEETPULSE_TOPICS__PARTITIONS="3",
        TWEETPULSE_KAFKA__EXTRA=EXTRA,
        TWEETPULSE_REGISTRY__ROOT=str(root),
    )
    with pytest.MonkeyPatch.context() as patch:
        for name in [k for k in os.environ if k.startswith("TWEETPULSE_")]:
            patch.delenv(name)
        for name, value in env.items():
            if name.startswith("TWEETPULSE_"):
                patch.setenv(name, value)
        settings = load_settings()
    assert settings.kafka.security_protocol == "SASL_SSL" and settings.kafka.sasl_password is not None
    yield Pipeline(env, settings, ModelRegistry(root), {})


def run(argv: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TWEETPULSE, *argv], env=env, capture_output=True, text=True, timeout=timeout)


# -- every role through the secured broker ---------------------------------------------------------


@pytest.fixture(scope="module")
def topics_created(pipeline: Pipeline) -> subprocess.CompletedProcess[str]:
    """`tweetpulse topics create` on the secured broker, before any worker or producer runs."""
    created = run(["topics", "create"], pipeline.env)
    pipeline.outputs["topics create"] = created.stdout + created.stderr
    return created


def test_topics_create_and_list_over_sasl_ssl(
    pipeline: Pipeline, topics_created: subprocess.CompletedProcess[str]
) -> None:
    assert topics_created.returncode == 0, topics_created.stderr
    names = [spec.name for spec in pipeline_topics(pipeline.settings)]
    outcome = dict(line.split(": ", 1) for line in topics_created.stdout.splitlines())
    assert outcome == dict.fromkeys(names, "created")
    listed = run(["topics", "list"], pipeline.env)
    assert listed.returncode == 0 and set(names) <= set(listed.stdout.split())


@dataclass
class Worker:
    process: WorkerProcess
    app_id: str  # its consumer group


@pytest.fixture(scope="module")
def worker(
    pipeline: Pipeline,
    topics_created: subprocess.CompletedProcess[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Worker]:
    """A real `tweetpulse process` worker on the secured broker, writing weak labels too."""
    assert topics_created.returncode == 0, topics_created.stderr
    app_id = f"tp-secured-{uuid.uuid4().hex[:6]}"
    env = worker_env(
        pipeline.settings,
        app_id,
        pipeline.registry.root,
        **{k: v for k, v in pipeline.env.items() if k.startswith("TWEETPULSE_")},
        **WORKER_TUNING,
        TWEETPULSE_RETRAIN__WEAK_LABELS="true",
        TWEETPULSE_RETRAIN__WEAK_LABEL_RATE="1",
    )
    process = WorkerProcess(env, tmp_path_factory.mktemp("secured-worker") / "worker.log")
    try:
        wait_until_assigned([process], pipeline.settings.topics.partitions, timeout=180)
        yield Worker(process, app_id)
    finally:
        process.stop()


def read_results(settings: Settings, expected: int, timeout: float = 120) -> list[SentimentResult]:
    """The sentiment topic from the beginning, through a librdkafka consumer on the secured broker."""
    consumer = Consumer(
        settings.kafka.confluent_config(
            **{"group.id": f"test-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
        )
    )
    consumer.subscribe([settings.topics.sentiment])
    results: list[SentimentResult] = []
    deadline = time.monotonic() + timeout
    try:
        while len(results) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                assert msg.error() is None, msg.error()
                results.append(SentimentResult.from_bytes(msg.value()))
    finally:
        consumer.close()
    return results


def test_produce_and_a_worker_classify_every_tweet_over_sasl_ssl(pipeline: Pipeline, worker: Worker) -> None:
    produced = run(["produce", "synthetic", "--count", str(TWEETS), "--seed", "7"], pipeline.env)
    pipeline.outputs["produce synthetic"] = produced.stdout + produced.stderr
    assert produced.returncode == 0, produced.stderr
    summary = json.loads(produced.stdout.split("summary ", 1)[1])
    assert summary["delivered"] == TWEETS and summary["failed"] == 0

    results = read_results(pipeline.settings, TWEETS)
    worker.process.check_alive()
    assert len(results) == TWEETS, worker.process.log_tail()
    assert len({r.id for r in results}) == TWEETS
    production = pipeline.registry.production()
    assert {r.model_version for r in results} == {production}
    assert all(r.label in LABELS and r.source == "synthetic" for r in results)
    log = worker.process.log_tail(200_000)
    # kafka.extra: the host name check is honoured, and the librdkafka tuning key is taken by the
    # worker's confluent-kafka clients (the aiokafka era named it as not applied)
    assert "not applied" not in log


def test_dashboard_lag_reading_over_sasl_ssl(pipeline: Pipeline, worker: Worker) -> None:
    admin = admin_client(pipeline.settings)
    group, topic = worker.app_id, pipeline.settings.topics.raw
    deadline = time.monotonic() + 60
    reading = measure_lag(admin, group, topic)
    while reading.total != 0 and time.monotonic() < deadline:  # commits follow every second
        time.sleep(0.5)
        reading = measure_lag(admin, group, topic)
    assert reading.total == 0 and reading.committed_partitions == pipeline.settings.topics.partitions
    assert reading.error is None


def test_retrain_reads_the_labeled_topic_over_sasl_ssl(pipeline: Pipeline, worker: Worker) -> None:
    read = read_labeled_tweets(pipeline.settings, timeout=60)
    assert read.labels, f"no weak labels read ({read.messages} messages)"
    assert {label.source for label in read.labels} == {"weak"} and not read.refused


def test_a_model_announcement_reaches_the_worker_over_sasl_ssl(pipeline: Pipeline, worker: Worker) -> None:
    """The worker's own aiokafka consumer (aiokafka_options) reads the announcement and swaps."""
    registry = pipeline.registry
    v1 = registry.production()
    v2 = registry.publish(registry.path(v1), {**registry.load(v1).manifest, "note": "secured swap"})
    registry.promote(v2)
    announce_production(pipeline.settings, v2)
    deadline = time.monotonic() + 90
    while (worker.process.status() or {}).get("model_version") != v2:
        worker.process.check_alive()
        assert time.monotonic() < deadline, f"no swap to {v2}:\n{worker.process.log_tail()}"
        time.sleep(0.5)


def test_bench_runs_its_pipeline_over_sasl_ssl(pipeline: Pipeline, tmp_path: Path) -> None:
    skip = [a for part in ("raw", "writes", "hostile", "latency", "scaling", "naive", "framework", "peer")
            for a in ("--skip", part)]  # fmt: skip
    report = tmp_path / "bench.json"
    bench = run(
        ["bench", "--tweets", "200", "--provider", "cpu", *skip, "--json", str(report),
         "--log-dir", str(tmp_path / "logs")],
        pipeline.env,
        timeout=400,
    )  # fmt: skip
    pipeline.outputs["bench"] = bench.stdout + bench.stderr
    for log in (tmp_path / "logs").rglob("*.log"):
        pipeline.outputs[f"bench {log.name}"] = log.read_text(errors="replace")
    assert bench.returncode == 0, bench.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["pipeline"]["tweets"] == 200 and data["figures"]["pipeline_tps"] > 0


def test_the_password_appears_in_no_output(pipeline: Pipeline, broker: Broker, worker: Worker) -> None:
    """Every command's and worker's output above, and the broker's own logs."""
    outputs = {**pipeline.outputs, "process": worker.process.log_path.read_text(errors="replace")}
    roles = {"topics create", "produce synthetic", "process", "bench"}
    assert roles <= set(outputs) and all(outputs[role] for role in roles), sorted(outputs)
    for name in ("format.log", "server.log"):
        outputs[f"broker {name}"] = (broker.state / "logs" / name).read_text(errors="replace")
    for name, text in outputs.items():
        assert PASSWORD not in text, f"{name} printed the SASL password"


# -- refusals ----------------------------------------------------------------------------------------


def refused_run(argv: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    """``tweetpulse ARGV`` expected to fail: the run and its seconds, failing the test if it hangs."""
    started = time.monotonic()
    try:
        done = run(argv, env, timeout=REFUSAL_BOUND_S)
    except subprocess.TimeoutExpired as hung:
        output = "".join(
            o.decode(errors="replace") if isinstance(o, bytes) else o or ""
            for o in (hung.stdout, hung.stderr)
        )
        assert WRONG_PASSWORD not in output and PASSWORD not in output
        pytest.fail(f"tweetpulse {' '.join(argv)} still ran after {REFUSAL_BOUND_S}s: {output[-3000:]}")
    output = done.stdout + done.stderr
    assert WRONG_PASSWORD not in output and PASSWORD not in output
    assert "Traceback" not in output, output[-3000:]
    assert done.returncode != 0 and done.stderr.strip(), output[-3000:]
    return done, time.monotonic() - started


@pytest.mark.parametrize(
    "argv",
    [["topics", "create"], ["produce", "synthetic", "--count", "5"], ["process"]],
    ids=["topics", "produce", "process"],
)
def test_a_wrong_password_is_refused_in_one_line_without_hanging(
    argv: list[str], broker: Broker, pipeline: Pipeline
) -> None:
    env = {
        **role_env(broker, WRONG_PASSWORD),
        "TWEETPULSE_REGISTRY__ROOT": str(pipeline.registry.root),  # process: a model to serve
        "TWEETPULSE_LOG_LEVEL": "WARNING",
        **WORKER_TUNING,
    }
    done, elapsed = refused_run(argv, env)
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(f"tweetpulse {argv[0]}"), lines[-1]
    assert "authentication" in lines[-1].lower() and USER in lines[-1], lines[-1]
    if argv[0] != "process":  # librdkafka's clients: the error_cb of tweetpulse/kafka.py
        assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]  # no FAIL log per retry
        assert "check kafka.sasl_username / kafka.sasl_password" in lines[0], lines[0]
        assert not done.stdout.strip(), done.stdout  # produce: no summary, nothing was delivered
        assert elapsed < LIBRDKAFKA_REFUSAL_S, f"refused after {elapsed:.1f}s"
    assert elapsed < REFUSAL_BOUND_S


@pytest.mark.parametrize(
    ("argv", "env", "names"),
    [
        (["topics", "list"], {"TWEETPULSE_KAFKA__SSL_CA_LOCATION": "rogue"}, "is not trusted"),
        (["produce", "synthetic", "--count", "5"], {"TWEETPULSE_KAFKA__SSL_CA_LOCATION": "rogue"}, "is not trusted"),
        (["topics", "describe"], {"TWEETPULSE_KAFKA__SASL_MECHANISM": "SCRAM-SHA-256"}, "does not offer SASL mechanism SCRAM-SHA-256"),
        (["produce", "synthetic", "--count", "5"], {"TWEETPULSE_KAFKA__SASL_MECHANISM": "SCRAM-SHA-256"}, "does not offer SASL mechanism SCRAM-SHA-256"),
    ],
    ids=["topics-rogue-ca", "produce-rogue-ca", "topics-sha256", "produce-sha256"],
)  # fmt: skip
def test_topics_and_produce_refuse_an_untrusted_certificate_or_an_unoffered_mechanism_in_one_line(
    argv: list[str], env: dict[str, str], names: str, broker: Broker
) -> None:
    """librdkafka retries these as it does a wrong password; the error_cb ends the command at once."""
    if env.get("TWEETPULSE_KAFKA__SSL_CA_LOCATION") == "rogue":
        env = {**env, "TWEETPULSE_KAFKA__SSL_CA_LOCATION": str(broker.rogue_ca.cert)}
    done, elapsed = refused_run(argv, {**role_env(broker), "TWEETPULSE_LOG_LEVEL": "WARNING", **env})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith(f"tweetpulse {argv[0]}") and names in lines[0], lines[0]
    assert f"{broker.bootstrap} " in lines[0] and "check kafka." in lines[0], lines[0]
    assert elapsed < LIBRDKAFKA_REFUSAL_S, f"refused after {elapsed:.1f}s"


def test_a_worker_refuses_a_broker_certificate_its_ca_did_not_sign(
    broker: Broker, pipeline: Pipeline
) -> None:
    env = {
        **role_env(broker, TWEETPULSE_KAFKA__SSL_CA_LOCATION=str(broker.rogue_ca.cert)),
        "TWEETPULSE_REGISTRY__ROOT": str(pipeline.registry.root),
        "TWEETPULSE_LOG_LEVEL": "WARNING",
        **WORKER_TUNING,
    }
    done = run(["process"], env, timeout=REFUSAL_BOUND_S)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        f"tweetpulse process: kafka: the TLS certificate of {broker.bootstrap} is not trusted "
        "(unable to get local issuer certificate); check kafka.ssl_ca_location"
    ]


def test_a_worker_names_a_sasl_mechanism_the_broker_does_not_offer(
    broker: Broker, pipeline: Pipeline
) -> None:
    env = {
        **role_env(broker, TWEETPULSE_KAFKA__SASL_MECHANISM="SCRAM-SHA-256"),  # the broker has SHA-512 only
        "TWEETPULSE_REGISTRY__ROOT": str(pipeline.registry.root),
        "TWEETPULSE_LOG_LEVEL": "WARNING",
        **WORKER_TUNING,
    }
    done = run(["process"], env, timeout=REFUSAL_BOUND_S)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert lines[-1].startswith(
        f"tweetpulse process: kafka: {broker.bootstrap} does not offer SASL mechanism SCRAM-SHA-256"
    ), lines[-1]
    assert PASSWORD not in done.stdout + done.stderr


def test_the_login_check_names_a_sasl_login_sent_to_a_plaintext_listener(kafka_bootstrap: str) -> None:
    """Against the shared PLAINTEXT broker: only a connection, nothing is written."""
    kafka = secured(bootstrap_servers=kafka_bootstrap, security_protocol="SASL_PLAINTEXT")
    with pytest.raises(SettingsError) as refused:
        verify_login(client_spec(kafka))
    assert str(refused.value) == (
        f"kafka: {kafka_bootstrap} does not take a SASL login: check kafka.security_protocol "
        "(SASL_PLAINTEXT) against the broker's listener"
    )


def test_the_process_command_refuses_a_setting_it_cannot_honour(broker: Broker, pipeline: Pipeline) -> None:
    env = {
        **role_env(broker),
        "TWEETPULSE_KAFKA__EXTRA": json.dumps({"ssl.keystore.location": "/etc/kafka/client.p12"}),
        "TWEETPULSE_REGISTRY__ROOT": str(pipeline.registry.root),
        "TWEETPULSE_LOG_LEVEL": "WARNING",
    }
    done = run(["process"], env, timeout=REFUSAL_BOUND_S)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("tweetpulse process: kafka setting 'ssl.keystore.location'"), lines[0]


# -- the local broker's scripts ----------------------------------------------------------------------


def test_dev_tls_makes_a_ca_and_a_broker_certificate_for_loopback(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    subprocess.run(["bash", str(DEV_TLS), str(folder)], check=True, capture_output=True)
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", folder / "ca.pem", folder / "broker.pem"],
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0, verified.stderr
    san = subprocess.run(
        ["openssl", "x509", "-in", folder / "broker.pem", "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "IP Address:127.0.0.1" in san and "DNS:localhost" in san
    assert (folder / "broker.key").read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert oct((folder / "broker.key").stat().st_mode & 0o777) == "0o600"
    before = (folder / "broker.pem").read_bytes()
    subprocess.run(["bash", str(DEV_TLS), str(folder)], check=True, capture_output=True)
    assert (folder / "broker.pem").read_bytes() == before  # kept: clients keep trusting the same CA


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"TWEETPULSE_KAFKA_SECURITY": "kerberos"}, "must be plaintext or sasl_ssl"),
        (
            {"TWEETPULSE_KAFKA_SECURITY": "sasl_ssl", "TWEETPULSE_KAFKA_SSL_CERT": "/x.pem"},
            "set all of TWEETPULSE_KAFKA_SSL_CERT",
        ),
        (
            {"TWEETPULSE_KAFKA_SECURITY": "sasl_ssl", "TWEETPULSE_KAFKA_SASL_USERS": "alice"},
            "each entry is NAME:PASSWORD",
        ),
    ],
)
def test_kafka_sh_refuses_a_bad_security_setup_in_one_line(
    env: dict[str, str], names: str, tmp_path: Path
) -> None:
    """Refused before any JVM starts (the jars are resolved first: the shared broker has them)."""
    port = free_port_pair(19700)
    done = subprocess.run(
        ["bash", str(KAFKA_SH), "start"],
        env={
            **clean_env(),
            "TWEETPULSE_KAFKA_PORT": str(port),
            "TWEETPULSE_KAFKA_STATE": str(tmp_path),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith("kafka: "), done.stderr
    assert names in done.stderr
    assert not (tmp_path / "kafka.pid").exists()
