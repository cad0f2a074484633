"""The versioned model registry that training publishes to and processors load from.

Layout of a registry root (a local folder; mount shared storage for several hosts)::

    ROOT/versions/v0001/   model.onnx, model.int8.onnx, tokenizer files, config.json,
                           metrics.json, manifest.json (sha256 of every other file)
    ROOT/PRODUCTION        the production version's name, replaced atomically
    ROOT/history.jsonl     every promotion, newest last (rollback walks it back)
    ROOT/.lock             flock'ed by publish, promote and rollback (one writer at a time)

A version folder appears atomically (written under a temporary name, then renamed) and is never
changed afterwards. Every file, folder and pointer is fsynced before it becomes visible, so a crash
or power loss leaves either the old state or the new one. Loading verifies every checksum and
refuses an artifact that does not match. Version names from outside (model announcements, the
command line) are untrusted: :meth:`ModelRegistry.path` accepts only ``v`` and digits, and only a
real folder directly inside ``versions/``. A loaded artifact reads only the files its manifest lists:
a file placed into a version folder afterwards (an int8 graph, a tokenizer config) is never read.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from confluent_kafka import Producer

from tweetpulse.contracts import ModelAnnouncement
from tweetpulse.kafka import producer_config

if TYPE_CHECKING:
    from tweetpulse.settings import Settings

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
POINTER = "PRODUCTION"
HISTORY = "history.jsonl"
LOCK = ".lock"
VARIANTS = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
REQUIRED_FILES = ("config.json", "tokenizer.json")
TOKENIZER_CONFIG = "tokenizer_config.json"
# What publish names versions (f"v{n:04d}"); ASCII digits only and bounded, so no path tricks fit.
VERSION_PATTERN = re.compile(r"v[0-9]{4,9}", re.ASCII)
_SHA256 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_ACTIONS = ("promote", "rollback")


class ArtifactError(RuntimeError):
    """A model artifact is missing, incomplete or does not match its manifest."""


def validate_version(version: object) -> str:
    """`version` itself if it is a well-formed version name (e.g. v0001); else :class:`ArtifactError`."""
    if not isinstance(version, str):
        raise ArtifactError(f"invalid model version: expected a string, got {type(version).__name__}")
    if not VERSION_PATTERN.fullmatch(version):
        shown = repr(version) if len(version) <= 40 else f"{version[:40]!r}… ({len(version)} chars)"
        raise ArtifactError(f"invalid model version {shown}: expected 'v' and 4 to 9 digits, e.g. v0001")
    return version


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_json(path: Path) -> Any:
    """The JSON in `path`; :class:`ArtifactError` naming the file when it cannot be read or parsed."""
    try:
        return json.loads(path.read_bytes())
    except OSError as exc:
        raise ArtifactError(f"{path}: unreadable ({exc.strerror or exc})") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from None


@dataclass(frozen=True)
class ModelArtifact:
    """A verified, exported model folder. The files it may lack (int8 graph, tokenizer config,
    metrics) are read through :meth:`file`; those it needs are in every published manifest."""

    path: Path
    manifest: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", self.path.name))

    def file(self, name: str) -> Path | None:
        """`name` in the folder if it is there and the manifest lists it (so it was verified), else
        None. A manifest without 'files' is an unpublished export held in memory by the process that
        wrote the folder (load_artifact never returns one): all of its files are readable."""
        listed = self.manifest.get("files")
        if listed is not None and name not in listed:
            return None
        path = self.path / name
        return path if path.is_file() else None

    @property
    def id2label(self) -> dict[int, str]:
        """Class index -> label, from config.json; the ids must be exactly 0..n-1 (the logits' columns)."""
        config = _read_json(self.path / "config.json")
        labels = config.get("id2label") if isinstance(config, dict) else None
        if not isinstance(labels, dict) or not labels:
            raise ArtifactError(f"{self.path}: config.json has no id2label mapping")
        try:
            mapping = {int(k): v for k, v in labels.items()}
        except ValueError:
            raise ArtifactError(f"{self.path}: config.json id2label has a non-integer id") from None
        if sorted(mapping) != list(range(len(mapping))) or not all(
            isinstance(v, str) for v in mapping.values()
        ):
            raise ArtifactError(f"{self.path}: config.json id2label must map ids 0..n-1 to label names")
        return mapping

    @property
    def max_length(self) -> int:
        value = self.manifest.get("max_length", 128)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ArtifactError(f"{self.path}: manifest max_length {value!r} is not a positive integer")
        return value

    def onnx_path(self, variant: str = "int8") -> Path:
        """The ONNX graph of `variant` ('int8' for CPU serving, 'fp32' for GPU); falls back to fp32."""
        if variant not in VARIANTS:
            raise ArtifactError(f"unknown model variant {variant!r}: expected one of {sorted(VARIANTS)}")
        return self.file(VARIANTS[variant]) or self.path / VARIANTS["fp32"]

    @property
    def pad_token(self) -> str:
        return _pad_token_of(self.file(TOKENIZER_CONFIG))

    @property
    def metrics(self) -> dict[str, Any]:
        path = self.file("metrics.json")
        if path is None:
            return {}
        metrics = _read_json(path)
        if not isinstance(metrics, dict):
            raise ArtifactError(f"{path}: not a JSON object")
        return metrics


def pad_token(folder: Path) -> str:
    """The padding token of the tokenizer saved in `folder` ('[PAD]' in BERT vocabularies, '<pad>' in
    MPNet/RoBERTa ones), from its tokenizer_config.json."""
    path = folder / TOKENIZER_CONFIG
    return _pad_token_of(path if path.is_file() else None)


def _pad_token_of(path: Path | None) -> str:
    """The pad token a tokenizer_config.json names; BERT's '[PAD]' without one."""
    if path is not None:
        config = _read_json(path)
        if not isinstance(config, dict):
            raise ArtifactError(f"{path}: not a JSON object")
        pad = config.get("pad_token")
        if isinstance(pad, dict):
            pad = pad.get("content")
        if pad:
            return str(pad)
    return "[PAD]"


def load_artifact(path: str | Path, verify: bool = True) -> ModelArtifact:
    """Open an exported model folder; with `verify`, refuse it unless every checksum matches.

    Every reason not to serve it (a missing, unreadable or malformed file, a checksum mismatch)
    raises :class:`ArtifactError` naming the folder and the problem, never another exception.
    """
    path = Path(path)
    try:
        manifest = _read_manifest(path)
        files = _listed_files(path, manifest)
        if verify:
            _verify_checksums(path, files)
            _warn_unlisted(path, files)
        artifact = ModelArtifact(path, manifest)
        _ = artifact.id2label, artifact.max_length  # parsed lazily: fail now, not when serving
    except ArtifactError:
        raise
    except Exception as exc:  # whatever was not foreseen still means: do not serve this folder
        raise ArtifactError(f"{path}: cannot load ({type(exc).__name__}: {exc})") from exc
    return artifact


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"{path}: no {MANIFEST}; not a published model folder")
    try:
        manifest = json.loads(manifest_path.read_bytes())
    except OSError as exc:
        raise ArtifactError(f"{manifest_path}: unreadable manifest ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise ArtifactError(f"{manifest_path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{manifest_path}: manifest is not a JSON object")
    return manifest


def _listed_files(path: Path, manifest: dict[str, Any]) -> dict[str, str]:
    """The manifest's {relative name: sha256}, each name a plain path inside the folder."""
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ArtifactError(f"{path}: manifest has no 'files' object")
    for name, digest in files.items():
        if not name or Path(name).is_absolute() or ".." in Path(name).parts:
            raise ArtifactError(f"{path}: manifest lists a file outside the folder: {name[:80]!r}")
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise ArtifactError(f"{path}: manifest checksum of {name} is not a sha256 hex digest")
    for required in (*REQUIRED_FILES, VARIANTS["fp32"]):
        if required not in files:
            raise ArtifactError(f"{path}: manifest lists no {required}")
    return files


def _verify_checksums(path: Path, files: dict[str, str]) -> None:
    root = path.resolve()
    for name, expected in files.items():
        file = path / name
        if not file.resolve().is_relative_to(root):
            raise ArtifactError(f"{path}: {name} links outside the model folder")
        if not file.is_file():
            raise ArtifactError(f"{path}: {name} is missing")
        try:
            actual = sha256_file(file)
        except OSError as exc:
            raise ArtifactError(f"{path}: cannot read {name} ({exc.strerror or exc})") from None
        if actual != expected:
            raise ArtifactError(
                f"{path}: checksum mismatch for {name} (manifest {expected[:12]}…, file {actual[:12]}…)"
            )


def _warn_unlisted(path: Path, files: dict[str, str]) -> None:
    """Files the manifest does not list are never read; nothing should add any, so say it did."""
    unlisted = sorted(_file_names(path) - set(files) - {MANIFEST})
    if unlisted:
        log.warning(
            "model folder holds files its manifest does not list; they are ignored",
            extra={"path": str(path), "unlisted": unlisted[:10], "count": len(unlisted)},
        )


def _file_names(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def _checksums(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def write_manifest(folder: Path, fields: dict[str, Any]) -> dict[str, Any]:
    """Checksum every file in `folder` and write manifest.json with `fields` (durably)."""
    manifest = {**fields, "files": _checksums(folder)}
    write_durably(folder / MANIFEST, _manifest_bytes(manifest))
    return manifest


def _manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n").encode()


# -- durability -------------------------------------------------------------------------------


def _unique_token() -> str:
    """For temporary names on a volume several hosts share: hostname + random (pids repeat: 1 in
    every container)."""
    host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:64] or "host"
    return f"{host}-{uuid.uuid4().hex}"


def _fsync(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if not directory or exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise  # some filesystems cannot fsync a directory and need not: tolerate only that
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """Every file and folder under `folder`, deepest first, then `folder` itself."""
    for dirpath, _dirs, files in os.walk(folder, topdown=False):
        for name in files:
            _fsync(Path(dirpath) / name)
        _fsync(Path(dirpath), directory=True)


def write_durably(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data`: readers, and a crash or power loss, see the old content
    or all of the new (a unique temporary name in the same folder, fsynced, renamed, folder fsynced)."""
    tmp = path.with_name(f".{path.name}.{_unique_token()}.tmp")
    try:
        with tmp.open("xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync(path.parent, directory=True)


class ModelRegistry:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.versions_dir = self.root / "versions"

    def versions(self) -> list[str]:
        """Published versions, oldest first (staging folders and stray names are not versions)."""
        if not self.versions_dir.is_dir():
            return []
        names = [
            p.name
            for p in self.versions_dir.iterdir()
            if VERSION_PATTERN.fullmatch(p.name) and p.is_dir() and not p.is_symlink()
        ]
        return sorted(names, key=lambda name: int(name[1:]))

    def path(self, version: str) -> Path:
        """The folder of `version`, which must be a valid name and a real folder directly inside
        versions/ (a symlink is refused, wherever it points); :class:`ArtifactError` otherwise."""
        validate_version(version)
        path = self.versions_dir / version
        try:
            real, expected = path.resolve(), self.versions_dir.resolve() / version
        except (OSError, RuntimeError) as exc:  # a symlink loop
            raise ArtifactError(
                f"model version {version!r} in {self.root} cannot be resolved ({exc})"
            ) from None
        if real != expected:
            raise ArtifactError(f"model version {version!r} in {self.root} is a link, not a published folder")
        if not path.is_dir():
            raise ArtifactError(
                f"no model version {version!r} in {self.root} (have: {', '.join(self.versions()) or 'none'})"
            )
        return path

    def load(self, version: str | None = None) -> ModelArtifact:
        """Load and verify `version` (default: production)."""
        if version is None:
            version = self.production()
        if version is None:
            raise ArtifactError(
                f"registry {self.root} has no production model; train one with `tweetpulse train`"
            )
        artifact = load_artifact(self.path(version))
        if artifact.manifest.get("version") != version:  # a manifest copied from another version
            raise ArtifactError(
                f"{artifact.path}: manifest names version {artifact.manifest.get('version')!r}, not {version}"
            )
        return artifact

    def publish(self, folder: str | Path, fields: dict[str, Any]) -> str:
        """Copy an exported folder in as the next version; returns the new version's name."""
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = self.versions_dir / f".staging-{_unique_token()}"
        try:
            shutil.copytree(folder, staging)
            files = _checksums(staging)  # hashing and syncing outside the lock: big models do not queue
            _fsync_tree(staging)
            with self._locked():
                return self._rename_in(staging, {**fields, "files": files})
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _rename_in(self, staging: Path, fields: dict[str, Any]) -> str:
        """Under the lock: name the staged folder the next version. The loop only matters where the
        lock does not reach (a filesystem without flock): the number grows on every collision."""
        number = 0
        while True:
            number = max(number, self._next_number())
            version = f"v{number:04d}"
            manifest = {**fields, "version": version, "created_at": datetime.now(UTC).isoformat()}
            write_durably(staging / MANIFEST, _manifest_bytes(manifest))
            try:
                os.rename(staging, self.versions_dir / version)  # atomic; fails if the name is taken
            except OSError:
                if not os.path.lexists(self.versions_dir / version):
                    raise
                number += 1
                continue
            _fsync(self.versions_dir, directory=True)
            return version

    def _next_number(self) -> int:
        """max(existing) + 1: versions may have been deleted, so their count is no guide."""
        taken = [int(p.name[1:]) for p in self.versions_dir.iterdir() if VERSION_PATTERN.fullmatch(p.name)]
        return max(taken, default=0) + 1

    def production(self) -> str | None:
        """The version the PRODUCTION pointer names, or None before the first promotion. The name is
        not validated here; :meth:`load` and :meth:`path` refuse one that is not a version."""
        pointer = self.root / POINTER
        try:
            text = pointer.read_bytes().decode("utf-8", "replace").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ArtifactError(f"{pointer}: unreadable ({exc.strerror or exc})") from None
        return text or None

    def promote(self, version: str) -> ModelArtifact:
        """Make `version` production (verified first); the pointer is replaced atomically."""
        artifact = self.load(version)  # outside the lock: a published version never changes
        with self._locked():
            self._write_pointer(version)
            self._record("promote", version)
        return artifact

    def history(self) -> list[str]:
        """The production stack: promotions push a version, rollbacks pop one. Unreadable lines (a
        write torn by a crash, garbage) are skipped with one warning."""
        path = self.root / HISTORY
        try:
            lines = path.read_bytes().decode("utf-8", "replace").splitlines()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ArtifactError(f"{path}: unreadable ({exc.strerror or exc})") from None
        stack: list[str] = []
        skipped: list[int] = []
        for number, line in enumerate(lines, 1):
            entry = _history_entry(line)
            if entry is None:
                if line.strip():
                    skipped.append(number)
            elif entry[0] == "promote":
                stack.append(entry[1])
            elif stack:  # a rollback; one with nothing before it is ignored
                stack.pop()
        if skipped:
            log.warning(
                "registry history: skipped unreadable lines",
                extra={"path": str(path), "skipped": len(skipped), "first_line": skipped[0]},
            )
        return stack

    def rollback(self) -> str:
        """Return production to the version that was production before the current one."""
        with self._locked():
            stack = self.history()
            if len(stack) < 2:
                raise ArtifactError("nothing to roll back to: no earlier production version")
            target = stack[-2]
            self.load(target)
            self._write_pointer(target)
            self._record("rollback", target)
        return target

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time, across processes and hosts (Linux maps flock to NFS byte-range locks).
        Not reentrant: never publish/promote/rollback while holding it."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / LOCK).open("ab") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _record(self, action: str, version: str) -> None:
        entry = {"action": action, "version": version, "at": datetime.now(UTC).isoformat()}
        append_line(self.root / HISTORY, json.dumps(entry).encode())

    def _write_pointer(self, version: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_durably(self.root / POINTER, (version + "\n").encode())


def append_line(path: Path, line: bytes) -> None:
    """Append one line to a log durably (fsynced; a new file's folder too). A crash can leave only a
    torn last line, which readers skip; the next line is not glued onto it."""
    created = not path.exists()
    with path.open("a+b") as f:
        f.write((b"\n" if _ends_mid_line(f) else b"") + line + b"\n")
        f.flush()
        os.fsync(f.fileno())
    if created:
        _fsync(path.parent, directory=True)


def _ends_mid_line(f: BinaryIO) -> bool:
    size = f.seek(0, os.SEEK_END)
    if size == 0:
        return False
    f.seek(size - 1)
    return f.read(1) != b"\n"


def _history_entry(line: str) -> tuple[str, str] | None:
    """(action, version) of one history line, or None when it is not a well-formed entry."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or entry.get("action") not in _ACTIONS:
        return None
    version = entry.get("version")
    if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
        return None
    return entry["action"], version


def announce_production(
    settings: Settings, version: str, timeout: float = 30.0, registry_root: str | Path | None = None
) -> None:
    """Tell running processors (compacted topic, key ``production``) which version to serve."""
    validate_version(version)
    root = registry_root if registry_root is not None else settings.registry.root
    message = ModelAnnouncement(version=version, registry_root=str(root))
    producer = Producer(producer_config(settings))
    producer.produce(settings.topics.models, key=b"production", value=message.to_bytes())
    if producer.flush(timeout) != 0:
        raise RuntimeError(
            f"could not announce model {version} on {settings.topics.models} within {timeout}s"
        )
