"""What happened in a run: a self-contained HTML report, and a live page that follows a run's chain.

Sits beside ``audit/``: it reads a run directory (or a running simulation) and never imports the CLI.
"""

from fedledger.report.build import Report, build_report, read_view, write_report
from fedledger.report.view import RecordReader, RunView

__all__ = ["RecordReader", "Report", "RunView", "build_report", "read_view", "write_report"]
