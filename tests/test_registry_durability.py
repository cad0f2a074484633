"""The registry on a volume shared by several processes and hosts: version numbering, the writers'
lock, fsync before anything becomes visible, unique temporary names, a torn history file."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_registry import export_folder

from tweetpulse.registry import HISTORY, POINTER, VERSION_PATTERN, ArtifactError, ModelRegistry

FORK = multiprocessing.get_context("fork")  # children inherit the test's functions and folders


@contextmanager
def in_child(target: Callable[..., None], *args: object) -> Iterator[multiprocessing.Process]:
    """Run `target` in a forked process; never leave it behind, even when the test fails."""
    process = FORK.Process(target=target, args=args, daemon=True)
    process.start()
    try:
        yield process
    finally:
        process.join(30)
        if process.is_alive():
            process.kill()
            process.join()


def _publish(root: Path, folder: Path) -> None:
    ModelRegistry(root).publish(folder, {})


# -- version numbers ---------------------------------------------------------------------------


def test_the_next_version_after_old_ones_were_deleted_is_max_plus_one(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    for tag in "abc":
        registry.publish(export_folder(tmp_path, tag), {})
    shutil.rmtree(registry.path("v0001"))
    shutil.rmtree(registry.path("v0002"))
    with in_child(_publish, registry.root, export_folder(tmp_path, "d")) as child:
        child.join(20)  # the count-based numbering looped forever here
        assert not child.is_alive() and child.exitcode == 0
    assert registry.versions() == ["v0003", "v0004"]


def test_names_taken_by_a_stray_file_or_link_are_skipped_not_retried_forever(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    registry.publish(export_folder(tmp_path, "a"), {})
    (registry.versions_dir / "v0002").write_text("not a folder")
    (registry.versions_dir / "v0003").symlink_to(tmp_path)
    with in_child(_publish, registry.root, export_folder(tmp_path, "b")) as child:
        child.join(20)
        assert not child.is_alive() and child.exitcode == 0
    assert registry.versions() == ["v0001", "v0004"]


def test_versions_sort_by_number_past_v9999(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    registry.publish(export_folder(tmp_path, "a"), {})
    os.rename(registry.path("v0001"), registry.versions_dir / "v9999")
    (registry.versions_dir / "v9999" / "manifest.json").unlink()  # numbering needs no manifest
    assert registry.publish(export_folder(tmp_path, "b"), {}) == "v10000"
    assert registry.versions() == ["v9999", "v10000"]


# -- concurrent writers ------------------------------------------------------------------------


def _publish_and_promote(root: Path, folder: Path, rounds: int, out: multiprocessing.Queue) -> None:
    registry = ModelRegistry(root)
    for _ in range(rounds):
        version = registry.publish(folder, {"writer": folder.name})
        registry.promote(version)
        out.put(version)


def _assert_production_is_complete(registry: ModelRegistry) -> str:
    version = registry.production()
    assert version is not None and VERSION_PATTERN.fullmatch(version), repr(version)
    assert registry.load(version).version == version  # every file there and verified
    return version


def test_two_processes_publishing_at_once_get_distinct_versions_and_production_is_always_complete(
    tmp_path: Path,
) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    registry.promote(registry.publish(export_folder(tmp_path, "seed"), {}))
    rounds, out = 12, FORK.Queue()
    folders = [export_folder(tmp_path, tag) for tag in "ab"]
    seen: set[str] = set()
    with (
        in_child(_publish_and_promote, registry.root, folders[0], rounds, out) as a,
        in_child(_publish_and_promote, registry.root, folders[1], rounds, out) as b,
    ):
        while a.is_alive() or b.is_alive():
            seen.add(_assert_production_is_complete(registry))
    assert (a.exitcode, b.exitcode) == (0, 0)
    published = [out.get(timeout=5) for _ in range(2 * rounds)]
    assert sorted(published) == [f"v{n:04d}" for n in range(2, 2 * rounds + 2)]
    assert seen <= {"v0001", *published} and _assert_production_is_complete(registry) in published
    history = (registry.root / HISTORY).read_text().splitlines()
    assert [json.loads(line)["action"] for line in history] == ["promote"] * (2 * rounds + 1)
    assert not [p.name for p in registry.versions_dir.iterdir() if p.name.startswith(".")]  # no staging left


def test_publish_and_promote_wait_for_the_writers_lock(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    out = FORK.Queue()
    child = FORK.Process(
        target=_publish_and_promote, args=(registry.root, export_folder(tmp_path, "a"), 1, out), daemon=True
    )
    with registry._locked():  # started inside, so the child cannot take the lock first
        child.start()
        time.sleep(1.0)
        waited = registry.versions() == [] and child.is_alive()  # staged; the rename waits
    child.join(20)  # after the release: asserting inside would leave the child blocked
    assert waited and child.exitcode == 0
    assert out.get(timeout=5) == "v0001" and registry.production() == "v0001"


# -- durability --------------------------------------------------------------------------------


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths os.fsync is called on (resolved through /proc), in order; fsync still runs."""
    real, paths = os.fsync, []

    def spy(fd: int) -> None:
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return paths


