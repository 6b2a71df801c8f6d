"""Training-time augmentations a TrainingJob declares (`spec.augmentations`), one list item per step.

Each item names its `kind` and that kind's parameters, range-checked here when a manifest is read:

    augmentations:
      - {kind: flip, horizontal: true, p: 0.5}
      - {kind: rotate, degrees: 10}
      - {kind: colorJitter, brightness: 0.3, contrast: 0.3}

Pydantic validates the exact variant (a union discriminated by `kind`). A structural CRD schema
cannot hold a union of objects, so the CRD carries one object with every parameter of every kind
(without defaults, which the API server would otherwise apply to every kind) and the operator and
the local runner refuse a parameter that does not belong to the item's kind.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, WithJsonSchema, WrapValidator, field_validator, model_validator
from pydantic_core import InitErrorDetails

from kubeforge.api.common import ApiModel

_P = "Probability that this step applies to an image (0-1)."


def _range(value: list[float], low: float, high: float, what: str) -> list[float]:
    if value[0] > value[1]:
        raise ValueError(f"expected [min, max] with min <= max, got {value}")
    if value[0] < low or value[1] > high:
        raise ValueError(f"{what}: expected values in [{low}, {high}], got {value}")
    return value


class FlipAugmentation(ApiModel):
    """Mirror the image (and its boxes and masks)."""

    kind: Literal["flip"]
    horizontal: bool = Field(default=True, description="flip: mirror left-right.")
    vertical: bool = Field(default=False, description="flip: mirror top-bottom.")
    p: float = Field(default=0.5, ge=0, le=1, description=_P + " Each enabled direction is drawn on its own.")

    @model_validator(mode="after")
    def _a_direction(self) -> FlipAugmentation:
        if not (self.horizontal or self.vertical):
            raise ValueError("flip: set horizontal or vertical (or both) to true")
        return self


class RotateAugmentation(ApiModel):
    """Rotate by a random angle in [-degrees, degrees]; corners fill with black (masks with background 0)."""

    kind: Literal["rotate"]
    degrees: float = Field(default=15.0, gt=0, le=180, description="rotate: the largest angle either way (0-180].")
    p: float = Field(default=0.5, ge=0, le=1, description=_P)


class ScaleCropAugmentation(ApiModel):
    """Crop a random region (a share of the area, an aspect ratio) and resize it back to the input size."""

    kind: Literal["scaleCrop"]
    scale: list[float] = Field(
        default_factory=lambda: [0.5, 1.0], min_length=2, max_length=2,
        description="scaleCrop: [min, max] share of the image area the crop covers, in (0, 1].",
    )
    ratio: list[float] = Field(
        default_factory=lambda: [0.75, 4 / 3], min_length=2, max_length=2,
        description="scaleCrop: [min, max] aspect ratio (width / height) of the crop, in [0.1, 10].",
    )
    p: float = Field(default=0.5, ge=0, le=1, description=_P)

    @field_validator("scale")
    @classmethod
    def _scale(cls, value: list[float]) -> list[float]:
        if value[0] <= 0:
            raise ValueError(f"expected a share of the area above 0, got {value}")
        return _range(value, 0.0, 1.0, "scale")

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, value: list[float]) -> list[float]:
        return _range(value, 0.1, 10.0, "ratio")


class ColorJitterAugmentation(ApiModel):
    """Randomly change brightness, contrast, saturation and hue (pixels only; boxes and masks stay)."""

    kind: Literal["colorJitter"]
    brightness: float = Field(default=0.2, ge=0, le=1, description="colorJitter: brightness factor in [1-b, 1+b].")
    contrast: float = Field(default=0.2, ge=0, le=1, description="colorJitter: contrast factor in [1-c, 1+c].")
    saturation: float = Field(default=0.2, ge=0, le=1, description="colorJitter: saturation factor in [1-s, 1+s].")
    hue: float = Field(default=0.0, ge=0, le=0.5, description="colorJitter: hue shift in [-h, h] (0-0.5).")
    p: float = Field(default=0.5, ge=0, le=1, description=_P)


class BlurAugmentation(ApiModel):
    """Gaussian blur with a random sigma (pixels only)."""

    kind: Literal["blur"]
    kernel_size: int = Field(default=5, ge=3, le=31, description="blur: odd kernel side in pixels (3-31).")
    sigma: list[float] = Field(
        default_factory=lambda: [0.1, 2.0], min_length=2, max_length=2,
        description="blur: [min, max] standard deviation in pixels, in (0, 10].",
    )
    p: float = Field(default=0.5, ge=0, le=1, description=_P)

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"expected an odd number of pixels, got {value}")
        return value

    @field_validator("sigma")
    @classmethod
    def _sigma(cls, value: list[float]) -> list[float]:
        if value[0] <= 0:
            raise ValueError(f"expected sigma above 0, got {value}")
        return _range(value, 0.0, 10.0, "sigma")


class CutoutAugmentation(ApiModel):
    """Black out random squares (pixels only: boxes and masks keep what is underneath)."""

    kind: Literal["cutout"]
    holes: int = Field(default=1, ge=1, le=64, description="cutout: squares per image (1-64).")
    size: float = Field(
        default=0.25, gt=0, le=1, description="cutout: a square's side as a share of the image's shorter side."
    )
    p: float = Field(default=0.5, ge=0, le=1, description=_P)


VARIANTS: tuple[type[ApiModel], ...] = (
    FlipAugmentation, RotateAugmentation, ScaleCropAugmentation, ColorJitterAugmentation, BlurAugmentation,
    CutoutAugmentation,
)
KINDS: tuple[str, ...] = tuple(v.model_fields["kind"].annotation.__args__[0] for v in VARIANTS)  # type: ignore[union-attr]


def _merged_schema() -> dict[str, Any]:
    """One object with every kind's parameters: what a structural CRD schema can say about the union."""
    properties: dict[str, Any] = {"kind": {"type": "string", "enum": list(KINDS),
                                           "description": "The augmentation: " + ", ".join(KINDS) + "."}}
    for variant in VARIANTS:
        schema = variant.model_json_schema(by_alias=True)
        for name, prop in schema["properties"].items():
            if name == "kind" or name in properties:
                continue
            kept: dict[str, Any] = {"type": prop["type"]}
            if "items" in prop:
                kept["items"] = {"type": prop["items"]["type"]}
            kept["description"] = prop.get("description", "")
            properties[name] = kept
    properties["p"]["description"] = _P + " flip draws each enabled direction on its own."
    return {"type": "object", "description": "One augmentation step; `kind` says which, the other fields are "
            "its parameters.", "properties": properties, "required": ["kind"]}


def _locate_in_item(value: Any, handler: Any) -> Any:
    """Errors name `spec.augmentations[i].degrees`, not pydantic's `...[i].rotate.degrees`."""
    try:
        return handler(value)
    except ValidationError as exc:
        kind = value.get("kind") if isinstance(value, dict) else None
        details: list[InitErrorDetails] = []
        for err in exc.errors():
            loc = err["loc"][1:] if err["loc"] and err["loc"][0] == kind else err["loc"]
            detail: InitErrorDetails = {"type": err["type"], "loc": loc, "input": err["input"]}
            if "ctx" in err:
                detail["ctx"] = err["ctx"]
            details.append(detail)
        raise ValidationError.from_exception_data(exc.title, details) from None


Augmentation = Annotated[
    Union[VARIANTS],  # type: ignore[valid-type]  # noqa: UP007  (built from the one list of kinds)
    Field(discriminator="kind"),
    WrapValidator(_locate_in_item),
    WithJsonSchema(_merged_schema()),
]
