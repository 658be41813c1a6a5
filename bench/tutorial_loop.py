"""Local training the way Flower's PyTorch quickstart writes it: a DataLoader and the textbook loop.

This is what a Flower user brings: Flower does not train, the user's ``ClientApp`` does. The loop
follows the ``flwr new`` PyTorch template (``task.py``'s ``train``): a shuffling ``DataLoader``,
``CrossEntropyLoss``, zero_grad / backward / step, the loss summed with ``loss.item()``; with the
workload's SGD lr 0.05 and batch 32 instead of the template's Adam, and a ``TensorDataset`` over the
member's arrays (the template's Hugging Face dataset and per-batch transforms would only be slower).
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from fedledger.learning import Dataset


def tutorial_train(model: torch.nn.Module, data: Dataset, *, seed: int, lr: float = 0.05) -> tuple[int, float]:
    """One local epoch; returns (records seen, mean training loss)."""
    loader = DataLoader(
        TensorDataset(torch.from_numpy(data.features), torch.from_numpy(data.labels)),
        batch_size=32,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    running_loss = 0.0
    for images, labels in loader:
        optimizer.zero_grad()
        loss = criterion(model(images), labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item() * len(labels)
    return len(data), running_loss / len(data)
