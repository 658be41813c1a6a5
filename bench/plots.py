"""PNG plots for docs/benchmarks.md from the JSON that bench_flower.py and bench_scale.py wrote.

    .venv/bin/python bench/plots.py [--flower bench/results/flower.json] [--scale bench/results/scale.json]
        [--out docs]

Writes ``bench_accuracy_vs_time.png``, ``bench_cost_vs_members.png`` and ``bench_cost_vs_model_size.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

BENCH_DIR = Path(__file__).resolve().parent
LABELS = {
    "bare": "bare PyTorch FedAvg loop (floor)",
    "fedledger_off": "fedledger, security off",
    "fedledger_secured": "fedledger, secured",
    "flower_tutorial_cpus2": "Flower 1.42 + Ray as its quickstart writes it (DataLoader loop, 2 CPUs/client)",
    "flower_train_local_cpus1": "Flower 1.42 + Ray with fedledger's train_local, 1 CPU/client",
}
STYLES: dict[str, dict[str, Any]] = {
    "bare": {"color": "0.5", "linestyle": ":"},
    "fedledger_off": {"color": "tab:blue", "linestyle": "--"},
    "fedledger_secured": {"color": "tab:blue", "linestyle": "-"},
    "flower_tutorial_cpus2": {"color": "tab:orange", "linestyle": "-"},
    "flower_train_local_cpus1": {"color": "tab:orange", "linestyle": "--"},
}
PARTS = ("crypto", "ledger", "store", "aggregate", "untimed")


def accuracy_vs_time(doc: dict[str, Any], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, run in doc["systems"].items():
        ts = [p["t"] for p in run["curve"]]
        acc = [100 * p["test_accuracy"] for p in run["curve"]]
        label = f"{LABELS.get(name, name)}: {run['wall_seconds']:.0f} s, {acc[-1]:.2f} %"
        ax.plot(ts, acc, marker="o", markersize=3, label=label, **STYLES.get(name, {}))
    ax.set_xlabel("wall time since start, s (set-up included)")
    ax.set_ylabel("test accuracy of the global model, %")
    ax.set_title(f"{doc['workload']}\n{doc['machine']['cpus']} CPUs: {doc['machine']['cpu']}", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = out / "bench_accuracy_vs_time.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def cost_vs_members(doc: dict[str, Any], out: Path) -> Path:
    members = doc["members"]
    runs = {int(k): v for k, v in members["runs"].items() if "error" not in v}
    xs = sorted(runs)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    # Per member: a flat profile is a cost linear in the members (categories, so 10 and 1000 both show).
    bottom = [0.0] * len(xs)
    for part in PARTS:
        heights = [1e3 * max(0.0, runs[x]["added_by_part"][part]) / x for x in xs]
        left.bar([str(x) for x in xs], heights, bottom=bottom, label=part)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    left.plot(
        [str(x) for x in xs],
        [1e3 * runs[x]["added_seconds_per_round"] / x for x in xs],
        "k-o",
        label="added wall ms / member / round",
    )
    left.set_xlabel("members")
    left.set_ylabel("ms per member per round added by security")
    left.set_title("added time per member per round (secured - off), by part", fontsize=10)
    left.legend(fontsize=8)
    left.grid(True, axis="y", alpha=0.3)
    gas = [runs[x]["secured"]["gas_per_member_per_round"] / 1e3 for x in xs]
    txs = [runs[x]["secured"]["transactions_per_round"] for x in xs]
    right.plot(xs, gas, "o-", color="tab:red", label="gas per member per round (k)")
    right.axhline(100, color="tab:red", linestyle=":", linewidth=1, label="target 100k")
    right.set_xlabel("members")
    right.set_ylabel("k gas per member per round", color="tab:red")
    right.set_ylim(0, max(max(gas) * 1.2, 110))
    twin = right.twinx()
    twin.plot(xs, txs, "s--", color="tab:green", label="transactions per round")
    twin.set_ylabel("transactions per round", color="tab:green")
    right.set_title("gas and transactions per round", fontsize=10)
    lines = right.get_legend_handles_labels()
    lines2 = twin.get_legend_handles_labels()
    right.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=8, loc="center right")
    right.grid(True, alpha=0.3)
    fig.tight_layout()
    path = out / "bench_cost_vs_members.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def cost_vs_model_size(doc: dict[str, Any], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 5))
    models = doc.get("models")
    if models:
        runs = [r for r in models["runs"].values() if "error" not in r]
        mb = [r["model_bytes"] / 1e6 for r in runs]
        ax.plot(
            mb,
            [r["added_seconds_per_round"] for r in runs],
            "o-",
            color="tab:blue",
            label=f"engine: added s per round ({models['members']} members, secured - off)",
        )
        ax.plot(
            mb,
            [r["secured"]["round_wall_seconds"] for r in runs],
            "o:",
            color="tab:blue",
            alpha=0.6,
            label="engine: secured round wall s",
        )
    crypto = doc.get("crypto")
    if crypto:
        runs = list(crypto["runs"].values())
        mb = [r["payload_bytes"] / 1e6 for r in runs]
        ax.plot(
            mb,
            [r["added_per_update_s"] for r in runs],
            "s--",
            color="tab:purple",
            label="one update: seal + fsynced put + verified get + open",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("model size, MB of float32 (0.2M, 10M, 100M parameters)")
    ax.set_ylabel("seconds")
    ax.set_title("cost against model size (log-log; slope 1 = linear)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "bench_cost_vs_model_size.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--flower",
        default=f"{BENCH_DIR / 'results' / 'flower.json'}",
        help="comma-separated bench_flower.py JSON files; their systems are merged (missing files skipped)",
    )
    parser.add_argument("--scale", type=Path, default=BENCH_DIR / "results" / "scale.json")
    parser.add_argument("--out", type=Path, default=BENCH_DIR.parent / "docs")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    merged: dict[str, Any] | None = None
    for name in args.flower.split(","):
        path = Path(name)
        if not path.exists():
            continue
        part = json.loads(path.read_text())
        if merged is None:
            merged = part
        else:
            for key, value in part["systems"].items():  # the first file that has a system wins
                merged["systems"].setdefault(key, value)
    if merged is not None and merged.get("systems"):
        written.append(accuracy_vs_time(merged, args.out))
    scale = json.loads(args.scale.read_text()) if args.scale.exists() else {}
    if "members" in scale:
        written.append(cost_vs_members(scale, args.out))
    if "models" in scale or "crypto" in scale:
        written.append(cost_vs_model_size(scale, args.out))
    for path in written:
        print(path)
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
