"""Commands for a real consortium: member processes, governance and tasks against any Ethereum node."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fedledger.cli.common import console, guard
from fedledger.crypto import MemberIdentity, load_keystore, read_password, to_hex
from fedledger.errors import UsageError

consortium_app = typer.Typer(help="Deploy a consortium's contracts on a chain.", no_args_is_help=True)
member_app = typer.Typer(help="Member identities and membership governance.", no_args_is_help=True)
task_app = typer.Typer(help="Propose, create and follow training tasks.", no_args_is_help=True)

Rpc = Annotated[str, typer.Option("--rpc", help="Ethereum JSON-RPC URL of the consortium's chain.")]
DeploymentFile = Annotated[Path, typer.Option("--deployment", help="deployment.json of the consortium.")]
Keystore = Annotated[
    Path, typer.Option("--keystore", help="Your encrypted keystore (password: FEDLEDGER_PASSWORD).")
]
PasswordFile = Annotated[
    Path | None, typer.Option("--password-file", help="File holding the keystore password.")
]


def _identity(keystore: Path, password_file: Path | None) -> MemberIdentity:
    return load_keystore(keystore, read_password(password_file=password_file))


def node(
    config: Annotated[Path, typer.Option("--config", help="This member's member.toml.")],
    exit_when_done: Annotated[
        bool, typer.Option("--exit-when-done", help="Stop once every followed task is complete.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run one member: follow the chain, train, aggregate and validate for its tasks."""

    def action() -> None:
        from fedledger.node.config import load_member_config
        from fedledger.node.member import MemberNode

        logging.getLogger("fedledger").setLevel(logging.DEBUG if verbose else logging.INFO)
        cfg = load_member_config(config)
        member = MemberNode.from_config(cfg)
        console.print(
            f"member {member.identity.name} ({member.identity.address}) on chain {member.ledger.chain_id}",
            highlight=False,
        )
        member.run(exit_when_done=exit_when_done or cfg.node.exit_when_done)

    guard(action)


@member_app.command("new")
def member_new(
    name: Annotated[str, typer.Argument(help="The member's name, e.g. hospital-a.")],
    keystore: Keystore,
    card: Annotated[
        Path | None, typer.Option("--card", help="Also write the public member card here.")
    ] = None,
    password_file: PasswordFile = None,
    light: Annotated[bool, typer.Option("--light", help="Cheaper scrypt (tests only).")] = False,
) -> None:
    """Create a member identity (encrypted keystore) and print its public card."""

    def action() -> None:
        from fedledger.node.governance import create_member

        result = create_member(name, keystore, read_password(password_file=password_file), light=light)
        text = json.dumps(result.to_json(), indent=2)
        if card is not None:
            card.write_text(text + "\n")
        sys.stdout.write(text + "\n")

    guard(action)


@member_app.command("card")
def member_card(keystore: Keystore, password_file: PasswordFile = None) -> None:
    """Print the public card (name, address, encryption key) of a keystore."""

    def action() -> None:
        from fedledger.node.governance import card_of

        sys.stdout.write(json.dumps(card_of(_identity(keystore, password_file)).to_json(), indent=2) + "\n")

    guard(action)


@consortium_app.command("deploy")
def consortium_deploy(
    rpc: Rpc,
    keystore: Keystore,
    member: Annotated[
        list[str],
        typer.Option(
            "--member", help="CARD.json:ROLES for each founding member, e.g. a.json:trainer,aggregator"
        ),
    ],
    admin: Annotated[
        list[str], typer.Option("--admin", help="An admin (name of a founding member, or address).")
    ],
    threshold: Annotated[int, typer.Option("--threshold", help="Admin approvals needed for any change.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write deployment.json.")] = Path(
        "deployment.json"
    ),
    password_file: PasswordFile = None,
) -> None:
    """Deploy the Consortium and TrainingTask contracts with the founding members."""

    def action() -> None:
        from fedledger.ledger.connect import connect_rpc
        from fedledger.node.governance import MemberCard, deploy_consortium, parse_roles

        members = []
        for item in member:
            path, sep, roles = item.rpartition(":")
            if not sep:
                raise UsageError(f"--member {item}: expected CARD.json:ROLES")
            members.append((MemberCard.read(Path(path)), parse_roles(roles)))
        deployer = _identity(keystore, password_file)
        deployment = deploy_consortium(connect_rpc(rpc), deployer, members, admin, threshold, out)
        console.print(
            f"deployed on chain {deployment.chain_id}: Consortium {deployment.consortium}, "
            f"TrainingTask {deployment.training_task}; wrote {out}",
            highlight=False,
        )

    guard(action)


