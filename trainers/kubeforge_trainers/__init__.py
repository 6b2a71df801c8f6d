"""Kubeforge's training runtime: built-in torchvision trainers and a small SDK for custom ones.

Laid out like torchvision's `references/`: `data` (datasets from a manifest), `split`,
`models` (the built-in registry), `optim`, `engine` (one epoch of training, evaluation),
`checkpoint`, `progress`, `export` (ONNX and its parity check), `sdk` (the plug-in
interface) and `torchvision_trainer` (the built-in trainers, written against the SDK).
"""

from kubeforge_trainers.sdk import TrainContext, Trainer, TrainResult, get_trainer, register_trainer

__all__ = ["TrainContext", "TrainResult", "Trainer", "get_trainer", "register_trainer"]
