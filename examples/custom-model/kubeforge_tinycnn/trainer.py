"""The train function Kubeforge calls. It knows nothing of Kubernetes or the store.

Kubeforge hands it the prepared data (ImageFolder, as models.yaml asks: `data.train/<class>/*.png`),
the hyperparameters (hyperparameters.yaml with the TrainingJob's spec.model.parameters merged over
it), a logger, the model the TrainingJob chose, and a folder to write into. It returns its files
and metrics; Kubeforge checks them, writes model_meta.json and uploads everything.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from kubeforge_tinycnn.net import build


def load_split(folder: Path, classes: list[str], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageFolder -> images float32 [N, 3, size, size] in [0, 1] (stretched), labels = class indices."""
    images, labels = [], []
    for index, name in enumerate(classes):
        for path in sorted((folder / name).glob("*")):
            img = Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR)
            images.append(np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / np.float32(255))
            labels.append(index)
    return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def train(data: Any, hyperparameters: dict[str, Any], log: Any, model: Any, output_dir: Path) -> dict[str, Any]:
    hp = hyperparameters
    torch.manual_seed(int(hp["seed"]))
    x_train, y_train = load_split(data.train, data.classes, model.image_size)
    x_val, y_val = load_split(data.val, data.classes, model.image_size)
    net = build(model.name, len(data.classes))
    if model.init_checkpoint is not None:  # fine-tuning another run (spec.model.fromTrainingJob)
        net.load_state_dict(torch.load(model.init_checkpoint, map_location="cpu", weights_only=True)["model"])
    optimizer = torch.optim.AdamW(net.parameters(), lr=float(hp["lr"]), weight_decay=float(hp["weightDecay"]))
    loss_fn = nn.CrossEntropyLoss()
    epochs, batch = int(hp["epochs"]), int(hp["batchSize"])
    log.epochs = epochs
    best = {"name": "val_accuracy", "value": -1.0, "epoch": 0}
    checkpoint = output_dir / "best.pt"
    for epoch in range(1, epochs + 1):
        net.train()
        order = torch.randperm(len(x_train))
        losses = []
        for start in log.progress(range(0, len(order), batch), (len(order) + batch - 1) // batch, f"epoch {epoch}"):
            idx = order[start:start + batch]
            loss = loss_fn(net(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        metrics = {"train_loss": sum(losses) / len(losses), "val_accuracy": accuracy(net, x_val, y_val)}
        log.metrics(epoch, metrics)
        if metrics["val_accuracy"] > best["value"]:
            best = {"name": "val_accuracy", "value": metrics["val_accuracy"], "epoch": epoch}
            # Tensors only: Kubeforge (and fine-tuning) read checkpoints with weights_only=True.
            torch.save({"model": net.state_dict(), "classes": data.classes, "epoch": epoch}, checkpoint)

    # Export the best weights: float32 RGB [B, 3, S, S] in [0, 1] in, `logits` [B, classes] out.
    net.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    net.eval()
    onnx_path = output_dir / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the trace-based exporter's deprecation notice
        torch.onnx.export(net, (torch.rand(1, 3, model.image_size, model.image_size),), str(onnx_path),
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                          dynamo=False)
    return {"onnx": onnx_path, "checkpoint": checkpoint, "metrics": metrics, "bestMetric": best}
