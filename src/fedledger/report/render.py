"""HTML for the report and the live page: the same sections, rendered from a :class:`RunView`.

Every string that comes from a run (member names, hashes, reasons, paths) is escaped here; the pages
carry a Content-Security-Policy that forbids any fetch but the live page's own ``/api/state``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from fedledger.report.svg import PART_COLORS, line_chart, share_bar, stacked_bars
from fedledger.report.view import TIME_PARTS, MemberView, RoundView, RunView

REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
LIVE_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; connect-src 'self'"

# Sections the live page replaces in place when the state changes (ids of their containers).
LIVE_SECTIONS = ("hero", "tiles", "progress", "charts", "rounds", "members", "task", "chain")

CSS = """
:root{--fg:#1c2333;--muted:#5d6678;--line:#e2e6ee;--bg:#f4f6fa;--card:#fff;--accent:#3b6fb6;--ok:#1d8049;--bad:#c0392b}
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue","Liberation Sans","DejaVu Sans",Arial,sans-serif}
.wrap{max-width:1220px;margin:0 auto;padding:0 28px}
header.top{background:linear-gradient(135deg,#152036 0%,#1f3358 100%);color:#fff;padding:26px 0 46px}
header.top h1{font-size:25px;margin:0 0 6px;font-weight:650;letter-spacing:-.01em}
header.top .sub{color:#b3bdd1;font-size:13px}
header.top .sub code{background:rgba(255,255,255,.1);color:#dfe6f3}
.hero{display:flex;justify-content:space-between;align-items:flex-start;gap:24px;flex-wrap:wrap}
.eyebrow{text-transform:uppercase;letter-spacing:.12em;font-size:11px;color:#8fa3c7;font-weight:600;margin-bottom:4px}
.badges{display:flex;gap:8px;flex-wrap:wrap;align-items:center}
.badge{display:inline-flex;align-items:center;gap:7px;padding:6px 14px;border-radius:999px;font-weight:650;
font-size:12.5px;letter-spacing:.04em;text-transform:uppercase;white-space:nowrap}
.badge.ok{background:#1d8049;color:#fff}.badge.bad{background:#c0392b;color:#fff}
.badge.info{background:rgba(255,255,255,.14);color:#fff}.badge.wait{background:rgba(255,255,255,.08);color:#c9d2e3}
.badge a{color:inherit}a.badge{text-decoration:none}a.badge:hover{background:rgba(255,255,255,.24)}
.chips{white-space:nowrap}
.dot{width:8px;height:8px;border-radius:50%;background:currentColor;display:inline-block}
.dot.live{background:#5fe08f;animation:pulse 1.4s ease-in-out infinite}
@keyframes pulse{0%,100%{opacity:1}50%{opacity:.25}}
.tiles{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:12px;margin-top:-28px}
.tile{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 16px;
box-shadow:0 1px 3px rgba(16,24,40,.06)}
.tile .k{color:var(--muted);font-size:11.5px;text-transform:uppercase;letter-spacing:.05em;font-weight:600}
.tile .v{font-size:22px;font-weight:650;font-variant-numeric:tabular-nums;margin-top:2px;white-space:nowrap}
.tile .s{color:var(--muted);font-size:12px}
section.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:18px 22px;margin:18px 0;
box-shadow:0 1px 3px rgba(16,24,40,.04)}
section.card h2{font-size:16px;margin:0 0 4px;font-weight:650}
section.card .lead{color:var(--muted);font-size:13px;margin:0 0 14px}
.charts{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:18px}
@media (max-width:1000px){.charts{grid-template-columns:1fr}}
.chartbox h3{font-size:13px;margin:0 0 6px;font-weight:600;color:#34405a}
svg.chart{width:100%;height:auto;display:block}
svg .grid{stroke:#edf0f5;stroke-width:1}svg .axis{stroke:#a3abba;stroke-width:1}
svg .tick,svg .label{font-size:11px;fill:#6b7487;font-family:inherit}
svg .line{fill:none;stroke-width:2.2;stroke-linejoin:round;stroke-linecap:round}
svg .area{opacity:.09}svg .value{font-size:12px;font-weight:650}svg .empty{fill:#9aa2b1;font-size:13px}
svg .pt{stroke:#fff;stroke-width:1.5}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px;color:var(--muted);margin-top:6px}
.sw{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;vertical-align:-1px}
.share{display:flex;height:9px;border-radius:5px;overflow:hidden;margin:10px 0 4px;background:#eef1f5}
.note{color:var(--muted);font-size:12.5px;margin:8px 0 0}
.tablewrap{overflow-x:auto}
table{width:100%;border-collapse:collapse;font-size:13px}
th{text-align:left;font-weight:600;color:var(--muted);font-size:11.5px;text-transform:uppercase;letter-spacing:.04em;
border-bottom:1px solid var(--line);padding:8px 10px;vertical-align:bottom}
td{border-bottom:1px solid #eff2f6;padding:8px 10px;vertical-align:top}
tbody tr:hover{background:#fafbfd}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono","DejaVu Sans Mono",monospace;font-size:12px;
background:#f2f4f8;padding:1px 5px;border-radius:4px;white-space:nowrap}
.chip{display:inline-block;padding:1px 8px;border-radius:999px;font-size:11.5px;background:#eef1f6;color:#36405a;
margin:1px 3px 1px 0;white-space:nowrap}
.chip.trainer{background:#e5edfa;color:#285397}.chip.aggregator{background:#f1e8fa;color:#653b98}
.chip.validator{background:#e2f4e9;color:#166b3a}.chip.admin{background:#fff1d9;color:#845300}
.chip.agreed{background:#e2f4e9;color:#166b3a}.chip.outvoted{background:#fbe5e2;color:#a22c1f}
.chip.idle{background:#f1f3f7;color:#8a92a3}
.ok{color:var(--ok)}.bad{color:var(--bad)}.muted{color:var(--muted)}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:6px 22px;margin:0;font-size:13px}
dl.facts dt{color:var(--muted)}dl.facts dd{margin:0;min-width:0}
.cols{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:18px;margin:18px 0}
@media (max-width:900px){.cols{grid-template-columns:1fr}}
.cols section.card{margin:0}
.progress{height:8px;background:#e9edf3;border-radius:4px;overflow:hidden;margin:8px 0}
.progress span{display:block;height:100%;background:var(--accent);border-radius:4px;transition:width .6s}
.status{display:flex;justify-content:space-between;gap:12px;flex-wrap:wrap;font-size:13px}
ul.findings{margin:8px 0 0;padding-left:20px}ul.findings li{margin:3px 0}
.hist{vertical-align:middle}
footer{color:var(--muted);font-size:12px;padding:10px 0 40px}
a{color:var(--accent)}
"""

LIVE_JS = """
(function(){
  var version = document.body.getAttribute('data-version');
  var conn = document.getElementById('conn');
  function poll(){
    fetch('api/state', {cache: 'no-store'}).then(function(r){
      if (!r.ok) { throw new Error('HTTP ' + r.status); }
      return r.json();
    }).then(function(state){
      conn.textContent = 'updated ' + new Date().toLocaleTimeString();
      if (state.version !== version) {
        version = state.version;
        document.body.setAttribute('data-version', version);
        document.body.setAttribute('data-status', state.status);
        Object.keys(state.html).forEach(function(id){
          var el = document.getElementById(id);
          if (el) { el.innerHTML = state.html[id]; }
        });
      }
    }).catch(function(){
      conn.textContent = 'server not reachable: showing the last state received';
    }).then(function(){ setTimeout(poll, 1000); });
  }
  setTimeout(poll, 1000);
})();
"""


DASH = '<span class="muted">–</span>'
NOT_REGISTERED = '<span class="muted">not registered</span>'


def e(value: object) -> str:
    return escape(str(value), quote=True)


def short(value: str, head: int = 8, tail: int = 6) -> str:
    """A long hex string as ``0x1234ab…89cdef`` in a code element, the full value as its tooltip."""
    text = str(value)
    shown = text if len(text) <= head + tail + 1 else f"{text[:head]}…{text[-tail:]}"
    return f'<code title="{e(text)}">{e(shown)}</code>'


def num(value: int | float) -> str:
    return f"{value:,}"


def fmt4(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def seconds_text(value: float) -> str:
    return f"{value:.2f} s" if value >= 0.1 else f"{value * 1000:.0f} ms"


# --------------------------------------------------------------------------------------------- sections


def hero(
    view: RunView,
    *,
    status: str,
    audit: Mapping[str, Any] | None,
    audit_note: str | None = None,
    extra_badge: str = "",
) -> str:
    """Title, where the run lives, and the badges: run status and the audit verdict."""
    if status == "live":
        state = (
            '<span class="badge info"><span class="dot live"></span>'
            f"live · round {view.current_round}/{view.num_rounds}</span>"
        )
    elif view.done:
        state = f'<span class="badge info">complete · {view.num_rounds} rounds</span>'
    else:
        state = (
            f'<span class="badge wait">stopped in round {view.current_round}/{view.num_rounds} '
            f"({e(view.phase)})</span>"
        )
    if audit is None:
        verdict = f'<span class="badge wait" id="verdict">{e(audit_note or "not audited")}</span>'
    elif audit["ok"]:
        verdict = '<span class="badge ok" id="verdict">&#10003; audit passed</span>'
    else:
        n = len(audit["violations"])
        verdict = f'<span class="badge bad" id="verdict">&#10007; audit failed: {n} violation{"s" if n != 1 else ""}</span>'
    return (
        '<div class="hero"><div><div class="eyebrow">fedledger run</div>'
        f"<h1>{e(view.title)}</h1>"
        f'<div class="sub">task {view.task_id} on chain {view.chain.chain_id} · run directory '
        f"<code>{e(view.run_dir)}</code></div></div>"
        f'<div class="badges">{state}{verdict}{extra_badge}</div></div>'
    )


def tiles(view: RunView, wall_seconds: float | None = None) -> str:
    last = view.last
    items = [
        (
            "final accuracy" if view.done else "accuracy",
            fmt4(last.accuracy if last else None),
            f"round {last.round}" if last else "no round yet",
        ),
        ("final loss" if view.done else "loss", fmt4(last.loss if last else None), "validators' mean"),
        ("rounds", f"{view.finalised}/{view.num_rounds}", view.phase if not view.done else "all finalised"),
        ("members", str(len(view.members)), f"{view.num_trainers} trainers"),
        ("transactions", num(view.chain.transactions), f"{num(view.chain.blocks)} blocks"),
        ("gas used", num(view.chain.gas_used), "all transactions"),
    ]
    if wall_seconds is not None:
        items.append(("wall time", f"{wall_seconds:.1f} s", "as the run measured it"))
    return "".join(
        f'<div class="tile"><div class="k">{e(k)}</div><div class="v">{e(v)}</div><div class="s">{e(s)}</div></div>'
        for k, v, s in items
    )


def progress(view: RunView, *, live: bool) -> str:
    """Where the task stands: a bar over the rounds, and what the current round is waiting for."""
    pct = view.finalised / max(1, view.num_rounds) * 100
    if view.done:
        now = f"all {view.num_rounds} rounds finalised"
    elif view.phase == "training":
        now = f"round {view.current_round}: training, {view.submitted}/{view.num_trainers} updates committed"
    else:
        now = f"round {view.current_round}: committee aggregating ({view.quorum} equal proposals finalise it)"
    right = '<span class="muted" id="conn">following the chain</span>' if live else ""
    return (
        f'<div class="status"><span><b>{e(now)}</b></span>{right}</div>'
        f'<div class="progress"><span style="width:{pct:.1f}%"></span></div>'
    )


def charts(view: RunView) -> str:
    acc = [(r.round, r.accuracy) for r in view.rounds if r.accuracy is not None]
    loss = [(r.round, r.loss) for r in view.rounds if r.loss is not None]
    timed = [(r.round, r.seconds) for r in view.rounds if r.seconds is not None]
    acc_svg = line_chart(
        [(r, float(v)) for r, v in acc],
        num_rounds=view.num_rounds,
        title="test accuracy per round",
        y_label="accuracy",
        color="#3b6fb6",
        kind="accuracy",
        fmt=lambda v: f"{v:.4f}",
        floor=0.0,
        ceiling=1.0,
    )
    loss_svg = line_chart(
        [(r, float(v)) for r, v in loss],
        num_rounds=view.num_rounds,
        title="test loss per round",
        y_label="loss",
        color="#d1495b",
        kind="loss",
        fmt=lambda v: f"{v:.4f}",
        from_zero=True,
    )
    time_svg = stacked_bars(
        [(r, s) for r, s in timed], num_rounds=view.num_rounds, title="time per round", parts=TIME_PARTS
    )
    legend = "".join(
        f'<span><span class="sw" style="background:{PART_COLORS[p]}"></span>{e(p)}</span>' for p in TIME_PARTS
    )
    totals = {p: sum((s or {}).get(p, 0.0) for _, s in timed) for p in TIME_PARTS}
    total = sum(totals.values())
    split = ", ".join(
        f"{p} {totals[p] / total * 100:.0f}%" for p in TIME_PARTS if total > 0 and totals[p] > 0
    )
    if view.timings_source:
        source = (
            f"Seconds per round come from {e(view.timings_source)}: "
            "the run's own measurement, not part of the chain's record."
        )
    else:
        source = "No timings: summary.json is missing (the run did not finish), and the chain does not record time spent."
    return (
        '<div class="charts">'
        f'<div class="chartbox"><h3>Test accuracy</h3>{acc_svg}</div>'
        f'<div class="chartbox"><h3>Test loss</h3>{loss_svg}</div>'
        f'<div class="chartbox"><h3>Time per round</h3>{time_svg}<div class="legend">{legend}</div></div>'
        "</div>"
        + (
            f'{share_bar(totals, TIME_PARTS)}<p class="note">All rounds: {seconds_text(total)} measured ({e(split)}). '
            if total > 0
            else '<p class="note">'
        )
        + f"Accuracy and loss are the validators' metrics posted on chain. {source}</p>"
    )


def _committee_cell(r: RoundView, quorum: int) -> str:
    by_aggregator = {p.aggregator: p for p in r.proposals}
    chips = []
    for name in r.committee:
        p = by_aggregator.get(name)
        if p is None:
            chips.append(
                f'<span class="chip idle" title="did not propose before the quorum">{e(name)}</span>'
            )
        elif p.agreed:
            chips.append(
                f'<span class="chip agreed" title="proposed {e(p.model_hash)} in tx {e(p.tx)}">&#10003; {e(name)}</span>'
            )
        else:
            chips.append(
                f'<span class="chip outvoted" title="proposed {e(p.model_hash)} in tx {e(p.tx)}: outvoted">'
                f"&#10007; {e(name)}</span>"
            )
    for p in r.proposals:  # a proposer the committee list does not show (should not happen)
        if p.aggregator not in r.committee:
            css = "agreed" if p.agreed else "outvoted"
            chips.append(f'<span class="chip {css}" title="{e(p.model_hash)}">{e(p.aggregator)}</span>')
    agreed = sum(1 for p in r.proposals if p.agreed)
    return (
        f'<div class="chips">{"".join(chips)}</div>'
        f'<div class="muted">{agreed} of {len(r.committee)} agreed · quorum {quorum}</div>'
    )


def rounds_table(view: RunView) -> str:
    if not view.rounds:
        return '<p class="muted">No round has been finalised yet.</p>'
    rows = []
    for r in view.rounds:
        excluded = (
            "<br>".join(f'<span class="bad">{e(x.member)}: {e(x.reason)}</span>' for x in r.excluded)
            if r.excluded
            else '<span class="muted">none</span>'
        )
        outvoted = [p for p in r.proposals if not p.agreed]
        model = short(r.model_hash)
        if outvoted:
            model += "".join(
                f'<div class="bad">outvoted: {short(p.model_hash)} by {e(p.aggregator)}</div>'
                for p in outvoted
            )
        rows.append(
            f'<tr class="round-row" data-round="{r.round}">'
            f'<td class="num"><b>{r.round}</b></td>'
            f'<td class="num">{fmt4(r.accuracy)}</td><td class="num">{fmt4(r.loss)}</td>'
            f'<td class="num">{len(r.included)}</td><td>{excluded}</td><td class="num">{num(r.samples)}</td>'
            f"<td>{_committee_cell(r, view.quorum)}</td><td>{model}</td>"
            f"<td>block {r.finalized_block}<br>{short(r.finalized_tx)}</td></tr>"
        )
    return (
        '<div class="tablewrap"><table id="rounds-table"><thead><tr><th class="num">round</th>'
        '<th class="num">accuracy</th><th class="num">loss</th><th class="num">updates in</th><th>excluded (reason)</th>'
        '<th class="num">samples</th><th>committee and proposals</th><th>model blob</th><th>finalised</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _histogram(counts: Sequence[int]) -> str:
    """A tiny bar chart of a dataset's label histogram, with the counts as text beside it."""
    if not counts:
        return '<span class="muted">–</span>'
    top = max(counts) or 1
    w = 7
    bars = "".join(
        f'<rect x="{i * (w + 2)}" y="{18 - c / top * 18:.1f}" width="{w}" height="{max(c / top * 18, 0.5):.1f}" '
        f'fill="#7d9bd1"><title>label {i}: {c}</title></rect>'
        for i, c in enumerate(counts)
    )
    svg = (
        f'<svg class="hist" width="{len(counts) * (w + 2)}" height="18" viewBox="0 0 {len(counts) * (w + 2)} 18" '
        f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="label histogram">{bars}</svg>'
    )
    text = " · ".join(str(c) for c in counts) if len(counts) <= 10 else f"{len(counts)} labels"
    return f'{svg} <span class="muted">{e(text)}</span>'


def members_table(view: RunView) -> str:
    rows = []
    for m in view.members:
        rows.append(_member_row(m, view.finalised))
    return (
        '<div class="tablewrap"><table id="members-table"><thead><tr><th>member</th><th>roles</th>'
        '<th class="num">updates</th><th class="num">in aggregate</th><th>exclusions (round: reason)</th>'
        '<th class="num">dataset samples</th><th>label histogram</th><th>dataset merkle root</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _member_row(m: MemberView, finalised: int) -> str:
    roles = "".join(f'<span class="chip {e(r)}">{e(r)}</span>' for r in m.roles)
    if m.admin:
        roles += '<span class="chip admin">admin</span>'
    if not m.active:
        roles += '<span class="chip outvoted">removed</span>'
    exclusions = (
        "<br>".join(f'<span class="bad">{r}: {e(reason)}</span>' for r, reason in m.exclusions)
        if m.exclusions
        else '<span class="muted">none</span>'
    )
    trainer = "trainer" in m.roles
    d = m.dataset
    return (
        f'<tr class="member-row" data-member="{e(m.name)}"><td><b>{e(m.name)}</b><br>{short(m.address, 10, 4)}</td>'
        f"<td>{roles}</td>"
        f'<td class="num">{m.submissions if trainer else "–"}</td>'
        f'<td class="num">{f"{m.included}/{finalised}" if trainer else "–"}</td>'
        f"<td>{exclusions if trainer else DASH}</td>"
        f'<td class="num">{num(d.samples) if d else "–"}</td>'
        f"<td>{_histogram(d.label_histogram) if d else DASH}</td>"
        f"<td>{short(d.merkle_root, 8, 4) if d else (NOT_REGISTERED if trainer else DASH)}</td></tr>"
    )


def task_card(view: RunView) -> str:
    rows = [
        *view.task_facts,
        ("rounds", str(view.num_rounds)),
        ("committee", f"{view.committee_size} aggregators per round, quorum {view.quorum}"),
        ("minimum updates", str(view.min_updates)),
        ("round deadline", f"{view.round_duration} s of chain time"),
    ]
    return _facts(rows)


def _facts(rows: Iterable[tuple[str, str]], *, raw: bool = False) -> str:
    items = "".join(f"<dt>{e(k)}</dt><dd>{v if raw else e(v)}</dd>" for k, v in rows)
    return f'<dl class="facts">{items}</dl>'


def chain_card(view: RunView) -> str:
    c = view.chain
    events = "".join(f'<span class="chip">{e(name)} {n}</span>' for name, n in c.event_counts.items())
    rows = [
        ("chain id", e(c.chain_id)),
        ("Consortium contract", f"<code>{e(c.consortium)}</code>"),
        ("TrainingTask contract", f"<code>{e(c.training_task)}</code>"),
        ("deployed in block", e(c.deploy_block)),
        ("blocks", e(num(c.blocks))),
        ("transactions", e(num(c.transactions))),
        ("gas used", e(num(c.gas_used))),
        ("admins", e(f"{c.admin_threshold} of {c.num_admins} must approve membership and tasks")),
        ("events", f"{num(c.events)}<div>{events}</div>"),
    ]
    return _facts(rows, raw=True)


def provenance_card(provenance: Mapping[str, Any] | None, error: str | None) -> str:
    if provenance is None:
        return f'<p class="muted">{e(error or "no final model")}</p>'
    p = provenance
    rows = [
        ("model file sha256", short(p["model_sha256"], 12, 8)),
        (
            "global model of",
            e(f"round {p['round']} of task {p['task_id']}" + (" (final)" if p["final"] else "")),
        ),
        ("encrypted blob", short(p["model_blob"], 12, 8)),
        ("finalised by tx", short(p["finalized_tx"], 12, 8)),
        ("committee", " ".join(f'<span class="chip">{e(m)}</span>' for m in p["committee"])),
        ("samples behind it", e(num(p["total_samples"]))),
    ]
    contributors = "".join(
        f'<tr><td><b>{e(c["member"])}</b></td><td class="num">{num(c["num_samples"])}</td>'
        f'<td class="num">{num(c["dataset_samples"]) if c["dataset_samples"] is not None else "–"}</td>'
        f"<td>{_histogram(c['label_histogram'] or [])}</td>"
        f"<td>{short(c['dataset_merkle_root']) if c['dataset_merkle_root'] else '–'}</td>"
        f"<td>{short(c['blob'])}</td><td>{short(c['submit_tx'])}</td></tr>"
        for c in p["contributors"]
    )
    return (
        _facts(rows, raw=True)
        + '<div class="tablewrap" style="margin-top:14px"><table><thead><tr><th>contributor</th>'
        '<th class="num">samples</th><th class="num">dataset samples</th><th>label histogram</th>'
        "<th>dataset merkle root</th><th>update blob</th><th>submit tx</th></tr></thead>"
        f"<tbody>{contributors}</tbody></table></div>"
    )


def audit_card(audit: Mapping[str, Any] | None, note: str | None = None) -> str:
    if audit is None:
        return f'<p class="muted">{e(note or "not audited")}</p>'
    head = (
        '<p><b class="ok">&#10003; Audit passed.</b> '
        if audit["ok"]
        else f'<p><b class="bad">&#10007; Audit failed: {len(audit["violations"])} violation(s).</b> '
    )
    head += (
        f"{audit['rounds_checked']} rounds recomputed from the encrypted updates, {audit['blobs_checked']} blobs "
        f"checked against their content addresses, {audit['events_read']} events read.</p>"
    )
    violations = "".join(f'<li class="bad">{e(v["line"])}</li>' for v in audit["violations"])
    misbehaviour = "".join(
        f"<li>round {m['round']}, {e(m['member'])}: {e(m['kind'])} ({e(m['detail'])})</li>"
        for m in audit["misbehaviour"]
    )
    out = head
    if violations:
        out += f'<h3>Violations</h3><ul class="findings">{violations}</ul>'
    out += (
        f'<h3 style="font-size:13px;margin:12px 0 0">Protections that fired</h3><ul class="findings">{misbehaviour}</ul>'
        if misbehaviour
        else '<p class="muted">No update was excluded and no proposal outvoted.</p>'
    )
    return out


def card(section_id: str, title: str, lead: str, body: str) -> str:
    lead_html = f'<p class="lead">{lead}</p>' if lead else ""
    return (
        f'<section class="card"><h2>{e(title)}</h2>{lead_html}<div id="{section_id}">{body}</div></section>'
    )


# ----------------------------------------------------------------------------------------------- pages


def page(title: str, header: str, body: str, *, csp: str, script: str = "", body_attrs: str = "") -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{e(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{e(title)}</title><style>{CSS}</style></head>"
        f"<body{body_attrs}>"
        f'<header class="top"><div class="wrap" id="hero">{header}</div></header>'
        f'<main class="wrap">{body}</main>'
        + (f"<script>{script}</script>" if script else "")
        + "</body></html>\n"
    )


def render_report(
    view: RunView,
    *,
    audit: Mapping[str, Any] | None,
    provenance: Mapping[str, Any] | None,
    provenance_error: str | None = None,
    wall_seconds: float | None = None,
    generated_at: datetime | None = None,
) -> str:
    """The self-contained report: one HTML file, no script, nothing fetched."""
    when = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    body = (
        f'<div class="tiles" id="tiles">{tiles(view, wall_seconds)}</div>'
        + ("" if view.done else card("progress", "Progress", "", progress(view, live=False)))
        + card("charts", "Learning and cost per round", "", charts(view))
        + card(
            "rounds",
            "Rounds",
            "Each round as the chain records it: the committee's proposals, the model hash a quorum agreed on, "
            "who was in the aggregate and who was left out and why.",
            rounds_table(view),
        )
        + card(
            "members",
            "Members",
            "Roles as the Consortium contract holds them; dataset fingerprints as each trainer committed them "
            "(sample count, label histogram, Merkle root of its records: never the data).",
            members_table(view),
        )
        + card(
            "provenance",
            "Final model provenance",
            "The model file matched byte for byte against the finalised global models, and what the chain "
            "records about the round that produced it.",
            provenance_card(provenance, provenance_error),
        )
        + card(
            "audit",
            "Audit",
            "Every event, blob and aggregate re-verified from the record alone (what <code>fedledger audit</code> does).",
            audit_card(audit),
        )
        + '<div class="cols">'
        + card(
            "task",
            "Task",
            "The agreed spec (decrypted from its committed blob) and the protocol's parameters.",
            task_card(view),
        )
        + card("chain", "Chain", "Facts read from the embedded chain itself.", chain_card(view))
        + "</div>"
        + f"<footer>Generated by fedledger on {e(when)} from <code>{e(view.run_dir)}</code>. "
        "Everything here is read from the chain and the blob store and re-checked by the audit, except the "
        "seconds per round, which only the run measured (summary.json).</footer>"
    )
    return page(
        f"fedledger report: {view.title}", hero(view, status="report", audit=audit), body, csp=REPORT_CSP
    )


def live_sections(
    view: RunView,
    *,
    live: bool,
    audit: Mapping[str, Any] | None = None,
    audit_note: str | None = None,
    report_ready: bool = False,
    wall_seconds: float | None = None,
) -> dict[str, str]:
    """The live page's replaceable sections, keyed by container id."""
    link = (
        '<a class="badge info" id="report-link" href="report">full report &#8599;</a>' if report_ready else ""
    )
    return {
        "hero": hero(
            view,
            status="live" if live else "final",
            audit=audit,
            audit_note=audit_note or ("audit when the run ends" if live else None),
            extra_badge=link,
        ),
        "tiles": tiles(view, wall_seconds),
        "progress": progress(view, live=True),
        "charts": charts(view),
        "rounds": rounds_table(view),
        "members": members_table(view),
        "task": task_card(view),
        "chain": chain_card(view),
    }


def waiting_sections(message: str) -> dict[str, str]:
    """What the live page shows before the run's chain exists (keys, contracts and task being set up)."""
    empty = '<p class="muted">waiting for the run to start</p>'
    return {
        "hero": '<div class="hero"><div><div class="eyebrow">fedledger run</div>'
        f'<h1>{e(message)}</h1><div class="sub">the page fills in as soon as the chain exists</div></div>'
        '<div class="badges"><span class="badge wait"><span class="dot live"></span>starting</span></div></div>',
        "tiles": "",
        "progress": f'<div class="status"><span>{e(message)}</span><span class="muted" id="conn"></span></div>',
        "charts": empty,
        "rounds": empty,
        "members": empty,
        "task": empty,
        "chain": empty,
    }


def render_live_page(sections: Mapping[str, str], *, version: str, status: str, title: str) -> str:
    """The live page: the same sections as the report, refreshed in place from ``/api/state``."""
    body = (
        f'<div class="tiles" id="tiles">{sections["tiles"]}</div>'
        + card("progress", "Progress", "", sections["progress"])
        + card("charts", "Learning and cost per round", "", sections["charts"])
        + card(
            "rounds",
            "Rounds",
            "Read from the chain's events as each round is finalised.",
            sections["rounds"],
        )
        + card(
            "members",
            "Members",
            "Roles, submissions and dataset fingerprints as committed on chain.",
            sections["members"],
        )
        + '<div class="cols">'
        + card("task", "Task", "", sections["task"])
        + card("chain", "Chain", "", sections["chain"])
        + "</div>"
        + "<footer>This page polls the run's own server on 127.0.0.1 every second; every number except the "
        "seconds per round comes from the chain's events.</footer>"
    )
    attrs = f' data-version="{e(version)}" data-status="{e(status)}"'
    return page(
        f"fedledger live: {title}", sections["hero"], body, csp=LIVE_CSP, script=LIVE_JS, body_attrs=attrs
    )
