"""The example configurations: the one ``fedledger init`` writes and the demo consortium."""

from __future__ import annotations

import tomllib

from fedledger.sim.config import RunConfig, parse_config

EXAMPLE_CONFIG = """\
# fedledger run configuration.  Run it with:  fedledger run fedledger.toml --out runs/my-run
# Every key is checked: a typo is an error, never a silent default.

# train_workers = 0         # simulation: trainers training at once, one torch thread each (0: one per core; 1: in turn)

[task]
name = "breast-cancer-consortium"
rounds = 10                 # federated rounds; the final model's hash ends up on chain
seed = 7                    # seeds the initial model, the data split and every member's shuffling

[data]
dataset = "breast_cancer"   # breast_cancer | digits | fashion_mnist | csv
# path = "/usr/share/datasets/fashion-mnist"   # IDX directory for fashion_mnist, a file for csv
# label_column = "label"    # csv only
test_fraction = 0.25        # held-out split the validators evaluate on (fashion_mnist uses its own test set)
partition = "dirichlet"     # iid | dirichlet: how the training set is split among the trainers
alpha = 1.0                 # Dirichlet concentration: smaller is more skewed

[model]
name = "mlp"                # mlp | cnn | "package.module:Class"
kwargs = { in_features = 30, hidden = [32], num_classes = 2 }

[training]                  # local training, identical for every trainer
epochs = 2
batch_size = 16
lr = 0.05
optimizer = "sgd"           # sgd | adam
momentum = 0.9
fedprox_mu = 0.0            # > 0 adds FedProx's proximal term

[aggregation]
rule = "fedavg"             # fedavg | median | trimmed_mean | multi_krum
trim_ratio = 0.1            # trimmed_mean: fraction cut from each end per coordinate
byzantine = 1               # multi_krum: number of attackers tolerated
max_update_norm = 100.0     # updates with a larger L2 norm are excluded, and the reason recorded

[protocol]
committee_size = 3          # aggregators per round (rotating among members with the aggregator role)
quorum = 2                  # equal proposals needed to finalise a round
min_updates = 3             # after the deadline, a round aggregates with at least this many updates
round_duration = 600        # seconds a round accepts updates (chain time)
admin_threshold = 2         # admins that must approve membership changes and new tasks

[chain]
backend = "embedded"        # py-evm chain persisted in RUN_DIR/chain
chain_id = 1337

[security]
enabled = true              # false: same engine with chain, crypto and store switched off (benchmarks)

[[members]]
name = "hospital-a"
roles = ["trainer", "aggregator", "validator"]
admin = true

[[members]]
name = "hospital-b"
roles = ["trainer", "aggregator"]
admin = true

[[members]]
name = "hospital-c"
roles = ["trainer", "aggregator"]
admin = true

[[members]]
name = "hospital-d"
roles = ["trainer", "validator"]
# drop_out_rounds = [3]     # simulation only: this member is offline in round 3
"""


def demo_config(*, rounds: int = 10, members: int = 4) -> RunConfig:
    """The demo consortium: hospitals on breast-cancer data with a Dirichlet split."""
    raw = tomllib.loads(EXAMPLE_CONFIG)
    raw["task"]["rounds"] = rounds
    if members != 4:
        template = raw["members"]
        generated = []
        for index in range(members):
            base = dict(template[min(index, len(template) - 1)])
            base["name"] = f"hospital-{_letter(index)}"
            base["admin"] = index < 3
            if index < 3:
                base["roles"] = (
                    ["trainer", "aggregator", "validator"] if index == 0 else ["trainer", "aggregator"]
                )
            else:
                base["roles"] = ["trainer"]
            generated.append(base)
        raw["members"] = generated
        trainers = members
        aggregators = min(members, 3)
        raw["protocol"]["committee_size"] = min(3, aggregators)
        raw["protocol"]["quorum"] = min(2, raw["protocol"]["committee_size"])
        raw["protocol"]["min_updates"] = max(1, (2 * trainers + 2) // 3)
        raw["protocol"]["admin_threshold"] = min(2, members)
    return parse_config(raw, "demo config")


def _letter(index: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return letters[index] if index < 26 else f"{letters[index // 26 - 1]}{letters[index % 26]}"
