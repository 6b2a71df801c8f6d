"""Operations that derive a DatasetVersion from parent versions, and the lineage/diff in its status.

An operation is written the Kubernetes way for unions (like a Pod's volume sources): one list
item holds exactly one key, and the key names the operation:

    operations:
      - filter: {classes: [circle], minWidth: 32}
      - mergeClasses: {from: [square, triangle], to: polygon}
      - assignSplit: {method: random, seed: 7, train: 80, val: 20}

A `type:` discriminator with variant-specific fields cannot be expressed as one structural CRD
schema (a union of different objects); a one-key-per-item object can, and reads as well.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from kubeforge.api.common import ApiModel

SPLIT_TAGS = ("train", "val", "test")


class FilterOp(ApiModel):
    """Keep the images that match every criterion given (an unset criterion matches all); minScore keeps
    objects, not images."""

    classes: list[str] | None = Field(
        default=None, min_length=1,
        description="Keep images with at least one object (or the label) of any of these classes.",
    )
    tags: list[str] | None = Field(default=None, min_length=1, description="Keep images with any of these tags.")
    min_width: int | None = Field(default=None, ge=1)
    max_width: int | None = Field(default=None, ge=1)
    min_height: int | None = Field(default=None, ge=1)
    max_height: int | None = Field(default=None, ge=1)
    min_annotations: int | None = Field(default=None, ge=0, description="Objects per image, at least.")
    max_annotations: int | None = Field(default=None, ge=0, description="Objects per image, at most.")
    min_score: float | None = Field(
        default=None, ge=0, le=1,
        description="Keep the objects (a classification: the label) whose confidence tag `score=...` is at least "
        "this, as a PredictionJob records it; those without a score tag are kept. Applied before the image "
        "criteria, so minAnnotations counts the objects kept.")


class MergeOp(ApiModel):
    """Union the images of every parent into the first; the same file name must hold the same content."""

    on_conflict: Literal["Fail", "KeepFirst"] = Field(
        default="Fail",
        description="Fail: the same file_name with different content (image or annotations) in two parents "
        "is an error naming both. KeepFirst: the earlier parent's image wins.",
    )


class RemapClassesOp(ApiModel):
    """Rename classes; renaming two classes to one name merges them."""

    mapping: dict[str, str] = Field(min_length=1, description="old class name -> new class name.")


class MergeClassesOp(ApiModel):
    """Merge several classes into one (an existing class or a new name)."""

    from_: list[str] = Field(alias="from", min_length=1)
    to: str = Field(min_length=1)


class DropClassesOp(ApiModel):
    """Remove classes: their objects (detection) or their images (classification)."""

    classes: list[str] = Field(min_length=1)
    drop_empty_images: bool = Field(
        default=False, description="Detection: also drop images left with no objects."
    )


class ConvertGeometryOp(ApiModel):
    """Convert polygon segmentations. box: drop the polygon, the box becomes its extent. mask: COCO RLE."""

    from_: Literal["polygon"] = Field(default="polygon", alias="from")
    to: Literal["box", "mask"]


class AssignSplitOp(ApiModel):
    """Tag every image train/val/test (replacing earlier split tags), at random or from existing tags."""

    method: Literal["random", "tags"] = "random"
    seed: int = 0
    train: float = Field(default=80.0, ge=0, le=100, description="random: percent of images.")
    val: float = Field(default=20.0, ge=0, le=100, description="random: percent of images.")
    test: float = Field(default=0.0, ge=0, le=100, description="random: percent of images.")
    from_tags: dict[str, list[str]] | None = Field(
        default=None,
        description="tags: split (train, val or test) -> the existing tags that put an image there. "
        "An image matching none gets no split tag.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> AssignSplitOp:
        if self.method == "random":
            total = self.train + self.val + self.test
            if abs(total - 100.0) > 1e-6:
                raise ValueError(f"assignSplit: train + val + test must be 100, got {total:g}")
        else:
            if not self.from_tags:
                raise ValueError("assignSplit: method tags needs fromTags (split -> existing tags)")
            unknown = sorted(set(self.from_tags) - set(SPLIT_TAGS))
            if unknown:
                raise ValueError(f"assignSplit.fromTags: unknown split(s) {unknown}; expected train, val or test")
        return self


class SampleOp(ApiModel):
    """Keep N images chosen at random (seeded); all of them when there are N or fewer."""

    n: int = Field(ge=1)
    seed: int = 0


OPERATION_KEYS = (
    "filter", "merge", "remapClasses", "mergeClasses", "dropClasses", "convertGeometry", "assignSplit", "sample",
)


class DatasetOperation(ApiModel):
    """One operation: exactly one of its fields is set."""

    filter: FilterOp | None = None
    merge: MergeOp | None = None
    remap_classes: RemapClassesOp | None = None
    merge_classes: MergeClassesOp | None = None
    drop_classes: DropClassesOp | None = None
    convert_geometry: ConvertGeometryOp | None = None
    assign_split: AssignSplitOp | None = None
    sample: SampleOp | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> DatasetOperation:
        given = [name for name, info in type(self).model_fields.items() if getattr(self, name) is not None]
        if len(given) != 1:
            names = ", ".join(OPERATION_KEYS)
            shown = ", ".join(type(self).model_fields[n].alias or n for n in given) or "none"
            raise ValueError(f"an operation sets exactly one of {names}; this one sets {shown}")
        return self

    @property
    def kind(self) -> str:
        """The operation's key as written (camelCase), e.g. `remapClasses`."""
        for name, info in type(self).model_fields.items():
            if getattr(self, name) is not None:
                return info.alias or name
        raise AssertionError("validated to have one operation")

    @property
    def op(self) -> ApiModel:
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is not None:
                return value  # type: ignore[no-any-return]
        raise AssertionError("validated to have one operation")


class ParentVersion(ApiModel):
    """A parent as it was resolved when this version was built."""

    name: str | None = Field(default=None, description="The parent DatasetVersion, or PredictionJob/<name> "
                             "(absent when replayed by digest).")
    dataset: str
    digest: str


class Lineage(ApiModel):
    """How a derived version was made: replaying the operations on the parents gives its digest."""

    parents: list[ParentVersion] = Field(default_factory=list)
    operations: list[DatasetOperation] = Field(default_factory=list)


class DatasetChanges(ApiModel):
    """A version against its (first) parent; counts only (the full lists: `kubeforge datasets diff`)."""

    against: str = Field(description="The parent's digest.")
    images_added: int = 0
    images_removed: int = 0
    images_modified: int = Field(default=0, description="Same file name, different image bytes.")
    annotations_added: int = 0
    annotations_removed: int = 0
    annotations_changed: int = Field(
        default=0, description="Objects edited in place: same image, same class, other geometry."
    )
    objects_per_class: dict[str, int] = Field(
        default_factory=dict, description="Per-class object count deltas (non-zero only)."
    )
