"""``python -m tweetpulse.dashboard``: the dashboard alone, for a host that runs nothing else."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tweetpulse.dashboard.cli import DESCRIPTION, add_options, run
from tweetpulse.logs import configure_logging
from tweetpulse.settings import SettingsError, load_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tweetpulse.dashboard", description=DESCRIPTION)
    parser.add_argument("--config", help="TOML config file (or set TWEETPULSE_CONFIG); env vars override it")
    add_options(parser)
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config) if args.config else load_settings()
    except SettingsError as exc:
        print(f"tweetpulse dashboard: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format, settings.secrets())
    return run(args, settings)


if __name__ == "__main__":
    sys.exit(main())
