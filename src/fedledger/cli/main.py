"""The ``fedledger`` command line: run, demo, init, resume, audit, provenance, chain serve.

Every error fedledger raises on purpose becomes one red line and an exit code (2 for usage errors,
1 for failed verification); a traceback means a bug in fedledger, never a mistake of the user.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedledger.cli.common import console, guard
from fedledger.errors import UsageError

app = typer.Typer(
    name="fedledger",
    help="Federated training with no trusted server: a permissioned Ethereum ledger, encrypted blobs, "
    "committee aggregation and a full audit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
chain_app = typer.Typer(help="The embedded chain of a run directory.", no_args_is_help=True)
app.add_typer(chain_app, name="chain")

_guard = guard


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _run_simulation(sim: Any, *, quiet: bool = False) -> dict[str, Any]:
    from fedledger.sim.simulation import RoundReport

    num_rounds = sim.ledger.task(sim.task_id).num_rounds
    table_rows: list[RoundReport] = []
    progress = Progress(
        TextColumn("[bold]round"),
        MofNCompleteColumn(),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
    )
    with progress:
        bar = progress.add_task("rounds", total=num_rounds, status="training")
        already = sim._finalised_rounds()
        progress.update(bar, completed=already)

        def on_round(report: RoundReport) -> None:
            table_rows.append(report)
            s = report.seconds
            progress.console.print(
                f"round {report.round:>3}/{report.num_rounds} acc {_fmt(report.test_accuracy)} "
                f"loss {_fmt(report.test_loss)} in {report.included} out {report.excluded} | s: "
                f"train {s.get('train', 0):.2f} crypto {s.get('crypto', 0):.2f} "
                f"ledger {s.get('ledger', 0):.2f} store {s.get('store', 0):.2f} "
                f"agg {s.get('aggregate', 0):.2f}",
                highlight=False,
                soft_wrap=True,
            )
            progress.update(bar, completed=report.round, status=f"acc {_fmt(report.test_accuracy)}")

        try:
            summary: dict[str, Any] = sim.run(on_round=on_round)
        finally:
            sim.close()
    return summary


def _print_summary(summary: dict[str, Any], out: Path | None) -> None:
    totals = summary["totals"]
    table = Table(title="run summary", show_header=False)
    final = summary["final"]
    table.add_row("final test accuracy", _fmt(final.get("test_accuracy")))
    table.add_row("final test loss", _fmt(final.get("test_loss")))
    table.add_row("final model hash", str(final.get("model_hash")))
    table.add_row("wall seconds", f"{totals['wall_seconds']:.2f} (+ setup {totals['setup_seconds']:.2f})")
    split = ", ".join(f"{k} {v:.2f}" for k, v in totals["seconds"].items())
    table.add_row("seconds by part", split)
    table.add_row("transactions / gas", f"{totals['transactions']} / {totals['gas_used']:,}")
    if out is not None:
        table.add_row("run directory", str(out))
    console.print(table)


ServeOption = Annotated[
    int | None,
    typer.Option("--serve", min=0, max=65535, help="Serve a live page on 127.0.0.1:PORT while the run trains."),
]
LingerOption = Annotated[
    float | None,
    typer.Option("--linger", min=0, help="With --serve: stop serving this many seconds after the run (default: Ctrl-C)."),
]


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="Run configuration (TOML); `fedledger init` writes one.")],
    out: Annotated[Path | None, typer.Option("--out", help="Run directory to create.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    serve: ServeOption = None,
    linger: LingerOption = None,
) -> None:
    """Run a simulated consortium from a configuration file."""

    def action() -> None:
        from fedledger.cli.report_cmd import serving
        from fedledger.sim.config import load_config
        from fedledger.sim.simulation import Simulation

        cfg = load_config(config)
        target = out or Path("runs") / cfg.task.name
        with serving(serve, linger) as live:
            sim = Simulation.create(cfg, target if cfg.security.enabled else out)
            live.follow(sim)
            summary = _run_simulation(sim, quiet=quiet)
            _print_summary(summary, target if cfg.security.enabled else None)
            live.finished(target if cfg.security.enabled else None)

    _guard(action)


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Run directory to create.")] = Path("runs/demo"),
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Federated rounds.")] = 10,
    members: Annotated[int, typer.Option("--members", min=2, max=1024, help="Simulated hospitals.")] = 4,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    serve: ServeOption = None,
    linger: LingerOption = None,
) -> None:
    """A ready consortium: hospitals training on breast-cancer data, secured end to end."""

    def action() -> None:
        from fedledger.cli.report_cmd import serving
        from fedledger.sim.simulation import Simulation
        from fedledger.sim.templates import demo_config

        cfg = demo_config(rounds=rounds, members=members)
        console.print(
            f"demo: {members} hospitals, breast-cancer data (Dirichlet split), {rounds} rounds, "
            f"embedded chain in {out}/chain"
        )
        with serving(serve, linger) as live:
            sim = Simulation.create(cfg, out)
            live.follow(sim)
            summary = _run_simulation(sim, quiet=quiet)
            _print_summary(summary, out)
            console.print(
                f"next: [bold]fedledger audit {out}[/] and [bold]fedledger provenance {out}/model.safetensors {out}[/]"
            )
            live.finished(out)

    _guard(action)


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Directory to write fedledger.toml into.")] = Path("."),
) -> None:
    """Write a commented example configuration."""

    def action() -> None:
        from fedledger.sim.templates import EXAMPLE_CONFIG

        directory.mkdir(parents=True, exist_ok=True)
        target = directory / "fedledger.toml"
        if target.exists():
            raise UsageError(f"{target} already exists; not overwriting it")
        target.write_text(EXAMPLE_CONFIG)
        console.print(f"wrote {target}; run it with: fedledger run {target} --out runs/example")

    _guard(action)


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(help="Run directory of an interrupted run.")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    serve: ServeOption = None,
    linger: LingerOption = None,
) -> None:
    """Carry on an interrupted run from where its chain says the task stands."""

    def action() -> None:
        from fedledger.cli.report_cmd import serving
        from fedledger.sim.simulation import Simulation

        with serving(serve, linger) as live:
            sim = Simulation.resume(run_dir)
            live.follow(sim)
            summary = _run_simulation(sim, quiet=quiet)
            _print_summary(summary, run_dir)
            live.finished(run_dir)

    _guard(action)


PasswordFile = Annotated[
    Path | None,
    typer.Option("--password-file", help="File holding the keystore password (else FEDLEDGER_PASSWORD)."),
]
MemberOption = Annotated[
    str | None, typer.Option("--member", help="Member whose key decrypts (default: first).")
]


@app.command()
def audit(
    run_dir: Annotated[Path, typer.Argument(help="Run directory to verify.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report.")] = False,
    member: MemberOption = None,
    password_file: PasswordFile = None,
) -> None:
    """Re-verify every event, blob and aggregate of a run; exit 1 on any violation."""

    def action() -> int:
        from fedledger.audit.verify import audit_run

        report = audit_run(run_dir, member=member, password_file=password_file)
        if as_json:
            sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
        else:
            for item in report.misbehaviour:
                console.print(
                    f"recorded: round {item.round}, member {item.member}: {item.kind} ({item.detail})",
                    highlight=False,
                )
            for violation in report.violations:
                console.print(f"[red]VIOLATION[/] {violation.line()}", highlight=False, soft_wrap=True)
            verdict = (
                "[green]audit passed[/]"
                if report.ok
                else f"[red]audit failed: {len(report.violations)} violation(s)[/]"
            )
            console.print(
                f"{verdict}: {report.rounds_checked} rounds recomputed, {report.blobs_checked} blobs and "
                f"{report.events_read} events checked"
            )
        return 0 if report.ok else 1

    code = _guard(action)
    raise typer.Exit(code)


@app.command()
def provenance(
    model: Annotated[Path, typer.Argument(help="A model.safetensors file.")],
    run_dir: Annotated[Path, typer.Argument(help="The run directory it may come from.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    member: MemberOption = None,
    password_file: PasswordFile = None,
) -> None:
    """Say where a model file came from: round, contributors, samples, data fingerprints, transactions."""

    def action() -> None:
        from fedledger.audit.provenance import model_provenance

        result = model_provenance(model, run_dir, member=member, password_file=password_file)
        if as_json:
            sys.stdout.write(json.dumps(result, indent=2) + "\n")
            return
        console.print(
            f"{model} is the global model of round {result['round']} of task {result['task_id']} "
            f"(chain {result['chain_id']}, contract {result['contract']})",
            highlight=False,
        )
        console.print(
            f"model sha256 {result['model_sha256']}, encrypted blob {result['model_blob']}", highlight=False
        )
        console.print(
            f"finalised by tx {result['finalized_tx']}; committee: {', '.join(result['committee'])}",
            highlight=False,
        )
        table = Table(
            "contributor", "samples", "dataset samples", "dataset merkle root", "label histogram", "submit tx"
        )
        for c in result["contributors"]:
            table.add_row(
                c["member"],
                str(c["num_samples"]),
                str(c["dataset_samples"]),
                (c["dataset_merkle_root"] or "")[:18] + "…",
                str(c["label_histogram"]),
                c["submit_tx"][:18] + "…",
            )
        console.print(table)

    _guard(action)


@chain_app.command("init")
def chain_init(
    chain_dir: Annotated[Path, typer.Argument(help="Directory for a new embedded chain.")],
    fund: Annotated[list[str], typer.Option("--fund", help="Address to fund at genesis (repeat).")],
    chain_id: Annotated[int, typer.Option("--chain-id", min=1)] = 1337,
    balance_eth: Annotated[int, typer.Option("--balance-eth", min=1)] = 1_000_000,
) -> None:
    """Create an empty embedded chain whose genesis funds the given accounts (then `chain serve` it)."""

    def action() -> None:
        from eth_utils.address import is_address

        from fedledger.ledger.chain import EmbeddedChain

        bad = [a for a in fund if not is_address(a)]
        if bad:
            raise UsageError(f"--fund {bad[0]}: not an Ethereum address")
        chain = EmbeddedChain.create(chain_dir, chain_id, {a: balance_eth * 10**18 for a in fund})
        chain.close()
        console.print(f"created chain {chain_id} in {chain_dir} funding {len(fund)} accounts", highlight=False)

    _guard(action)


@chain_app.command("serve")
def chain_serve(
    run_dir: Annotated[Path, typer.Argument(help="Run directory whose chain to serve.")],
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8545,
    host: Annotated[str, typer.Option("--host", help="Interface; loopback by default.")] = "127.0.0.1",
) -> None:
    """Serve an embedded chain (a run directory's, or one made by `chain init`) as Ethereum JSON-RPC."""

    def action() -> None:
        from fedledger.ledger.chain import EmbeddedChain, serve_chain

        chain_dir = run_dir / "chain" if (run_dir / "chain").is_dir() else run_dir
        chain = EmbeddedChain.open(chain_dir)
        try:
            server = serve_chain(chain, host, port)
        except OSError as exc:
            chain.close()
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        console.print(
            f"serving chain {chain.chain_id} from {chain_dir} at http://{host}:{port}", highlight=False
        )
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
            chain.close()

    _guard(action)


# --- commands defined in other modules register here (one import + one add_typer/command line each) ---
from fedledger.cli import report_cmd  # noqa: E402

report_cmd.register(app)
from fedledger.cli.store_cmd import store_app  # noqa: E402

app.add_typer(store_app, name="store")

from fedledger.cli import node_cmd  # noqa: E402

node_cmd.register(app)


def main() -> None:
    from fedledger.runtime import tune_allocator

    tune_allocator()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
