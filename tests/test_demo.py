"""`tweetpulse demo` (`make demo`, the README's first command) end to end on the real broker."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

import pytest
from confluent_kafka.admin import AdminClient
from test_processors_pipeline import WORKER_ENV  # tests/ is on sys.path

from tweetpulse.bench.workers import free_port, worker_env
from tweetpulse.cli import build_parser
from tweetpulse.processors.demo import (
    FIRST_PRESET,
    FIRST_SAMPLES,
    FIRST_SEED,
    IMPROVE_ENV,
    TRAIN,
    DemoOptions,
)
from tweetpulse.registry import ModelRegistry
from tweetpulse.settings import Settings
from tweetpulse.training.presets import MPNET, PRESETS


def test_demo_trains_its_first_model_with_lora_on_mpnets_first_layers_on_balanced_builtin_data() -> None:
    args = build_parser().parse_args(TRAIN)
    assert (args.preset, args.data, args.balance, args.promote) == ("mpnet6", ["builtin"], True, True)
    assert args.max_samples == 4800  # 150 steps: serving within the demo's first four minutes
    preset = PRESETS["mpnet6"]
    assert (preset.method, preset.base, preset.layers) == ("lora", MPNET, 6)  # LoRA on a BERT-family encoder


def test_demo_retrains_the_same_recipe_on_another_sample_single_threaded_and_promotes_it() -> None:
    first, again = (
        build_parser().parse_args(TRAIN),
        build_parser().parse_args(DemoOptions().improve_command()),
    )
    assert (again.preset, again.data, again.balance, again.promote) == ("mpnet6", ["builtin"], True, True)
    assert again.max_samples == first.max_samples and again.seed != first.seed  # another sample
    assert IMPROVE_ENV == {"OMP_NUM_THREADS": "1"}


def test_demo_retrains_only_its_own_first_model_never_a_users_model() -> None:
    def manifest(*train: str, preset: str = "mpnet6", val: str = "10% split", balance: bool = True,
                 max_samples: int | None = 4800, seed: int = 13, max_steps: int | None = None,
                 teacher: str | None = None) -> dict:  # fmt: skip
        return {
            "preset": preset,
            "data": {"train": list(train), "val": val},
            "balance": balance,
            "seed": seed,
            "max_steps": max_steps,
            "training": {"max_samples": max_samples, "teacher": teacher},
        }

    assert DemoOptions.improves_on(manifest("builtin"))  # the demo's first model
    assert not DemoOptions.improves_on(manifest("builtin", seed=14))  # already retrained
    assert not DemoOptions.improves_on(manifest("builtin", max_samples=None))  # `tweetpulse train --promote`
    assert not DemoOptions.improves_on(manifest("builtin", balance=False))
    assert not DemoOptions.improves_on(manifest("builtin", preset="best"))  # same data, another recipe
    assert not DemoOptions.improves_on(manifest("builtin", preset="fast"))  # an older demo's: kept
    assert not DemoOptions.improves_on(manifest("builtin", val="data/val.jsonl"))
    assert not DemoOptions.improves_on(manifest("builtin", max_steps=50))
    assert not DemoOptions.improves_on(manifest("builtin", teacher="v0001"))
    assert not DemoOptions.improves_on(manifest("data/tweets-train.jsonl"))  # the user's own data
    assert not DemoOptions.improves_on(manifest("builtin", "kafka:tweets.labeled"))
    assert not DemoOptions.improves_on({})  # a manifest without its training data: not the demo's


def _demo_env(settings: Settings, registry: ModelRegistry, tmp_path: Path, app_id: str) -> dict[str, str]:
    port = settings.kafka.bootstrap_servers.rsplit(":", 1)[1]
    state_home = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
    running_broker = os.environ.get(
        "TWEETPULSE_KAFKA_STATE", str(state_home / "tweetpulse" / f"kafka-{port}")
    )
    return worker_env(
        settings,
        app_id,
        registry.root,
        **WORKER_ENV,
        XDG_STATE_HOME=str(tmp_path / "state"),  # the children's logs
        TWEETPULSE_KAFKA_STATE=running_broker,  # so the demo finds the broker the tests started
        TWEETPULSE_PROCESSOR__WEB_PORT=str(free_port()),
        TWEETPULSE_DASHBOARD__PORT=str(free_port()),
    )


def _delete_internal_topics(settings: Settings, app_id: str) -> None:
    """The demo worker's Faust topics (changelogs, repartitions), named after its app id."""
    admin = AdminClient(settings.kafka.confluent_config())
    internal = [name for name in admin.list_topics(timeout=10).topics if name.startswith(app_id)]
    if internal:
        admin.delete_topics(internal)


