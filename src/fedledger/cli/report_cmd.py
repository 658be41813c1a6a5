"""``fedledger report`` and ``fedledger dashboard``, and the ``--serve PORT`` glue of run/demo/resume.

Heavy imports (torch, web3) stay inside the functions so ``fedledger --help`` remains fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fedledger.cli.common import console, err_console, guard
from fedledger.errors import FedledgerError, UsageError

if TYPE_CHECKING:
    from fedledger.report.live import LiveServer

DEFAULT_PORT = 8050


def register(app: typer.Typer) -> None:
    """Add this module's commands to the ``fedledger`` app."""
    app.command("report")(report)
    app.command("dashboard")(dashboard)


PasswordFile = Annotated[
    Path | None,
    typer.Option("--password-file", help="File holding the keystore password (else FEDLEDGER_PASSWORD)."),
]
MemberOption = Annotated[
    str | None, typer.Option("--member", help="Member whose key decrypts (default: first).")
]


def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory to describe.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="HTML file to write (default: RUN_DIR/report.html).")
    ] = None,
    member: MemberOption = None,
    password_file: PasswordFile = None,
) -> None:
    """Write one self-contained HTML report of a run: plots, rounds, members, provenance, audit, chain."""

    def action() -> None:
        from fedledger.report import build_report, write_report

        target = out if out is not None else run_dir / "report.html"
        if target.is_dir():
            raise UsageError(f"{target} is a directory; give --out a file name such as report.html")
        built = build_report(run_dir, member=member, password_file=password_file)
        write_report(built, target)
        audit = built.audit
        verdict = (
            "[green]audit passed[/]"
            if audit["ok"]
            else f"[red]audit failed: {len(audit['violations'])} violation(s)[/]"
        )
        view = built.view
        console.print(
            f"wrote {target}: {view.finalised}/{view.num_rounds} rounds, {len(view.members)} members, {verdict}",
            highlight=False,
            soft_wrap=True,
        )

    guard(action)


def dashboard(
    run_dir: Annotated[Path, typer.Argument(help="Run directory to show (one no process is running).")],
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1 (0: any free one).")
    ] = DEFAULT_PORT,
    member: MemberOption = None,
    password_file: PasswordFile = None,
) -> None:
    """Serve the live page of a run directory on 127.0.0.1 until Ctrl-C.

    To watch a run while it trains, give its own command --serve PORT: a running run locks its chain.
    """

    def action() -> None:
        from fedledger.report.live import LiveServer
        from fedledger.sim.rundir import RunDirectory

        RunDirectory.open(run_dir)
        server = LiveServer(port)
        try:
            try:
                server.finish(run_dir, member=member, password_file=password_file)
            except UsageError as exc:
                if "in use by another process" in str(exc):
                    raise UsageError(
                        f"{run_dir}: a running process holds its chain; watch that run with --serve PORT "
                        "on its own command (fedledger run/demo/resume)"
                    ) from None
                raise
            server.start()
            console.print(
                f"dashboard of {run_dir} at [bold]{server.url}[/] (Ctrl-C to stop)", highlight=False
            )
            server.wait(None)
        finally:
            server.close()

    guard(action)


class _Serving:
    """What run/demo/resume see of ``--serve``: follow the simulation, then keep serving afterwards."""

    def __init__(self, server: LiveServer | None, linger: float | None) -> None:
        self.server = server
        self.linger = linger

    def follow(self, sim: Any) -> None:
        if self.server is not None:
            self.server.follow(sim)

    def finished(self, run_dir: Path | None) -> None:
        """After the run: show the final record and the audit, serve until Ctrl-C (or --linger)."""
        if self.server is None or run_dir is None:
            return
        try:
            self.server.finish(run_dir)
        except FedledgerError as exc:  # the run itself succeeded: say why the page stays as it was, exit 0
            err_console.print(f"[yellow]live page not updated after the run:[/] {exc}", highlight=False)
        how = "until Ctrl-C" if self.linger is None else f"for {self.linger:g} s"
        console.print(f"live page still at [bold]{self.server.url}[/] {how}", highlight=False, soft_wrap=True)
        self.server.wait(self.linger)


@contextmanager
def serving(port: int | None, linger: float | None) -> Iterator[_Serving]:
    """``--serve PORT``: bind 127.0.0.1:PORT before any work (a busy port is one clear error), serve
    the live page from a daemon thread while the run trains, and stop it when the command ends."""
    if port is None:
        if linger is not None:
            raise UsageError("--linger only applies with --serve PORT")
        yield _Serving(None, None)
        return
    from fedledger.report.live import LiveServer

    server = LiveServer(port).start()
    console.print(f"live page: [bold]{server.url}[/]", highlight=False, soft_wrap=True)
    try:
        yield _Serving(server, linger)
    finally:
        server.close()
