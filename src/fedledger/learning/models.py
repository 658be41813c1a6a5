"""Built-in models, user models by import path, and the model <-> numpy state bridge.

The numpy state is what the codec serialises: float32, C-contiguous, sorted by name. Every entry of
``state_dict()`` (parameters and buffers) is included, so two members loading the same state get the
same model.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fedledger.errors import UsageError

__all__ = ["MLP", "SmallCNN", "build_model", "load_numpy_state", "state_to_numpy"]


class MLP(nn.Module):
    """Fully connected ReLU network for tabular features ([N, in_features] or anything flattenable)."""

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int) -> None:
        super().__init__()
        if in_features < 1 or num_classes < 2 or any(width < 1 for width in hidden):
            raise UsageError(
                f"mlp: in_features={in_features}, hidden={list(hidden)} and num_classes={num_classes} "
                "must be positive (num_classes at least 2)"
            )
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]


class SmallCNN(nn.Module):
    """Two 3x3 conv + max-pool stages and a small head for 1x28x28 images (~105k parameters).

    Each stage pools before its ReLU: the same function as ReLU then pool (both are monotone), with a
    quarter of the ReLU work; with channels-last tensors (``train_local``) a training step on CPU
    takes 45 % of the conv, ReLU, pool order's time in NCHW.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, kernel_size=3, padding=1),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.MaxPool2d(2),
            nn.ReLU(),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 7 * 7, 64),
            nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))  # type: ignore[no-any-return]


def _import_class(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise UsageError(f"model {path!r}: expected 'mlp', 'cnn' or a 'package.module:Class' path")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may fail in any way while importing
        raise UsageError(f"model {path!r}: cannot import module {module_name!r} ({exc})") from None
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise UsageError(f"model {path!r}: module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    return target


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate ``"mlp"``, ``"cnn"`` or a user class given as ``"package.module:Class"``."""
    if name == "mlp":
        factory: Any = MLP
    elif name == "cnn":
        factory = SmallCNN
    else:
        factory = _import_class(name)
    if not callable(factory):
        raise UsageError(f"model {name!r}: {factory!r} is not a class or factory")
    try:
        model = factory(**kwargs)
    except UsageError:
        raise
    except TypeError as exc:
        raise UsageError(f"model {name!r}: bad parameters {sorted(kwargs)} ({exc})") from None
    if not isinstance(model, nn.Module):
        raise UsageError(f"model {name!r}: built a {type(model).__name__}, not a torch.nn.Module")
    return model


def state_to_numpy(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's full state as float32 C-contiguous arrays sorted by name (copies, safe to keep)."""
    state = model.state_dict()
    result: dict[str, np.ndarray] = {}
    for name in sorted(state):
        tensor = state[name].detach().to(device="cpu", dtype=torch.float32)
        result[name] = np.array(tensor.numpy(), dtype=np.float32, order="C", copy=True)
    return result


def load_numpy_state(model: nn.Module, tensors: Mapping[str, np.ndarray]) -> None:
    """Load arrays into the model in place; names and shapes must match exactly (``UsageError`` if not).

    Values are cast to each entry's own dtype and device, so float32 arrays fill integer buffers too.
    Read-only arrays (as the codec returns them) are fine.
    """
    state = model.state_dict()
    missing = sorted(set(state) - set(tensors))
    extra = sorted(set(tensors) - set(state))
    if missing or extra:
        raise UsageError(
            f"model state mismatch: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}"
        )
    for name, target in state.items():
        array = np.asarray(tensors[name])
        if tuple(array.shape) != tuple(target.shape):
            raise UsageError(
                f"model state mismatch: {name!r} has shape {tuple(array.shape)}, "
                f"model expects {tuple(target.shape)}"
            )
    with torch.no_grad():
        for name, target in state.items():
            source = torch.from_numpy(np.array(tensors[name], copy=True))
            if not target.is_floating_point():
                source = torch.round(source.to(torch.float64))
            target.copy_(source.to(dtype=target.dtype))
