"""The architecture: small enough to train on a CPU in seconds."""

from __future__ import annotations

import torch
from torch import nn

# ImageNet statistics; normalising inside the graph keeps the export's input plain RGB in [0, 1].
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
WIDTHS = {"tinycnn": 8, "tinycnn-wide": 16}


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int, width: int = 8) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
        layers: list[nn.Module] = []
        channels = 3
        for i in range(4):
            out = width * 2**i
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            if i < 3:
                layers.append(nn.MaxPool2d(2))
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.features((images - self.mean) / self.std)
        return self.head(x.mean(dim=(2, 3)))


def build(name: str, num_classes: int) -> TinyCNN:
    return TinyCNN(num_classes, WIDTHS[name])
