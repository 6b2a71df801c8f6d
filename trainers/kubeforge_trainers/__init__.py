"""Kubeforge's training runtime: built-in trainers and a small SDK for custom ones.

Laid out like torchvision's `references/`: `data` (datasets from a manifest), `split`,
`models` (builds the registry's models, `kubeforge.models.catalog`), `tasks` (what differs per
task: datasets, loss, evaluation, export outputs), `optim`, `engine` (one epoch of training),
`checkpoint`, `progress`, `export` (ONNX and its parity check), `sdk` (the plug-in interface)
and `builtin_trainer` (the torchvision, timm and smp trainers, written against the SDK).
"""

from kubeforge_trainers.sdk import TrainContext, Trainer, TrainResult, get_trainer, register_trainer

__all__ = ["TrainContext", "TrainResult", "Trainer", "get_trainer", "register_trainer"]
