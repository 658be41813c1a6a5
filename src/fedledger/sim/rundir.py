"""The run directory: everything a run leaves behind, and how to recognise one.

Layout: ``chain/`` (embedded chain), ``blobs/`` (encrypted store), ``keys/`` (simulated members'
keystores), ``abi/``, ``deployment.json``, ``run-config.json``, ``model.safetensors``, ``summary.json``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedledger.errors import UsageError
from fedledger.ledger.types import Deployment


def write_atomic(path: Path, data: bytes) -> None:
    """Write then rename, so a crash never leaves a half-written file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=2, sort_keys=False) + "\n").encode())


@dataclass(frozen=True)
class MemberRecord:
    """A simulated member as deployment.json lists it."""

    name: str
    address: str
    roles: tuple[str, ...]
    keystore: str


@dataclass(frozen=True)
class RunDirectory:
    root: Path

    @property
    def chain(self) -> Path:
        return self.root / "chain"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def abi(self) -> Path:
        return self.root / "abi"

    @property
    def deployment_file(self) -> Path:
        return self.root / "deployment.json"

    @property
    def config_file(self) -> Path:
        return self.root / "run-config.json"

    @property
    def summary_file(self) -> Path:
        return self.root / "summary.json"

    @property
    def model_file(self) -> Path:
        return self.root / "model.safetensors"

    @property
    def password_file(self) -> Path:
        return self.keys / ".password"

    @classmethod
    def create(cls, root: Path) -> RunDirectory:
        """A new run directory; refuses to reuse one so nothing recorded is ever overwritten."""
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise UsageError(
                f"{root} already exists and is not empty; choose another --out, or `fedledger resume {root}`"
            )
        root.mkdir(parents=True, exist_ok=True)
        for sub in ("keys", "blobs", "abi"):
            (root / sub).mkdir(exist_ok=True)
        os.chmod(root / "keys", 0o700)
        return cls(root)

    @classmethod
    def open(cls, root: Path) -> RunDirectory:
        """An existing run directory, with one clear line if ``root`` is not one."""
        run = cls(root)
        if not root.is_dir():
            raise UsageError(f"{root}: no such run directory")
        if not run.deployment_file.is_file():
            raise UsageError(f"{root} is not a fedledger run directory (deployment.json missing)")
        return run

    def read_deployment(self) -> dict[str, Any]:
        try:
            value = json.loads(self.deployment_file.read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"{self.deployment_file}: unreadable: {exc}") from None
        if not isinstance(value, dict):
            raise UsageError(f"{self.deployment_file}: not a JSON object")
        return value

    def deployment(self) -> Deployment:
        raw = self.read_deployment()
        try:
            return Deployment(
                chain_id=int(raw["chain_id"]),
                consortium=str(raw["consortium"]),
                training_task=str(raw["training_task"]),
                deploy_block=int(raw.get("deploy_block", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"{self.deployment_file}: missing or invalid field {exc}") from None

    def members(self) -> list[MemberRecord]:
        raw = self.read_deployment()
        try:
            return [
                MemberRecord(
                    name=str(m["name"]),
                    address=str(m["address"]),
                    roles=tuple(m["roles"]),
                    keystore=str(m["keystore"]),
                )
                for m in raw["members"]
            ]
        except (KeyError, TypeError) as exc:
            raise UsageError(f"{self.deployment_file}: invalid members list ({exc})") from None

    def task_id(self) -> int:
        raw = self.read_deployment()
        try:
            return int(raw["task_id"])
        except (KeyError, TypeError, ValueError):
            raise UsageError(f"{self.deployment_file}: no task_id (setup did not complete)") from None