def test_publish_fsyncs_every_file_and_folder_before_the_version_appears(
    tmp_path: Path, fsynced: list[str]
) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    folder = export_folder(tmp_path, "a")
    (folder / "sub").mkdir()
    (folder / "sub" / "vocab.txt").write_text("[PAD]")
    version = registry.publish(folder, {})
    versions_dir = registry.versions_dir.resolve()
    staged = [Path(p).relative_to(versions_dir) for p in fsynced if ".staging-" in p]
    assert len({p.parts[0] for p in staged}) == 1  # all written under one staging name, then renamed
    inside = {"/".join(p.parts[1:]) for p in staged}
    assert inside >= {"model.onnx", "tokenizer.json", "config.json", "sub/vocab.txt", "sub", ""}
    assert [p for p in inside if p.startswith(".manifest.json.")]  # the manifest's bytes, before its name
    assert fsynced[-1] == str(versions_dir)  # the rename itself, last
    assert registry.load(version).version == version


def test_promote_fsyncs_the_pointer_history_and_registry_folder(tmp_path: Path, fsynced: list[str]) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    version = registry.publish(export_folder(tmp_path, "a"), {})
    fsynced.clear()
    registry.promote(version)
    root = str(registry.root.resolve())
    pointer_tmp = [p for p in fsynced if Path(p).name.startswith(f".{POINTER}.")]
    assert len(pointer_tmp) == 1 and Path(pointer_tmp[0]).parent == registry.root.resolve()
    assert f"{root}/{HISTORY}" in fsynced and fsynced.count(root) >= 1
    assert fsynced.index(pointer_tmp[0]) < fsynced.index(root)  # the file's bytes before its name


def test_temporary_names_carry_the_hostname_and_a_random_token_not_the_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moved: list[str] = []
    for name in ("rename", "replace"):
        real = getattr(os, name)
        monkeypatch.setattr(
            os, name, lambda src, dst, _real=real: (moved.append(Path(src).name), _real(src, dst))
        )
    registry = ModelRegistry(tmp_path / "reg")
    registry.promote(registry.publish(export_folder(tmp_path, "a"), {}))
    registry.promote(registry.publish(export_folder(tmp_path, "b"), {}))
    host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())
    assert len(moved) >= 6 and len(set(moved)) == len(moved)  # staging, manifest, pointer: twice
    for name in moved:
        assert re.search(re.escape(host) + r"-[0-9a-f]{32}", name), name
        assert not name.endswith(f".{os.getpid()}"), name
    leftovers = [p.name for p in (*registry.root.iterdir(), *registry.versions_dir.iterdir())]
    assert sorted(leftovers) == sorted([".lock", HISTORY, POINTER, "v0001", "v0002", "versions"])


# -- a torn history file -----------------------------------------------------------------------


@pytest.fixture
def torn_history(tmp_path: Path) -> ModelRegistry:
    """v0001..v0003 promoted in order, with garbage lines and a torn last line in the history."""
    registry = ModelRegistry(tmp_path / "reg")
    for tag in "abc":
        registry.promote(registry.publish(export_folder(tmp_path, tag), {}))
    path = registry.root / HISTORY
    lines = path.read_bytes().splitlines(keepends=True)
    garbage = [b'{"action": "rollback"}\n', b"\x00\xff not json\n", b'["promote", "v0002"]\n']
    path.write_bytes(
        b'{"action": "rollback", "version": "v0001"}\n' + lines[0] + b"".join(garbage) + b"".join(lines[1:])
    )
    with path.open("ab") as f:
        f.write(b'{"action": "promote", "vers')  # a crash mid-write
    return registry


def test_a_torn_history_line_is_skipped_and_the_next_entry_starts_on_its_own_line(
    torn_history: ModelRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    assert torn_history.history() == ["v0001", "v0002", "v0003"]
    assert [r.getMessage() for r in caplog.records] == ["registry history: skipped unreadable lines"]
    assert caplog.records[0].skipped == 4
    assert torn_history.rollback() == "v0002"
    assert torn_history.history() == ["v0001", "v0002"]
    last = (torn_history.root / HISTORY).read_bytes().splitlines()[-1]
    assert json.loads(last)["version"] == "v0002"  # not glued onto the torn tail


def _cli(registry: ModelRegistry, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "tweetpulse.cli", "models", *args, "--registry", str(registry.root)]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=60, env={**os.environ, "NO_COLOR": "1"}
    )


def test_tweetpulse_models_tolerates_a_torn_history_and_warns_once(torn_history: ModelRegistry) -> None:
    listing = _cli(torn_history, "list")
    assert listing.returncode == 0, listing.stderr
    assert re.search(r"^\* v0003 ", listing.stdout, re.M)
    rollback = _cli(torn_history, "rollback", "--no-announce")
    assert rollback.returncode == 0, rollback.stderr
    assert rollback.stdout.strip() == "production: v0002"
    assert rollback.stderr.count("skipped unreadable lines") == 1
    assert torn_history.production() == "v0002"


def test_tweetpulse_models_refuses_a_path_as_a_version_with_a_one_line_error(
    torn_history: ModelRegistry,
) -> None:
    promoted = _cli(torn_history, "promote", "../../etc", "--no-announce")
    assert promoted.returncode == 1
    assert promoted.stderr.strip().splitlines() == [
        "tweetpulse models: invalid model version '../../etc': expected 'v' and 4 to 9 digits, e.g. v0001"
    ]
    with pytest.raises(ArtifactError):
        torn_history.path("../../etc")
    assert torn_history.production() == "v0003"