def _lines(stream: TextIO) -> queue.Queue[str]:
    """The lines of `stream`, read by a thread so the test can wait on them with a timeout."""
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _run_demo(
    settings: Settings,
    registry: ModelRegistry,
    tmp_path: Path,
    command: list[str],
    done: Callable[[list[str]], bool],
    timeout: float,
    **env: str,
) -> tuple[int | None, list[str]]:
    """Run `command` (`tweetpulse demo ...` or `make demo`) until `done(lines so far)` or `timeout`,
    then Ctrl-C it as a terminal does (SIGINT to its process group); its exit status and every line
    it printed."""
    app_id = f"tp-demo-{uuid.uuid4().hex[:8]}"
    demo = subprocess.Popen(
        command,
        env={**_demo_env(settings, registry, tmp_path, app_id), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    lines, seen = _lines(demo.stdout), []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and demo.poll() is None:
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                continue
            if done(seen):
                break
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGINT)
        demo.wait(90)
    finally:
        if demo.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(demo.pid, signal.SIGKILL)  # its whole group, not only its first process
            demo.wait(30)
        _delete_internal_topics(settings, app_id)
    while not lines.empty():
        seen.append(lines.get())
    return demo.returncode, seen


def _tweetpulse_demo(*args: str) -> list[str]:
    return [sys.executable, "-m", "tweetpulse", "demo", *args]


def test_demo_streams_classified_tweets_and_ctrl_c_stops_every_child_cleanly(
    settings: Settings, tiny_model_registry: ModelRegistry, tmp_path: Path
) -> None:
    version = tiny_model_registry.production()

    def enough(seen: list[str]) -> bool:
        classified = [line for line in seen if f"[{version}]" in line]
        return len(classified) >= 30 and any(line.startswith("-- ") for line in seen)

    demo = _tweetpulse_demo("--rate", "40")
    returncode, seen = _run_demo(settings, tiny_model_registry, tmp_path, demo, enough, 180)
    output = "".join(seen)
    assert len([line for line in seen if f"[{version}]" in line]) >= 30, output[-3000:]
    assert returncode == 0, output[-3000:]  # Ctrl-C is the way a demo ends: a clean exit
    for child in ("dashboard", "producer", "worker"):
        assert f"{child} stopped (exit 0)" in output, output[-3000:]
    assert (tmp_path / "state" / "tweetpulse" / "demo" / "worker.log").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.timeout(3600)  # pip installs PyTorch into an empty venv, then two trainings beside a stream
def test_make_demo_in_a_fresh_venv_trains_a_first_model_then_swaps_to_the_better_one_and_says_so(
    settings: Settings, tmp_path: Path
) -> None:
    """The newcomer's path: what `make demo` runs (`make setup mpnet`, then the venv's `tweetpulse demo`)
    with a fresh venv (only what it installs), an empty registry and empty caches. It trains and serves
    a first model; the background recipe trains beside the stream, passes the export gates, is promoted
    and announced; the worker swaps to it between batches; the terminal and the dashboard say each
    phase. Its timeline is printed (pytest -s shows it). The two steps run apart because make, on
    Ctrl-C, always exits by the signal whatever the demo's own exit."""
    repo = Path(__file__).resolve().parents[1]
    venv = tmp_path / "venv"
    outer_make = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "VIRTUAL_ENV")  # when the suite runs under make test
    started = time.monotonic()
    setup = subprocess.run(
        ["make", "--no-print-directory", "-C", str(repo), "setup", "mpnet", f"VENV={venv}"],
        env={k: v for k, v in os.environ.items() if k not in outer_make},
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert setup.returncode == 0, (setup.stdout + setup.stderr)[-3000:]
    timeline: dict[str, int] = {"make setup mpnet": round(time.monotonic() - started)}
    registry = ModelRegistry(tmp_path / "registry")
    dashboard = free_port()
    dashboard_said: set[str | None] = set()
    started = time.monotonic()

    def swapped(seen: list[str]) -> bool:
        line = seen[-1]
        for version in ("v0001", "v0002"):
            if f"[{version}]" in line:
                timeline.setdefault(f"first result by {version}", round(time.monotonic() - started))
        if line.startswith("==> background model:"):
            dashboard_said.add(_dashboard_training_line(dashboard))
        served = any("the worker serves v0002" in line for line in seen)
        return "background model: failed" in line or (
            served and len([line for line in seen if "[v0002]" in line]) >= 10
        )

    try:
        returncode, seen = _run_demo(
            settings,
            registry,
            tmp_path,
            [str(venv / "bin" / "tweetpulse"), "demo"],  # what `make demo` runs after setup
            swapped,
            2700,
            XDG_CACHE_HOME=str(tmp_path / "cache"),  # no assembled MPNet, no teacher logits
            HF_HOME=str(tmp_path / "hf"),
            TWEETPULSE_DASHBOARD__PORT=str(dashboard),
        )
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # ~7 GB
    output = "".join(seen)
    print(f"demo timeline (s; results counted from the demo's start): {timeline}")
    assert registry.production() == "v0002", output[-3000:]
    said = [line.strip() for line in seen if line.startswith("==> background model:")]
    for phase in ("gates passed", "promoted and announced", "the worker serves v0002"):
        assert any(phase in line for line in said), output[-3000:]
    assert any(line and "background model:" in line for line in dashboard_said), (
        dashboard_said,
        output[-3000:],
    )
    assert len([line for line in seen if "[v0002]" in line]) >= 10, output[-3000:]  # results by it
    assert returncode == 0, output[-3000:]


def _dashboard_training_line(port: int) -> str | None:
    """What the dashboard's model tile says about the background model now."""
    url = f"http://127.0.0.1:{port}/api/snapshot"
    with contextlib.suppress(OSError, ValueError), urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())["model"]["training"]
    return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def test_demo_whose_output_pipe_closes_leaves_no_child_running(
    settings: Settings, tiny_model_registry: ModelRegistry, tmp_path: Path
) -> None:
    """`make demo | tee demo.log` and Ctrl-C: tee dies first, so the demo's stdout is a closed pipe
    when it cleans up. `| head` closes it the same way, with no Ctrl-C at all."""
    import re

    app_id = f"tp-demo-{uuid.uuid4().hex[:8]}"
    registry = _as_the_demos_first_model(tiny_model_registry, tmp_path)  # so a trainer runs too
    env = _demo_env(settings, registry, tmp_path, app_id)
    demo_cmd = f"{sys.executable} -m tweetpulse demo --rate 40"
    pipeline = subprocess.Popen(
        ["bash", "-c", f"{demo_cmd} 2>/dev/null | head -n 40"], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        output, _ = pipeline.communicate(timeout=240)
    finally:
        if pipeline.poll() is None:
            pipeline.kill()
        _delete_internal_topics(settings, app_id)
    pids = {m[0]: int(m[1]) for m in re.findall(r"==> (\w+).*?\(pid (\d+)", output)}
    assert {"worker", "streaming", "live", "retraining"} <= set(pids), output
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids.values()):
        time.sleep(0.5)
    assert not [name for name, pid in pids.items() if _alive(pid)], output


