"""`tuner verify`: an export reloaded and re-measured against its config.yaml."""

from __future__ import annotations

import argparse

from tuner.cli.arguments import Command
from tuner.defaults import DEFAULTS
from tuner.errors import check_number

EXIT_NOT_REPRODUCED = 1


class Verify(Command):
    """Reload an export in its runtime, re-measure accuracy and latency, compare with its config.yaml."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("dir", help="a directory written by `tuner export`")
        parser.add_argument(
            "--latency-tolerance",
            type=float,
            default=DEFAULTS.latency_tolerance,
            metavar="FRACTION",
            help="latency reproduces within the recorded 95%% CI or this fraction of it (default 0.10)",
        )

    def run(self, args: argparse.Namespace) -> int:
        from tuner.artifact import checks_table, not_compared_for_a_busy_host, read_config, verify

        check_number("--latency-tolerance", args.latency_tolerance, 0, why=" (a fraction: 0.10 = 10%)")
        read_config(args.dir)  # a broken or incomplete export is refused before torch loads
        ok, checks = verify(args.dir, args.latency_tolerance)
        print(checks_table(checks))
        busy = not_compared_for_a_busy_host(checks)
        print(
            ("does NOT reproduce" if not ok else "reproduces")
            + (
                f"; not compared, the host being busy: {', '.join(busy)} (run verify again on a quiet host)"
                if busy
                else ""
            )
        )
        return 0 if ok else EXIT_NOT_REPRODUCED
