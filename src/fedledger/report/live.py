"""The live page: a small HTTP server on 127.0.0.1 that follows a run from its chain's events.

``GET /`` is the page, ``GET /api/state`` the JSON it polls every second (the same sections as the
report, rendered server-side, plus the run's data), ``GET /report`` the full report once the run has
finished and been audited. The server runs in daemon threads beside the simulation: it reads the
chain through its own web3 provider (the embedded chain serialises rpc calls with a lock) and never
writes anything.

The chain directory is locked by the process that runs it, so a run is followed live only by that
process (``--serve PORT``); ``fedledger dashboard RUN_DIR`` shows a run directory nobody is running.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from web3 import Web3

from fedledger.errors import FedledgerError, UsageError
from fedledger.ledger import Ledger
from fedledger.ledger.chain import EmbeddedProvider
from fedledger.report.build import build_report, read_view, wall_seconds
from fedledger.report.render import LIVE_CSP, live_sections, render_live_page, waiting_sections
from fedledger.report.view import RecordReader, RunView, spec_facts

if TYPE_CHECKING:
    from fedledger.sim.simulation import Simulation

log = logging.getLogger(__name__)

MIN_REFRESH_SECONDS = 0.4  # several tabs polling at once share one read of the chain


@dataclass
class Snapshot:
    """What the page shows at one moment; ``version`` changes whenever anything shown changes."""

    status: str  # starting | live | finished | failed
    title: str
    sections: dict[str, str]
    run: dict[str, Any] | None = None
    report_ready: bool = False
    version: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256(json.dumps([self.status, self.sections], sort_keys=True).encode())
        self.version = digest.hexdigest()[:16]

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "version": self.version,
            "title": self.title,
            "report_ready": self.report_ready,
            "html": self.sections,
            "run": self.run,
        }


class _Follow:
    """Reads a simulation running in this process: its chain, plus its timer for finalised rounds."""

    def __init__(self, sim: Simulation) -> None:
        if sim.chain is None or sim.run_dir is None:
            raise UsageError(
                "--serve follows the run's chain: it needs a secured run ([security] enabled = true)"
            )
        ledger = Ledger(Web3(EmbeddedProvider(sim.chain)), sim.ledger.deployment)
        names = {m.identity.address.lower(): m.identity.name for m in sim.members}
        self.reader = RecordReader(sim.chain, ledger, sim.task_id, names)
        self.timer = sim.timer
        self.title = sim.config.task.name
        self.run_dir = str(sim.run_dir.root)
        try:
            self.facts = spec_facts(sim.final_session().spec)
        except FedledgerError:
            self.facts = []

    def timings(self, round_: int) -> dict[str, float] | None:
        # Only asked for finalised rounds, which the timer has already measured: reading never adds a key.
        return self.timer.round_seconds(round_)

    def view(self) -> RunView:
        return self.reader.view(
            title=self.title,
            run_dir=self.run_dir,
            timings=self.timings,
            timings_source="the running process (summary.json at the end)",
            task_facts=self.facts,
        )


class LiveServer:
    """Serves the live page for one run; bind first (so a busy port fails before any work), then
    :meth:`follow` a simulation, then :meth:`finish` with its run directory."""

    def __init__(self, port: int, *, host: str = "127.0.0.1") -> None:
        try:
            self._httpd = _HTTPServer((host, port), _Handler)
        except OSError as exc:
            raise UsageError(f"cannot serve the live page on {host}:{port}: {exc.strerror or exc}") from None
        self._httpd.live = self
        self._lock = threading.Lock()
        self._follow: _Follow | None = None
        self._snapshot = Snapshot("starting", "fedledger", waiting_sections("setting up the consortium"))
        self._refreshed = 0.0
        self._report: str | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self) -> LiveServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fedledger-live", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
        self._httpd.server_close()

    # -- what to show

    def follow(self, sim: Simulation) -> None:
        """Follow a simulation of this process from now on (call before ``sim.run``)."""
        follow = _Follow(sim)
        with self._lock:
            self._follow = follow
            self._refreshed = 0.0

    def finish(
        self, root: Path, *, member: str | None = None, password_file: Path | None = None, audit: bool = True
    ) -> None:
        """The run is over and its chain closed: show the final record, then audit and build the report.

        The report is built in the background; the page shows the verdict and a link once it is ready.
        """
        with self._lock:
            self._follow = None
        view = read_view(root, member=member, password_file=password_file)
        wall = wall_seconds(root)
        note = "audit running…" if audit else None
        self._set(
            Snapshot(
                "finished",
                view.title,
                live_sections(view, live=False, audit_note=note, wall_seconds=wall),
                view.to_json(),
            )
        )
        if audit:
            worker = threading.Thread(
                target=self._build_report, args=(root, member, password_file, view, wall), daemon=True
            )
            worker.start()

    def _build_report(
        self, root: Path, member: str | None, password_file: Path | None, view: RunView, wall: float | None
    ) -> None:
        try:
            report = build_report(root, member=member, password_file=password_file)
        except FedledgerError as exc:
            sections = live_sections(
                view, live=False, audit_note=f"audit could not run: {exc}", wall_seconds=wall
            )
            self._set(Snapshot("finished", view.title, sections, view.to_json()))
            return
        self._report = report.html
        sections = live_sections(
            report.view, live=False, audit=report.audit, report_ready=True, wall_seconds=wall
        )
        self._set(Snapshot("finished", report.view.title, sections, report.view.to_json(), report_ready=True))

    def _set(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._snapshot = snapshot

    def snapshot(self) -> Snapshot:
        """The current state; while following a run, re-read from the chain at most every 0.4 s."""
        with self._lock:
            follow = self._follow
            if follow is None or time.monotonic() - self._refreshed < MIN_REFRESH_SECONDS:
                return self._snapshot
            try:
                view = follow.view()
            except Exception as exc:  # the run closed its chain under us, or an rpc failed: show what we had
                log.debug("live page: keeping the last state (%s)", exc)
                return self._snapshot
            self._refreshed = time.monotonic()
            status = "live" if not view.done else "finished"
            self._snapshot = Snapshot(
                status, view.title, live_sections(view, live=not view.done), view.to_json()
            )
            return self._snapshot

    def report_html(self) -> str | None:
        return self._report

    def wait(self, linger: float | None) -> None:
        """Keep serving after the run: ``linger`` seconds, or until Ctrl-C when None."""
        deadline = None if linger is None else time.monotonic() + linger
        try:
            while deadline is None or time.monotonic() < deadline:
                time.sleep(0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic())))
        except KeyboardInterrupt:
            pass  # Ctrl-C ends the serving, not the (already finished) run: exit 0


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    live: LiveServer


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "fedledger-live"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("live page: " + format, *args)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        live = self.server.live
        if path in ("/", "/index.html"):
            snap = live.snapshot()
            page = render_live_page(snap.sections, version=snap.version, status=snap.status, title=snap.title)
            self._send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")
        elif path == "/api/state":
            body = json.dumps(live.snapshot().to_json()).encode()
            self._send(HTTPStatus.OK, body, "application/json")
        elif path == "/report":
            html = live.report_html()
            if html is None:
                self._send(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    b"the report is built once the run has finished\n",
                    "text/plain; charset=utf-8",
                )
            else:
                self._send(HTTPStatus.OK, html.encode(), "text/html; charset=utf-8")
        elif path == "/favicon.ico":
            self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", LIVE_CSP)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()