def _ledger(rpc: str, deployment: Path):  # type: ignore[no-untyped-def]
    from fedledger.node.member import connect_ledger

    return connect_ledger(rpc, deployment)


@member_app.command("propose")
def member_propose(
    action_name: Annotated[str, typer.Argument(metavar="ACTION", help="add | remove | roles | rotate-key")],
    target: Annotated[str, typer.Argument(help="A member card (add, rotate-key) or a member name/address.")],
    rpc: Rpc,
    deployment: DeploymentFile,
    keystore: Keystore,
    roles: Annotated[
        str | None, typer.Option("--roles", help="Roles for add/roles, e.g. trainer,validator")
    ] = None,
    password_file: PasswordFile = None,
) -> None:
    """Propose a membership change; it executes once enough admins approved."""

    def action() -> None:
        from fedledger.node.governance import MemberCard, parse_roles, resolve_member

        ledger = _ledger(rpc, deployment)
        admin = _identity(keystore, password_file).account
        if action_name == "add":
            card = MemberCard.read(Path(target))
            proposal = ledger.propose_member(
                admin, card.address, card.name, parse_roles(roles or ""), card.enc_key
            )
        elif action_name == "remove":
            proposal = ledger.propose_remove_member(admin, resolve_member(ledger, target))
        elif action_name == "roles":
            proposal = ledger.propose_set_roles(
                admin, resolve_member(ledger, target), parse_roles(roles or "")
            )
        elif action_name == "rotate-key":
            card = MemberCard.read(Path(target))
            proposal = ledger.propose_rotate_key(admin, card.address, card.enc_key)
        else:
            raise UsageError(f"unknown action '{action_name}' (add, remove, roles, rotate-key)")
        executed = ledger.proposal(proposal).executed
        state = "executed" if executed else f"needs {ledger.threshold()} approvals"
        console.print(f"proposal {proposal} ({action_name} {target}): {state}", highlight=False)

    guard(action)


@member_app.command("approve")
def member_approve(
    proposal: Annotated[int, typer.Argument(help="Proposal id.")],
    rpc: Rpc,
    deployment: DeploymentFile,
    keystore: Keystore,
    password_file: PasswordFile = None,
) -> None:
    """Approve a pending proposal (membership change or task)."""

    def action() -> None:
        ledger = _ledger(rpc, deployment)
        ledger.approve(_identity(keystore, password_file).account, proposal)
        info = ledger.proposal(proposal)
        state = "executed" if info.executed else f"{info.approvals}/{ledger.threshold()} approvals"
        console.print(f"proposal {proposal}: {state}", highlight=False)

    guard(action)


@member_app.command("list")
def member_list(rpc: Rpc, deployment: DeploymentFile) -> None:
    """List the consortium's members as the chain records them."""

    def action() -> None:
        from fedledger.node.governance import role_names

        ledger = _ledger(rpc, deployment)
        table = Table("name", "address", "roles", "active", "admin")
        for m in ledger.members():
            table.add_row(
                m.name,
                m.address,
                ",".join(role_names(m.roles)),
                str(m.active),
                str(ledger.is_admin(m.address)),
            )
        console.print(table)

    guard(action)


@task_app.command("propose")
def task_propose(
    config: Annotated[Path, typer.Option("--config", help="Task proposal TOML.")],
    rpc: Rpc,
    deployment: DeploymentFile,
    keystore: Keystore,
    store: Annotated[str, typer.Option("--store", help="Blob server URL or a local directory.")],
    params_out: Annotated[
        Path, typer.Option("--params-out", help="Where to write the task parameters.")
    ] = Path("task-params.json"),
    password_file: PasswordFile = None,
) -> None:
    """Seal a task's spec and initial model, wrap its key per participant, and propose it."""

    def action() -> None:
        from fedledger.node.config import load_task_proposal
        from fedledger.node.governance import propose_task

        proposal_config = load_task_proposal(config)
        ledger = _ledger(rpc, deployment)
        admin = _identity(keystore, password_file)
        blob_store = _open_store(store, admin, ledger)
        proposal, params = propose_task(ledger, blob_store, admin, proposal_config, params_out)
        console.print(
            f"task proposal {proposal}: spec {to_hex(params.spec_hash)}, {len(params.participants)} participants; "
            f"parameters in {params_out}. Once approved: fedledger task create --params {params_out}",
            highlight=False,
        )

    guard(action)


