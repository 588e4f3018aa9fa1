"""The small torch models the demo and ``examples/`` train: a few seconds each on a CPU."""

from __future__ import annotations

import torch

__all__ = ["TabularMLP", "TinyCNN", "TinyLM"]


class TabularMLP(torch.nn.Sequential):
    """``features -> hidden -> 1``: a two-layer regression MLP (ReLU between).

    Examples
    --------
    >>> TabularMLP(8)(torch.zeros(4, 8)).shape
    torch.Size([4, 1])
    """

    def __init__(self, features: int, hidden: int = 16) -> None:
        super().__init__(
            torch.nn.Linear(features, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 1)
        )


class TinyCNN(torch.nn.Sequential):
    """Two stride-2 convolutions, global average pooling, a linear head: logits per class.

    Takes float ``(N, 3, H, W)`` images of any size (the demo feeds 48x48 crops).

    Examples
    --------
    >>> TinyCNN(3)(torch.zeros(2, 3, 48, 48)).shape
    torch.Size([2, 3])
    """

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__(
            torch.nn.Conv2d(3, width, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(2 * width, num_classes),
        )


class TinyLM(torch.nn.Module):
    """Embedding -> one GRU layer -> logits: enough to see the loss fall in a few seconds.

    Examples
    --------
    >>> TinyLM(100)(torch.zeros(2, 16, dtype=torch.int64)).shape
    torch.Size([2, 16, 100])
    """

    def __init__(self, vocab: int, dim: int = 48) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, dim)
        self.rnn = torch.nn.GRU(dim, dim, batch_first=True)
        self.head = torch.nn.Linear(dim, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.emb(ids))
        return self.head(h)
