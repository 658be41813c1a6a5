"""The report and the live page's server, without a browser: built from the record, escaped, self-contained."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fedledger.cli.main import app
from fedledger.errors import UsageError
from fedledger.ledger.chain import EmbeddedChain
from fedledger.report import build_report, read_view
from fedledger.report.live import LiveServer
from fedledger.report.render import render_report
from fedledger.report.svg import nice_ticks
from fedledger.sim.config import RunConfig, parse_config
from fedledger.sim.simulation import Simulation
from fedledger.sim.templates import EXAMPLE_CONFIG, demo_config

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "Traceback" not in output, output
    return result.exit_code, output


def dropout_config(rounds: int = 3) -> RunConfig:
    """The demo consortium with hospital-d offline in round 2, so the record holds an exclusion."""
    raw = demo_config(rounds=rounds).model_dump(mode="json")
    raw["members"][3]["drop_out_rounds"] = [2]
    return parse_config(raw, "test")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "dropout"
    sim = Simulation.create(dropout_config(), out)
    try:
        sim.run()
    finally:
        sim.close()
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as response:
        value: dict[str, Any] = json.loads(response.read())
        return value


def test_view_is_read_from_the_chain(run_dir: Path) -> None:
    view = read_view(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert view.done and [r.round for r in view.rounds] == [1, 2, 3]
    for r, recorded in zip(view.rounds, summary["rounds"], strict=True):
        assert r.model_hash == recorded["model_hash"]
        assert r.accuracy == recorded["test_accuracy"]
        assert len(r.committee) == 3 and sum(p.agreed for p in r.proposals) >= 2
        assert r.seconds is not None and set(r.seconds) <= {
            "train",
            "crypto",
            "ledger",
            "store",
            "aggregate",
            "evaluate",
        }
    assert [(x.member, x.reason) for x in view.rounds[1].excluded] == [("hospital-d", "not_submitted")]
    by_name = {m.name: m for m in view.members}
    assert by_name["hospital-d"].exclusions == [(2, "not_submitted")]
    assert by_name["hospital-d"].submissions == 2 and by_name["hospital-a"].submissions == 3
    assert by_name["hospital-a"].admin and "validator" in by_name["hospital-a"].roles
    dataset = by_name["hospital-c"].dataset
    assert dataset is not None and dataset.samples == sum(dataset.label_histogram)
    assert view.chain.blocks == summary["totals"]["blocks"]
    assert view.chain.transactions == summary["totals"]["transactions"]
    assert view.chain.gas_used == summary["totals"]["gas_used"]
    assert view.chain.event_counts["RoundFinalized"] == 3


def test_report_shows_every_section(run_dir: Path, tmp_path: Path) -> None:
    report = build_report(run_dir)
    html = report.html
    assert report.audit["ok"] and report.provenance is not None and report.provenance["round"] == 3
    for round_ in (1, 2, 3):
        assert f'<tr class="round-row" data-round="{round_}">' in html
        assert f'data-kind="accuracy" data-round="{round_}"' in html
        assert f'data-kind="loss" data-round="{round_}"' in html
        assert f'class="bar" data-round="{round_}"' in html
    for part in ("train", "crypto", "ledger", "store", "aggregate"):
        assert f'data-part="{part}"' in html
    assert "audit passed" in html
    assert "hospital-d: not_submitted" in html
    deployment = json.loads((run_dir / "deployment.json").read_text())
    assert deployment["consortium"] in html and deployment["training_task"] in html
    assert report.provenance["model_sha256"] in html
    for member in deployment["members"]:
        assert f'data-member="{member["name"]}"' in html
    assert "summary.json" in html  # the page says where the timings come from


def test_report_is_self_contained(run_dir: Path) -> None:
    html = build_report(run_dir).html
    assert "<script" not in html
    assert 'Content-Security-Policy" content="default-src &#x27;none&#x27;' in html
    without_svg_namespace = html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert not re.search(r"https?://", without_svg_namespace)
    assert not re.search(r"\b(src|href)=\"(?!data:)", html)
    assert "url(" not in html and "@import" not in html


def test_strings_from_the_run_are_escaped(run_dir: Path) -> None:
    view = read_view(run_dir)
    hostile = '<img src=x onerror="alert(1)">'
    view.members[0] = replace(view.members[0], name=hostile)
    view.rounds[0] = replace(view.rounds[0], committee=[hostile, *view.rounds[0].committee[1:]])
    view = replace(view, title=hostile, run_dir=hostile)
    html = render_report(view, audit=None, provenance=None, provenance_error=hostile)
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html


def test_a_tampered_run_reports_the_failed_audit(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    model = copy / "model.safetensors"
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")
    report = build_report(copy)
    assert not report.audit["ok"]
    assert "audit failed" in report.html
    assert "model.safetensors" in report.html and "is not the final model" in report.html
    assert report.provenance is None and "matches no finalised model" in (report.provenance_error or "")


def test_report_command_writes_the_file(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    code, output = invoke("report", str(run_dir), "--out", str(out))
    assert code == 0, output
    assert "audit passed" in output and "3/3 rounds" in output
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_report_command_mistakes_are_one_line(run_dir: Path, tmp_path: Path) -> None:
    code, output = invoke("report", str(tmp_path))
    assert code == 2 and "not a fedledger run directory" in output
    code, output = invoke("report", str(tmp_path / "missing"))
    assert code == 2 and "no such run directory" in output
    code, output = invoke("report", str(run_dir), "--out", str(tmp_path))
    assert code == 2 and "is a directory" in output


def test_dashboard_refuses_a_port_in_use_and_a_locked_chain(run_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, output = invoke("dashboard", str(run_dir), "--port", str(port))
        assert code == 2 and f"cannot serve the live page on 127.0.0.1:{port}" in output
    chain = EmbeddedChain.open(run_dir / "chain")
    try:
        code, output = invoke("dashboard", str(run_dir), "--port", "0")
        assert code == 2 and "a running process holds its chain" in output
    finally:
        chain.close()


def test_serve_needs_a_secured_run_and_linger_needs_serve(tmp_path: Path) -> None:
    config = tmp_path / "off.toml"
    config.write_text(
        EXAMPLE_CONFIG.replace("enabled = true", "enabled = false").replace("rounds = 10", "rounds = 1")
    )
    code, output = invoke("run", str(config), "--serve", "0", "--quiet")
    assert code == 2 and "needs a secured run" in output
    code, output = invoke("demo", "--out", str(tmp_path / "d"), "--linger", "1")
    assert code == 2 and "--linger only applies with --serve" in output
    assert not (tmp_path / "d").exists()


def test_live_server_follows_a_run_then_serves_the_report(tmp_path: Path) -> None:
    server = LiveServer(0).start()
    try:
        state = get_json(server.url + "api/state")
        assert state["status"] == "starting" and state["run"] is None
        with pytest.raises(UsageError, match="cannot serve the live page"):
            LiveServer(int(server.url.rsplit(":", 1)[1].strip("/")))
        sim = Simulation.create(demo_config(rounds=2), tmp_path / "run")
        server.follow(sim)
        seen: list[tuple[str, list[int]]] = []
        sweep = sim._sweep

        def observed_sweep() -> bool:
            """After each sweep (at most one round finalises per sweep), read what the page would show."""
            progressed = sweep()
            if sim._finalised_rounds() > len(seen):
                time.sleep(0.5)  # past the server's refresh interval
                state = get_json(server.url + "api/state")
                seen.append((state["status"], [r["round"] for r in state["run"]["rounds"]]))
            return progressed

        sim._sweep = observed_sweep  # type: ignore[method-assign]
        try:
            sim.run()
        finally:
            sim.close()
        assert seen == [("live", [1]), ("finished", [1, 2])]
        server.finish(tmp_path / "run")
        deadline = time.monotonic() + 30
        while not (state := get_json(server.url + "api/state"))["report_ready"]:
            assert time.monotonic() < deadline, state["status"]
            time.sleep(0.1)
        assert state["status"] == "finished" and "audit passed" in state["html"]["hero"]
        with urllib.request.urlopen(server.url + "report", timeout=5) as response:
            assert b'data-round="2"' in response.read()
        with urllib.request.urlopen(server.url, timeout=5) as response:
            page = response.read().decode()
            assert "api/state" in page and 'data-status="finished"' in page
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.url + "nothing", timeout=5)
        assert missing.value.code == 404
    finally:
        server.close()


def test_demo_serve_keeps_serving_for_linger(tmp_path: Path) -> None:
    port = free_port()
    states: list[dict[str, Any]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):  # not listening yet, or no longer
                states.append(get_json(f"http://127.0.0.1:{port}/api/state"))
            time.sleep(0.2)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        code, output = invoke(
            "demo",
            "--out",
            str(tmp_path / "d"),
            "--rounds",
            "2",
            "--quiet",
            "--serve",
            str(port),
            "--linger",
            "2",
        )
    finally:
        stop.set()
        poller.join(5)
    assert code == 0, output
    assert f"live page: http://127.0.0.1:{port}/" in output and "for 2 s" in output
    assert any(s["status"] == "finished" and s["report_ready"] for s in states)
    with pytest.raises(OSError):
        get_json(f"http://127.0.0.1:{port}/api/state")  # stopped after the linger


def test_nice_ticks_cover_the_range() -> None:
    assert nice_ticks(0.0, 1.0) == [0.0, 0.25, 0.5, 0.75, 1.0]
    ticks = nice_ticks(0.931, 0.972)
    assert ticks[0] <= 0.931 and ticks[-1] >= 0.972 and len(ticks) <= 7
    assert nice_ticks(5.0, 5.0)[0] <= 5.0 <= nice_ticks(5.0, 5.0)[-1]


def test_report_of_an_interrupted_run(tmp_path: Path) -> None:
    sim = Simulation.create(demo_config(rounds=3), tmp_path / "run")
    sweep = sim._sweep

    def interrupted_sweep() -> bool:
        progressed = sweep()
        if sim._finalised_rounds() == 1:
            raise KeyboardInterrupt
        return progressed

    sim._sweep = interrupted_sweep  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        sim.run()
    sim.close()
    report = build_report(tmp_path / "run")
    assert report.audit["ok"] and [r.round for r in report.view.rounds] == [1]
    assert "stopped in round 2/3" in report.html and "round 2: training" in report.html
    assert "No timings: summary.json is missing" in report.html
    assert report.provenance is None and "the run has not finished" in (report.provenance_error or "")