def _open_store(where: str, identity: MemberIdentity, ledger: object):  # type: ignore[no-untyped-def]
    from fedledger.store import LocalBlobStore

    if where.startswith(("http://", "https://")):
        from fedledger.store.http import HttpBlobStore

        return HttpBlobStore(
            where,
            identity,
            chain_id=ledger.chain_id,  # type: ignore[attr-defined]
            contract=ledger.deployment.training_task,  # type: ignore[attr-defined]
        )
    return LocalBlobStore(Path(where))


@task_app.command("create")
def task_create(
    params: Annotated[Path, typer.Option("--params", help="Task parameters written by `task propose`.")],
    rpc: Rpc,
    deployment: DeploymentFile,
    keystore: Keystore,
    password_file: PasswordFile = None,
) -> None:
    """Create an approved task on chain; round 1 opens at once."""

    def action() -> None:
        from fedledger.node.governance import task_params_from_file

        ledger = _ledger(rpc, deployment)
        task_id = ledger.create_task(
            _identity(keystore, password_file).account, task_params_from_file(params)
        )
        console.print(f"task {task_id} created", highlight=False)
        sys.stdout.write(f"{task_id}\n")

    guard(action)


@task_app.command("list")
def task_list(rpc: Rpc, deployment: DeploymentFile) -> None:
    """List the tasks on chain with their progress."""

    def action() -> None:
        ledger = _ledger(rpc, deployment)
        table = Table("task", "rounds", "round", "phase", "participants", "spec hash")
        for task_id in range(1, ledger.task_count() + 1):
            info, state = ledger.task(task_id), ledger.task_state(task_id)
            table.add_row(
                str(task_id),
                str(info.num_rounds),
                str(state.round),
                state.phase.name.lower(),
                str(len(info.participants)),
                to_hex(info.spec_hash)[:18] + "…",
            )
        console.print(table)

    guard(action)


@task_app.command("status")
def task_status(
    task_id: Annotated[int, typer.Argument(help="Task id.")],
    rpc: Rpc,
    deployment: DeploymentFile,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Where a task stands: round, phase, submissions, finalised model hashes."""

    def action() -> None:
        ledger = _ledger(rpc, deployment)
        if not 1 <= task_id <= ledger.task_count():
            raise UsageError(f"no task {task_id} on chain (tasks: 1..{ledger.task_count()})")
        info, state = ledger.task(task_id), ledger.task_state(task_id)
        names = {m.address.lower(): m.name for m in ledger.members()}
        last_final = info.num_rounds if state.phase.name == "DONE" else state.round - 1
        rounds = []
        for round_ in range(1, last_final + 1):
            model = ledger.round_model(task_id, round_)
            rounds.append({"round": round_, "model_hash": to_hex(model) if model else None})
        result = {
            "task_id": task_id,
            "num_rounds": info.num_rounds,
            "round": state.round,
            "phase": state.phase.name.lower(),
            "deadline": state.deadline,
            "submitted": [
                names.get(s.member.lower(), s.member) for s in ledger.submissions(task_id, state.round)
            ],
            "finalised_rounds": last_final,
            "final_model_hash": rounds[-1]["model_hash"] if rounds and state.phase.name == "DONE" else None,
            "rounds": rounds,
        }
        if as_json:
            sys.stdout.write(json.dumps(result, indent=2) + "\n")
            return
        console.print(
            f"task {task_id}: round {state.round}/{info.num_rounds}, {result['phase']}, "
            f"{len(result['submitted'])} submitted; final model {result['final_model_hash']}",
            highlight=False,
        )

    guard(action)


def register(app: typer.Typer) -> None:
    app.command("node")(node)
    app.add_typer(consortium_app, name="consortium")
    app.add_typer(member_app, name="member")
    app.add_typer(task_app, name="task")
