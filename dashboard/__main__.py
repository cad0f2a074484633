"""``python -m tweetpulse.dashboard``: the dashboard alone, for a host that runs nothing else."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from tweetpulse.cli import Parser, add_config_option, run_cli
from tweetpulse.dashboard.cli import DESCRIPTION, run
from tweetpulse.options import add_settings_options


def main(argv: Sequence[str] | None = None) -> int:
    """What ``tweetpulse dashboard`` does, with the same one-line errors."""
    parser = Parser(prog="python -m tweetpulse.dashboard", description=DESCRIPTION)
    add_config_option(parser)
    add_settings_options(parser, "dashboard")
    return run_cli("tweetpulse dashboard", parser.parse_args(argv), run)


if __name__ == "__main__":
    sys.exit(main())
