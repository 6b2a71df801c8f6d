"""model_meta.json: the contract between training, evaluation and serving.

The ONNX export always takes float32 RGB in [0, 1], NCHW, resized (stretched) to
`input.height` x `input.width`; normalisation, if any, is inside the graph, so every
consumer preprocesses the same way (`kubeforge.models.preprocess`).

Outputs:
- classification: `logits` float32 [B, C] (C = len(classes)).
- object-detection: one image per call (input batch fixed to 1), `boxes` float32 [N, 4]
  xyxy in input pixels, `scores` float32 [N], `labels` int64 [N], 0-based indices into
  `classes`. N varies per image.
- instance-segmentation: as object-detection, plus `masks` uint8 [N, H, W] (H, W = the input
  size): each detection's mask pasted into the image, 1 where the mask head's probability is
  above MASK_THRESHOLD (0.5, what torchvision and COCO evaluation use). Thresholded in the graph,
  not float probabilities [N, 1, H, W]: every consumer (benchmark, predict) thresholds anyway, and
  a served response is 4x smaller (100 float masks at 512 px would be 105 MB per image).
  Scale masks to the original image like boxes: nearest-neighbour resize to its width x height.
- semantic-segmentation: `logits` float32 [B, C, H, W] and `mask` uint8 [B, H, W] (the argmax
  of the logits), at the input size; C = len(classes) and `classes[0]` is `__bg__`, the pixels
  no object covers. Dynamic batch. Consumers resize `mask` nearest-neighbour to the image
  (`preprocess.mask_to_image`); see docs/segmentation.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kubeforge.models.catalog import Task

# Mask probability above which a pixel belongs to the instance (export and evaluation alike).
MASK_THRESHOLD = 0.5


class TensorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    dtype: Literal["float32", "int64", "int32", "uint8"]
    # -1 marks a variable dimension (batch or detection count).
    shape: list[int]


class InputSpec(TensorSpec):
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    layout: Literal["NCHW"] = "NCHW"
    color: Literal["RGB"] = "RGB"
    scale: float = Field(default=1 / 255, description="Pixel values are multiplied by this before the graph.")
    resize: Literal["stretch"] = "stretch"
    dynamic_batch: bool = Field(description="True when the batch dimension is -1.")


class ModelMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: Task
    framework: str
    architecture: str
    classes: list[str] = Field(min_length=1, description="In output order.")
    input: InputSpec
    outputs: list[TensorSpec]
    normalization: dict[str, list[float]] = Field(
        default_factory=dict, description="mean/std applied inside the graph (informational)."
    )
    onnx_opset: int | None = None

    def output(self, name: str) -> TensorSpec:
        for out in self.outputs:
            if out.name == name:
                return out
        raise KeyError(f"model has no output {name!r}; outputs are {[o.name for o in self.outputs]}")
