"""``fedledger report``: one self-contained HTML file describing a run, built from its record.

The rounds, members, committees and chain facts are read from the chain (through :func:`open_run`),
the verdict comes from a full :func:`audit_run`, and the final model is traced by
:func:`model_provenance`. Only the seconds per round come from summary.json, because nothing else
recorded them; the page says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedledger.audit.provenance import model_provenance
from fedledger.audit.verify import audit_run, open_run
from fedledger.errors import FedledgerError, UsageError
from fedledger.report.render import render_report
from fedledger.report.view import RecordReader, RunView, spec_facts, summary_timings
from fedledger.sim.rundir import RunDirectory, write_atomic


@dataclass
class Report:
    """A built report: the page, and what it was built from (for the CLI's one-line verdict)."""

    html: str
    view: RunView
    audit: dict[str, Any]
    provenance: dict[str, Any] | None
    provenance_error: str | None


def read_view(root: Path, *, member: str | None = None, password_file: Path | None = None) -> RunView:
    """The run as its chain records it, with summary.json's timings where they exist."""
    opened = open_run(root, member=member, password_file=password_file)
    try:
        session = opened.session
        reader = RecordReader(opened.chain, opened.ledger, session.task_id, opened.names)
        timings = summary_timings(root)
        return reader.view(
            title=session.spec.name,
            run_dir=str(root),
            timings=(lambda r: timings.get(r)) if timings is not None else None,
            timings_source="summary.json" if timings is not None else None,
            task_facts=spec_facts(session.spec),
        )
    finally:
        opened.close()


def wall_seconds(root: Path) -> float | None:
    try:
        return float(json.loads((root / "summary.json").read_text())["totals"]["wall_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_report(root: Path, *, member: str | None = None, password_file: Path | None = None) -> Report:
    """Audit the run, trace its model file, read its record, and render the page."""
    run = RunDirectory.open(root)
    view = read_view(root, member=member, password_file=password_file)
    audit = audit_run(root, member=member, password_file=password_file).to_json()
    provenance: dict[str, Any] | None = None
    error: str | None = None
    if not run.model_file.is_file():
        error = (
            f"{run.model_file.name} is not there yet: the run has not finished"
            if not view.done
            else f"{run.model_file.name} is missing from the run directory"
        )
    else:
        try:
            provenance = model_provenance(run.model_file, root, member=member, password_file=password_file)
        except FedledgerError as exc:
            error = str(exc)
    html = render_report(
        view, audit=audit, provenance=provenance, provenance_error=error, wall_seconds=wall_seconds(root)
    )
    return Report(html=html, view=view, audit=audit, provenance=provenance, provenance_error=error)


def write_report(report: Report, out: Path) -> None:
    """Write atomically, so a browser never opens half a page."""
    try:
        write_atomic(out, report.html.encode())
    except OSError as exc:
        raise UsageError(f"{out}: cannot write the report ({exc.strerror})") from None
