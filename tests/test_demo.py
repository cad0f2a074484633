"""`tweetpulse demo` (`make demo`, the README's first command) end to end on the real broker."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from confluent_kafka.admin import AdminClient
from test_processors_pipeline import WORKER_ENV  # tests/ is on sys.path

from tweetpulse.bench.workers import free_port, worker_env
from tweetpulse.cli import build_parser
from tweetpulse.processors.demo import IMPROVE, TRAIN
from tweetpulse.registry import ModelRegistry
from tweetpulse.settings import Settings


def test_demo_trains_its_first_model_with_the_fast_recipe_on_balanced_builtin_data() -> None:
    args = build_parser().parse_args(TRAIN)
    assert (args.preset, args.data, args.balance, args.promote) == ("fast", ["builtin"], True, True)
    assert args.max_samples and args.max_samples <= 10_000  # minutes on 2 cores, not the full corpus


def test_demo_improves_with_the_default_distilled_recipe_on_balanced_builtin_data_and_promotes_it() -> None:
    args = build_parser().parse_args(IMPROVE)
    assert (args.preset, args.teacher, args.data, args.balance, args.promote) == (
        "distilled",
        None,
        ["builtin"],
        True,
        True,
    )


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
    args: list[str],
    done: Callable[[list[str]], bool],
    timeout: float,
) -> tuple[int | None, list[str]]:
    """Run `tweetpulse demo ARGS` until `done(lines so far)` or `timeout`, then Ctrl-C it as a user
    does; its exit status and every line it printed."""
    app_id = f"tp-demo-{uuid.uuid4().hex[:8]}"
    env = _demo_env(settings, registry, tmp_path, app_id)
    demo = subprocess.Popen(
        [sys.executable, "-m", "tweetpulse", "demo", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
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
        demo.send_signal(signal.SIGINT)
        demo.wait(90)
    finally:
        if demo.poll() is None:
            demo.kill()
        _delete_internal_topics(settings, app_id)
    while not lines.empty():
        seen.append(lines.get())
    return demo.returncode, seen


def test_demo_streams_classified_tweets_and_ctrl_c_stops_every_child_cleanly(
    settings: Settings, tiny_model_registry: ModelRegistry, tmp_path: Path
) -> None:
    version = tiny_model_registry.production()

    def enough(seen: list[str]) -> bool:
        classified = [line for line in seen if f"[{version}]" in line]
        return len(classified) >= 30 and any(line.startswith("-- ") for line in seen)

    returncode, seen = _run_demo(settings, tiny_model_registry, tmp_path, ["--rate", "40"], enough, 180)
    output = "".join(seen)
    assert len([line for line in seen if f"[{version}]" in line]) >= 30, output[-3000:]
    assert returncode == 0, output[-3000:]  # Ctrl-C is the way a demo ends: a clean exit
    for child in ("dashboard", "producer", "worker"):
        assert f"{child} stopped (exit 0)" in output, output[-3000:]
    assert (tmp_path / "state" / "tweetpulse" / "demo" / "worker.log").stat().st_size > 0


def test_demo_trains_promotes_and_swaps_to_a_better_model_while_it_streams_and_says_so(
    settings: Settings, tiny_model_registry: ModelRegistry, tmp_path: Path
) -> None:
    """The demo's loop as a newcomer sees it: the background recipe (here `fast`, capped at 60 steps so
    that it fits in CI) trains beside the stream, passes the export gates, is promoted and announced,
    the worker swaps to it between batches, and the terminal says each phase."""
    import shutil

    registry = ModelRegistry(shutil.copytree(tiny_model_registry.root, tmp_path / "registry"))
    first = registry.production()

    def swapped(seen: list[str]) -> bool:
        second = registry.production()
        served = any(f"the worker serves {second}" in line for line in seen)
        return "background model: failed" in seen[-1] or (
            second != first and served and len([line for line in seen if f"[{second}]" in line]) >= 10
        )

    command = ["--rate", "20", "--improve-preset", "fast", "--improve-max-steps", "60"]
    returncode, seen = _run_demo(settings, registry, tmp_path, command, swapped, 600)
    output = "".join(seen)
    second = registry.production()
    assert second != first, output[-3000:]
    said = [line.strip() for line in seen if line.startswith("==> background model:")]
    assert said[:1] == ["==> background model: training the student"], output[-3000:]
    for phase in ("gates passed", "promoted and announced", f"the worker serves {second}"):
        assert any(phase in line for line in said), output[-3000:]
    assert len([line for line in seen if f"[{second}]" in line]) >= 10, output[-3000:]  # results by it
    assert returncode == 0, output[-3000:]


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
    env = _demo_env(settings, tiny_model_registry, tmp_path, app_id)
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
    assert {"worker", "streaming", "live", "training"} <= set(pids), output
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids.values()):
        time.sleep(0.5)
    assert not [name for name, pid in pids.items() if _alive(pid)], output


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
    progress = TrainerProgress(log, "v0001")
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
        "==> background model: training the student",
        "==> background model: failed (exit 1): tweetpulse train: cannot load base model "
        "sentence-transformers/all-mpnet-base-v2: no network; still serving v0001",
    ]
    assert progress.line().startswith("background model: failed (exit 1): tweetpulse train: cannot load")


def test_the_watchs_running_counts_line_carries_the_background_models_phase() -> None:
    import io

    from tweetpulse.processors.watch import Watcher

    out = io.StringIO()
    watcher = Watcher(out, summary_every=2, status=lambda: "background model: training the student (3 min)")
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
    assert out.getvalue().splitlines()[-1].endswith("| background model: training the student (3 min)")
