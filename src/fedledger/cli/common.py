"""What every command module shares: the consoles and the one way user errors become exit codes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import typer
from rich.console import Console

from fedledger.errors import FedledgerError

console = Console()
err_console = Console(stderr=True)

T = TypeVar("T")


def guard(action: Callable[[], T]) -> T:
    """Turn fedledger's own errors into one line and an exit code."""
    try:
        return action()
    except FedledgerError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err_console.print(
            "[yellow]interrupted[/]: everything recorded so far is kept; `fedledger resume RUN_DIR` carries on"
        )
        raise typer.Exit(130) from None
