"""Command line of convergence-monitor: ``python -m convergence_monitor report RUN_DIR``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger("convergence_monitor")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with one sub-parser per subcommand."""
    parser = argparse.ArgumentParser(prog="python -m convergence_monitor", description=__doc__)
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    report = subcommands.add_parser(
        "report",
        help="write figures, summary.csv and index.html for a run directory",
        description="Write the local report of a run directory that contains alignment.csv "
        "(and optionally probe_stats.csv).",
    )
    report.add_argument("run_dir", type=Path, help="run directory that contains alignment.csv")
    report.add_argument("--out", type=Path, default=None, help="output directory (default: RUN_DIR/report)")
    report.add_argument(
        "--log-step",
        action="store_true",
        help="draw the optimizer-step axis on a symmetric log scale, linear on [0, 1] so step 0 stays visible",
    )
    report.add_argument(
        "--metric-for-matrix",
        action="append",
        default=None,
        metavar="METRIC",
        help="draw the layer × step heatmap only for this metric; repeat for several (default: every metric)",
    )
    report.add_argument(
        "--id-probe",
        default="id",
        help="name of the in-distribution probe set (default: %(default)s)",
    )
    report.add_argument(
        "--min-final-score",
        type=float,
        default=0.0,
        help="final scores at or below this value give NaN for fraction_at_epoch1 and step_reach_90 "
        "(default: %(default)s)",
    )
    report.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status: 0 on success, 1 when the input is invalid."""
    arguments = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if arguments.command == "report":
        from convergence_monitor.report import build_report

        try:
            files = build_report(
                arguments.run_dir,
                arguments.out,
                log_step=arguments.log_step,
                matrix_metrics=arguments.metric_for_matrix,
                id_probe=arguments.id_probe,
                min_final_score=arguments.min_final_score,
                progress=not arguments.no_progress,
            )
        except (FileNotFoundError, ValueError) as error:
            logger.error("report failed: %s", error)
            return 1
        print(files.index)
    return 0


if __name__ == "__main__":
    sys.exit(main())
