"""DatasetVersion: an immutable, content-addressed snapshot of an image dataset."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field, model_validator

from kubeforge import GROUP_VERSION
from kubeforge.api.common import (
    DNS_LABEL_PATTERN,
    NAME_PATTERN,
    ApiModel,
    ArtifactPolicy,
    PrinterColumn,
    ResourceBase,
    StatusBase,
)
from kubeforge.api.dataset_operations import DatasetChanges, DatasetOperation, Lineage, ParentVersion

SourceFormat = Literal["coco", "imagefolder", "voc", "yolo", "supervisely", "cvat", "labelme", "labelstudio", "masks"]
# kubeforge.datasets.formats.registry.PARSERS names the same formats (tests/test_datasets_formats.py checks).

# A parent is a DatasetVersion by name, or the version a PredictionJob produced as `PredictionJob/<name>`
# (a resource name holds no slash, so the two cannot be confused).
PREDICTION_JOB_PARENT = "PredictionJob/"
PARENT_PATTERN = rf"^({re.escape(PREDICTION_JOB_PARENT)})?{NAME_PATTERN[1:]}"


def _check_parent(value: str) -> str:
    if not re.match(PARENT_PATTERN, value):
        raise ValueError(f"{value!r} is not a DatasetVersion name or {PREDICTION_JOB_PARENT}<name> (the version a "
                         "PredictionJob produced)")
    return value


# The CRD carries the pattern (kubectl refuses the same); the API's own check says what was expected.
ParentName = Annotated[str, AfterValidator(_check_parent), Field(json_schema_extra={"pattern": PARENT_PATTERN})]


def parent_kind_and_name(parent: str) -> tuple[str, str]:
    """("DatasetVersion", name) or ("PredictionJob", name) for an entry of spec.parents."""
    if parent.startswith(PREDICTION_JOB_PARENT):
        return "PredictionJob", parent.removeprefix(PREDICTION_JOB_PARENT)
    return "DatasetVersion", parent


class DatasetSource(ApiModel):
    """Where raw data is read from."""

    uri: str = Field(
        min_length=1,
        description="A local path (absolute, or relative to the manifest file) or an S3 prefix "
        "(s3://bucket/prefix/).",
    )
    format: SourceFormat = Field(description="Layout of the source.")
    annotations: str | None = Field(
        default=None,
        description="COCO: the instances JSON, relative to uri (default: the only *.json at the top).",
    )
    images: str | None = Field(
        default=None, description="COCO: the image folder, relative to uri (default: 'images' or uri itself)."
    )


class DatasetVersionSpec(ApiModel):
    """Import raw data (source), or derive from other versions (parents with operations)."""

    dataset: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="The dataset this is a version of.")
    source: DatasetSource | None = Field(
        default=None, description="Import raw data. Exactly one of source, or parents with operations."
    )
    parent: str | None = Field(
        default=None,
        description="With source: the previous DatasetVersion (diffed against; same content is Unchanged).",
    )
    parents: list[ParentName] | None = Field(
        default=None, min_length=1,
        description="Derive from these DatasetVersions (the first is the parent diffed against) by operations; "
        "`PredictionJob/<name>` names the version a PredictionJob produced (its predictions).",
    )
    operations: list[DatasetOperation] | None = Field(
        default=None, min_length=1, description="Applied in order to the parents (with parents only)."
    )
    on_invalid_image: Literal["Fail", "Skip"] = Field(
        default="Fail",
        description="Fail: a corrupt or unreadable image fails the version. Skip: it is left out and "
        "recorded in status.skipped.",
    )
    artifact_policy: ArtifactPolicy = ArtifactPolicy.RETAIN

    @model_validator(mode="after")
    def _source_or_parents(self) -> DatasetVersionSpec:
        if self.source is not None and self.parents:
            raise ValueError("give either source (import raw data) or parents with operations (derive), not both")
        if self.source is None:
            if not self.parents or not self.operations:
                raise ValueError("give source (import raw data), or parents and operations (derive from versions)")
            if self.parent is not None:
                raise ValueError("parent goes with source; a derived version names its parents in parents")
            if len(set(self.parents)) != len(self.parents):
                raise ValueError(f"parents: a version is named twice in {self.parents}")
            kinds = [op.kind for op in self.operations]
            if len(self.parents) > 1 and kinds[0] != "merge":
                raise ValueError(f"parents names {len(self.parents)} versions; the first operation must be merge")
            if "merge" in kinds[1:]:
                raise ValueError("merge must be the first operation (every parent enters it untransformed)")
        elif self.operations:
            raise ValueError("operations need parents; an imported version (source) takes none")
        return self

    @property
    def parent_names(self) -> list[str]:
        """Every parent: spec.parent for an import, spec.parents for a derived version."""
        return list(self.parents or ([self.parent] if self.parent else []))


class ImageSizeStats(ApiModel):
    min_width: int
    max_width: int
    min_height: int
    max_height: int
    mean_width: float
    mean_height: float


class DatasetStats(ApiModel):
    """Counts of the version's images, annotations and classes."""

    images: int
    annotations: int
    classes: int
    objects_per_class: dict[str, int] = Field(default_factory=dict)
    images_per_class: dict[str, int] = Field(default_factory=dict)
    image_sizes: ImageSizeStats | None = None
    total_bytes: int = 0


class SkippedFile(ApiModel):
    file: str
    reason: str


class DatasetVersionStatus(StatusBase):
    """The version's content digest, classes, stats, lineage and changes from its parent."""

    digest: str | None = Field(default=None, description="sha256 of the version manifest.")
    manifest_uri: str | None = None
    task: str | None = None
    classes: list[str] = Field(default_factory=list)
    stats: DatasetStats | None = None
    skipped: list[SkippedFile] = Field(default_factory=list)
    unchanged: bool | None = Field(
        default=None, description="True: same content as the parent; digest points at the parent's version."
    )
    parents: list[ParentVersion] = Field(default_factory=list, description="The parents as resolved.")
    lineage: Lineage | None = Field(default=None, description="Derived versions: parents and operations.")
    lineage_uri: str | None = None
    changes: DatasetChanges | None = Field(default=None, description="Against the (first) parent.")


class DatasetVersion(ResourceBase):
    plural: ClassVar[str] = "datasetversions"
    short_names: ClassVar[list[str]] = ["dsv"]
    # Content-addressed: a different source is a different version, never an edit.
    immutable_spec: ClassVar[bool] = True
    printer_columns: ClassVar[list[PrinterColumn]] = [
        PrinterColumn(name="Dataset", type="string", json_path=".spec.dataset"),
        PrinterColumn(name="Format", type="string", json_path=".spec.source.format"),
        PrinterColumn(name="Images", type="integer", json_path=".status.stats.images"),
        PrinterColumn(name="Classes", type="integer", json_path=".status.stats.classes"),
        PrinterColumn(name="Digest", type="string", json_path=".status.digest", priority=1),
        PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
        PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
    ]

    api_version: Literal["kubeforge.io/v1alpha1"] = GROUP_VERSION
    kind: Literal["DatasetVersion"] = "DatasetVersion"
    spec: DatasetVersionSpec
    status: DatasetVersionStatus | None = None
