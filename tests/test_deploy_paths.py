"""Every HTTP path and port that deploy/ names (probes, scrape annotations, healthchecks) is served.

The k8s probes and the Compose healthcheck once pointed at a path the worker answered with 404, so
no processor would ever have become ready. This reads every such reference out of deploy/ and asks a
real worker for each one, on the port the references name.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import test_processors_pipeline as processor_tests
import yaml
from prometheus_client.parser import text_string_to_metric_families
from test_processors_pipeline import (  # the workers' test helpers, shared rather than copied
    Worker,
    wait_for,
    wait_for_assignment,
)

from tweetpulse.settings import ProcessorSettings, Settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


class _Loader(yaml.SafeLoader):
    """Reads Compose's custom tags (`!reset`, `!override`) as plain values."""


_Loader.add_multi_constructor("!", lambda loader, suffix, node: None)

LOCAL_URL = re.compile(r"https?://(?:127\.0\.0\.1|localhost|0\.0\.0\.0):(\d+)(/[\w/.-]*)")

registry = processor_tests.registry  # fixtures
start_worker = processor_tests.start_worker


def _walk(node: Any, ports: dict[str, int]) -> Iterator[tuple[int | str, str]]:
    if isinstance(node, dict):
        for port in node.get("ports", []) if isinstance(node.get("ports"), list) else []:
            if isinstance(port, dict) and "name" in port and "containerPort" in port:
                ports[port["name"]] = port["containerPort"]
        annotations = node.get("annotations") or {}
        if isinstance(annotations, dict) and "prometheus.io/path" in annotations:
            yield int(annotations["prometheus.io/port"]), annotations["prometheus.io/path"]
        probe = node.get("httpGet")
        if isinstance(probe, dict):
            yield probe["port"], probe["path"]
        for value in node.values():
            yield from _walk(value, ports)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value, ports)


def http_references() -> set[tuple[int, str]]:
    """(port, path) of every HTTP endpoint named in deploy/: structured YAML and any local URL."""
    found: set[tuple[int, str]] = set()
    for file in sorted(p for p in DEPLOY.rglob("*") if p.is_file() and "schemas" not in p.parts):
        text = file.read_text(errors="replace")
        found |= {(int(port), path) for port, path in LOCAL_URL.findall(text)}
        if file.suffix in (".yaml", ".yml"):
            ports: dict[str, int] = {}
            refs = [ref for doc in yaml.load_all(text, Loader=_Loader) for ref in _walk(doc, ports)]
            found |= {(ports[p] if isinstance(p, str) else int(p), path) for p, path in refs}
    return found


def test_deploy_names_only_the_processor_web_port_and_some_health_paths() -> None:
    refs = http_references()
    paths = {path for _, path in refs}
    assert {"/metrics", "/livez", "/readyz"} <= paths, refs
    assert {port for port, _ in refs} == {ProcessorSettings().web_port}, refs


def test_a_worker_serves_every_http_path_and_port_named_in_deploy(
    settings: Settings, start_worker: Callable[..., Worker]
) -> None:
    port = ProcessorSettings().web_port
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            pytest.fail(f"port {port} (the worker's default web port, named in deploy/) is in use")
    worker = start_worker(port=port)
    wait_for_assignment([worker], settings.topics.partitions)
    wait_for(lambda: worker.get("/readyz") is not None, 30, "ready", [worker])
    for ref_port, path in sorted(http_references()):
        assert ref_port == worker.port
        body = worker.get(path)
        assert body is not None, f"{path} on port {ref_port} is not served (named in deploy/)"
        if path == "/metrics":
            names = {family.name for family in text_string_to_metric_families(body.decode())}
            assert "tweetpulse_processor_messages_in" in names
