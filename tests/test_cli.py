"""The command line: the demo reaches its accuracy and audits clean; user mistakes are one line, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from fedledger.cli.main import app
from fedledger.sim.templates import EXAMPLE_CONFIG

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "Traceback" not in output, output
    return result.exit_code, output


def test_demo_reaches_target_accuracy_and_audits_clean(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    code, output = invoke("demo", "--out", str(out), "--quiet")
    assert code == 0, output
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["rounds"]) == 10
    assert summary["final"]["test_accuracy"] >= 0.93
    code, output = invoke("audit", str(out))
    assert code == 0, output
    assert "audit passed" in output
    code, output = invoke("audit", str(out), "--json")
    assert code == 0 and json.loads(output)["ok"] is True
    code, output = invoke("provenance", str(out / "model.safetensors"), str(out), "--json")
    assert code == 0 and json.loads(output)["round"] == 10


def test_init_writes_a_config_that_runs_validation(tmp_path: Path) -> None:
    code, output = invoke("init", str(tmp_path))
    assert code == 0, output
    assert (tmp_path / "fedledger.toml").read_text() == EXAMPLE_CONFIG
    code, output = invoke("init", str(tmp_path))
    assert code == 2 and "already exists" in output


def test_missing_config_is_a_usage_error(tmp_path: Path) -> None:
    code, output = invoke("run", str(tmp_path / "missing.toml"))
    assert code == 2
    assert "missing.toml: config file not found" in output


def test_bad_config_field_is_named(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(EXAMPLE_CONFIG.replace("rounds = 10", "rounds = -1"))
    code, output = invoke("run", str(config), "--out", str(tmp_path / "run"))
    assert code == 2
    assert "task.rounds" in output
    assert not (tmp_path / "run").exists()


def test_missing_dataset_directory_is_named(tmp_path: Path) -> None:
    config = tmp_path / "fm.toml"
    text = EXAMPLE_CONFIG.replace(
        'dataset = "breast_cancer"', 'dataset = "fashion_mnist"\npath = "/nonexistent/fm"'
    )
    config.write_text(text)
    code, output = invoke("run", str(config), "--out", str(tmp_path / "run"))
    assert code == 2
    assert "/nonexistent/fm" in output


def test_audit_of_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    code, output = invoke("audit", str(tmp_path))
    assert code == 2
    assert "not a fedledger run directory" in output


def test_wrong_keystore_password_is_one_line(tmp_path: Path, monkeypatch: object) -> None:
    out = tmp_path / "demo"
    code, output = invoke("demo", "--out", str(out), "--rounds", "1", "--quiet")
    assert code == 0, output
    (tmp_path / "pw").write_text("not-the-password\n")
    code, output = invoke("audit", str(out), "--password-file", str(tmp_path / "pw"))
    assert code == 2
    assert "wrong password" in output and "keys/hospital-a.json" in output
