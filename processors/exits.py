"""Why a worker ends itself: one named exit code per cause, so an orchestrator's restart log says it.

A worker that cannot make progress exits rather than keep heartbeating while stuck: its uncommitted
offsets go to the partition's next owner (at-least-once), which is what a restart is for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

EXIT_AGENT_CRASHED = 70  # EX_SOFTWARE: a bug; the message and traceback are in the log
EXIT_BROKER_UNAVAILABLE = 69  # EX_UNAVAILABLE: outputs not accepted within processor.send_timeout_s
EXIT_STUCK = 75  # EX_TEMPFAIL: a model call or a batch did not finish in time; a restart may help
EXIT_MISCONFIGURED = 78  # EX_CONFIG: the broker refuses for good (no such topic, not authorized)
EXIT_SHUTDOWN_TIMEOUT = 143  # 128 + SIGTERM: asked to stop, and the grace ran out first


def fatal(code: int, message: str, **extra: Any) -> None:
    """Log `message` as critical, flush every handler, and end the process with `code` at once."""
    log.critical(message, extra={"exit_code": code, **extra})
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):  # a closed stream must not stop the exit
            handler.flush()
    sys.stderr.flush()
    os._exit(code)


def crashed(what: str, exc: BaseException) -> None:
    """`what` raised: a bug. The worker ends rather than go on without the tweets it held, so the
    partitions' next owner reads them again."""
    log.error(f"{what} crashed", exc_info=exc)
    fatal(EXIT_AGENT_CRASHED, f"{what} crashed: {type(exc).__name__}: {exc}")


def exit_on_failure(what: str) -> Callable[[Any], None]:
    """A task's done-callback: the worker ends (:func:`crashed`) if the task raised."""

    def check(task: Any) -> None:
        if not task.cancelled() and task.exception() is not None:
            crashed(what, task.exception())

    return check
