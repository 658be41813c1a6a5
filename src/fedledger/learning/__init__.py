"""Local learning with PyTorch: models, datasets, partitions, training and dataset fingerprints.

Knows nothing of chains, keys or stores; the protocol layer moves weights in and out as numpy arrays.
"""

from fedledger.learning.datasets import DATASET_NAMES, FASHION_MNIST_DIR, Dataset, load_dataset, read_idx
from fedledger.learning.fingerprint import DatasetFingerprint, dataset_fingerprint, merkle_root
from fedledger.learning.models import MLP, SmallCNN, build_model, load_numpy_state, state_to_numpy
from fedledger.learning.partition import partition_dirichlet, partition_iid
from fedledger.learning.trainer import EvalResult, TrainConfig, TrainResult, evaluate, train_local

__all__ = [
    "DATASET_NAMES",
    "FASHION_MNIST_DIR",
    "MLP",
    "Dataset",
    "DatasetFingerprint",
    "EvalResult",
    "SmallCNN",
    "TrainConfig",
    "TrainResult",
    "build_model",
    "dataset_fingerprint",
    "evaluate",
    "load_dataset",
    "load_numpy_state",
    "merkle_root",
    "partition_dirichlet",
    "partition_iid",
    "read_idx",
    "state_to_numpy",
    "train_local",
]