def _as_the_demos_first_model(registry: ModelRegistry, tmp_path: Path) -> ModelRegistry:
    """A copy of `registry` whose production manifest names the demo's first-model recipe (the
    manifest's fields are not checksummed; its files are), so the demo retrains it in the background."""
    copy = ModelRegistry(shutil.copytree(registry.root, tmp_path / "registry"))
    manifest_file = copy.path(copy.production()) / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest.update(preset=FIRST_PRESET, balance=True, seed=FIRST_SEED, max_steps=None)
    manifest["data"] = {"train": ["builtin"], "val": "10% split"}
    manifest["training"] = {**manifest.get("training", {}), "max_samples": FIRST_SAMPLES, "teacher": None}
    manifest_file.write_text(json.dumps(manifest))
    assert DemoOptions.improves_on(copy.load().manifest)
    return copy


def _fake_trainer(log: Path, lines: list[str], exit_code: int) -> subprocess.Popen:
    """A process that writes `lines` to `log` as a trainer's output would, then exits."""
    script = (
        "import sys, time\n"
        f"with open({str(log)!r}, 'a') as f:\n"
        f"    for line in {lines!r}:\n"
        "        f.write(line + '\\n'); f.flush(); time.sleep(0.3)\n"
        f"sys.exit({exit_code})\n"
    )
    return subprocess.Popen([sys.executable, "-c", script])


