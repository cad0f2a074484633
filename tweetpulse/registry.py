"""The versioned model registry that training publishes to and processors load from.

Layout of a registry root (a local folder; mount shared storage for several hosts)::

    ROOT/versions/v0001/   model.onnx, model.int8.onnx, tokenizer files, config.json,
                           metrics.json, manifest.json (sha256 of every other file)
    ROOT/PRODUCTION        the production version's name, replaced atomically
    ROOT/history.jsonl     every promotion, newest last (rollback walks it back)

A version folder appears atomically (written under a temporary name, then renamed) and is never
changed afterwards. Loading verifies every checksum and refuses an artifact that does not match.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tweetpulse.settings import Settings

MANIFEST = "manifest.json"
POINTER = "PRODUCTION"
HISTORY = "history.jsonl"
VARIANTS = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
REQUIRED_FILES = ("config.json", "tokenizer.json")


class ArtifactError(RuntimeError):
    """A model artifact is missing, incomplete or does not match its manifest."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelArtifact:
    """A verified, exported model folder."""

    path: Path
    manifest: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", self.path.name))

    @property
    def id2label(self) -> dict[int, str]:
        config = json.loads((self.path / "config.json").read_text())
        return {int(k): v for k, v in config["id2label"].items()}

    @property
    def max_length(self) -> int:
        return int(self.manifest.get("max_length", 128))

    def onnx_path(self, variant: str = "int8") -> Path:
        """The ONNX graph of `variant` ('int8' for CPU serving, 'fp32' for GPU); falls back to fp32."""
        if variant not in VARIANTS:
            raise ArtifactError(f"unknown model variant {variant!r}: expected one of {sorted(VARIANTS)}")
        path = self.path / VARIANTS[variant]
        return path if path.is_file() else self.path / VARIANTS["fp32"]

    @property
    def pad_token(self) -> str:
        return pad_token(self.path)

    @property
    def metrics(self) -> dict[str, Any]:
        path = self.path / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else {}


def pad_token(folder: Path) -> str:
    """The padding token of the tokenizer saved in `folder` ('[PAD]' in BERT vocabularies, '<pad>' in
    MPNet/RoBERTa ones), from its tokenizer_config.json."""
    config = folder / "tokenizer_config.json"
    if config.is_file():
        pad = json.loads(config.read_text()).get("pad_token")
        if isinstance(pad, dict):
            pad = pad.get("content")
        if pad:
            return str(pad)
    return "[PAD]"


def load_artifact(path: str | Path, verify: bool = True) -> ModelArtifact:
    """Open an exported model folder; with `verify`, refuse it unless every checksum matches."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"{path}: no {MANIFEST}; not a published model folder")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{manifest_path}: unreadable manifest ({exc})") from None
    files: dict[str, str] = manifest.get("files") or {}
    for required in (*REQUIRED_FILES, VARIANTS["fp32"]):
        if required not in files:
            raise ArtifactError(f"{path}: manifest lists no {required}")
    if verify:
        for name, expected in files.items():
            file = path / name
            if not file.is_file():
                raise ArtifactError(f"{path}: {name} is missing")
            actual = sha256_file(file)
            if actual != expected:
                raise ArtifactError(
                    f"{path}: checksum mismatch for {name} (manifest {expected[:12]}…, file {actual[:12]}…)"
                )
    return ModelArtifact(path, manifest)


def write_manifest(folder: Path, fields: dict[str, Any]) -> dict[str, Any]:
    """Checksum every file in `folder` and write manifest.json with `fields`."""
    files = {
        str(p.relative_to(folder)): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {**fields, "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")
    return manifest


class ModelRegistry:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.versions_dir = self.root / "versions"

    def versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(
            p.name for p in self.versions_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def path(self, version: str) -> Path:
        path = self.versions_dir / version
        if not path.is_dir():
            raise ArtifactError(
                f"no model version {version!r} in {self.root} (have: {', '.join(self.versions()) or 'none'})"
            )
        return path

    def load(self, version: str | None = None) -> ModelArtifact:
        """Load and verify `version` (default: production)."""
        version = version or self.production()
        if version is None:
            raise ArtifactError(
                f"registry {self.root} has no production model; train one with `tweetpulse train`"
            )
        return load_artifact(self.path(version))

    def publish(self, folder: str | Path, fields: dict[str, Any]) -> str:
        """Copy an exported folder in as the next version; returns the new version's name."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.versions_dir))
        try:
            shutil.copytree(folder, staging, dirs_exist_ok=True)
            while True:
                version = f"v{len(self.versions()) + 1:04d}"
                manifest = {**fields, "version": version, "created_at": datetime.now(UTC).isoformat()}
                write_manifest(staging, manifest)
                try:
                    staging.rename(self.versions_dir / version)  # atomic; fails if another publisher won
                    return version
                except OSError:
                    if not (self.versions_dir / version).exists():
                        raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def production(self) -> str | None:
        pointer = self.root / POINTER
        return pointer.read_text().strip() or None if pointer.is_file() else None

    def promote(self, version: str) -> ModelArtifact:
        """Make `version` production (verified first); the pointer is replaced atomically."""
        artifact = load_artifact(self.path(version))
        self._write_pointer(version)
        self._record("promote", version)
        return artifact

    def history(self) -> list[str]:
        """The production stack: promotions push a version, rollbacks pop one."""
        path = self.root / HISTORY
        stack: list[str] = []
        if path.is_file():
            for line in path.read_text().splitlines():
                entry = json.loads(line)
                if entry["action"] == "rollback":
                    stack.pop()
                else:
                    stack.append(entry["version"])
        return stack

    def rollback(self) -> str:
        """Return production to the version that was production before the current one."""
        stack = self.history()
        if len(stack) < 2:
            raise ArtifactError("nothing to roll back to: no earlier production version")
        target = stack[-2]
        load_artifact(self.path(target))
        self._write_pointer(target)
        self._record("rollback", target)
        return target

    def _record(self, action: str, version: str) -> None:
        entry = {"action": action, "version": version, "at": datetime.now(UTC).isoformat()}
        with (self.root / HISTORY).open("a") as f:
            f.write(json.dumps(entry) + "\n")

    def _write_pointer(self, version: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{POINTER}.{os.getpid()}"
        tmp.write_text(version + "\n")
        os.replace(tmp, self.root / POINTER)


def announce_production(
    settings: Settings, version: str, timeout: float = 30.0, registry_root: str | Path | None = None
) -> None:
    """Tell running processors (compacted topic, key ``production``) which version to serve."""
    from confluent_kafka import Producer

    from tweetpulse.contracts import ModelAnnouncement
    from tweetpulse.kafka import producer_config

    root = registry_root if registry_root is not None else settings.registry.root
    message = ModelAnnouncement(version=version, registry_root=str(root))
    producer = Producer(producer_config(settings))
    producer.produce(settings.topics.models, key=b"production", value=message.to_bytes())
    if producer.flush(timeout) != 0:
        raise RuntimeError(
            f"could not announce model {version} on {settings.topics.models} within {timeout}s"
        )