def test_the_background_trainers_phases_and_its_failure_reason_reach_the_terminal_in_one_line(
    tmp_path: Path, capsys
) -> None:
    from tweetpulse.processors.demo import TrainerProgress
    from tweetpulse.settings import load_settings

    log = tmp_path / "train-better.log"
    log.write_text('{"msg": "promoted"}\n')  # an earlier run's lines are not this run's
    status = tmp_path / "background-model.txt"
    progress = TrainerProgress(log, "v0001", status)
    lines = [
        '{"msg": "training the teacher", "preset": "best"}',
        "not json at all",
        '{"msg": "something else"}',
        "09:30:24 INFO    tweetpulse.training.pipeline: training preset=fast base=minilm train=4800",  # text format
        "tweetpulse train: cannot load base model sentence-transformers/all-mpnet-base-v2: no network",
    ]
    settings = load_settings(registry={"root": tmp_path / "registry"})
    progress.follow(_fake_trainer(log, lines, 1), settings)
    said = [line for line in capsys.readouterr().out.splitlines() if line.startswith("==> background")]
    assert said == [
        "==> background model: training the MPNet teacher",
        "==> background model: fine-tuning",
        "==> background model: failed (exit 1): tweetpulse train: cannot load base model "
        "sentence-transformers/all-mpnet-base-v2: no network; still serving v0001",
    ]
    assert progress.line().startswith("background model: failed (exit 1): tweetpulse train: cannot load")
    assert status.read_text().startswith("background model: failed (exit 1): tweetpulse train: cannot load")


def test_the_watchs_running_counts_line_carries_the_background_models_phase() -> None:
    import io

    from tweetpulse.processors.watch import Watcher

    out = io.StringIO()
    watcher = Watcher(out, summary_every=2, status=lambda: "background model: fine-tuning (3 min)")
    from datetime import UTC, datetime

    from tweetpulse.contracts import SentimentResult

    now = datetime.now(UTC)
    value = SentimentResult(
        id="1",
        text="a fine day",
        label="positive",
        probabilities={"negative": 0.1, "positive": 0.9},
        model_version="v0001",
        ingested_at=now,
        classified_at=now,
    ).to_bytes()
    for _ in range(2):
        watcher.handle(value)
    assert out.getvalue().splitlines()[-1].endswith("| background model: fine-tuning (3 min)")
