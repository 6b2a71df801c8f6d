"""What docs/cluster.md tells someone installing Kubeforge to run works as written.

- The quickstart's cluster variant (examples/quickstart/cluster/) is the local quickstart with the
  source read from the store, and nothing else different.
- `kubeforge store upload` puts the data where that DatasetVersion reads it (real S3: SeaweedFS), and
  importing from there gives the same version as importing the local folder.
- The doc's commands use only tools it lists, build and load the images the chart deploys, and apply
  manifests a cluster can run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kubeforge.cli.main import app
from kubeforge.datasets.synth import generate_shapes_coco
from kubeforge.local.manifests import load_manifests

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"
CLUSTER = QUICKSTART / "cluster"
DOC = REPO / "docs" / "cluster.md"


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_the_cluster_variant_is_the_quickstart_reading_from_the_store() -> None:
    local = {p.name: _docs(p) for p in sorted(QUICKSTART.glob("*.yaml"))}
    cluster = {p.name: _docs(p) for p in sorted(CLUSTER.glob("*.yaml"))}
    assert set(cluster) == set(local)
    (dataset,) = cluster["01-dataset.yaml"]
    uri = dataset["spec"]["source"]["uri"]
    assert uri.startswith("s3://"), "a step pod reads the source from the store"
    (original,) = local["01-dataset.yaml"]
    original["spec"]["source"]["uri"] = uri
    assert dataset == original, "the cluster DatasetVersion differs from the local one beyond its source"
    for name in ("02-train.yaml", "03-serve.yaml"):
        assert cluster[name] == local[name], name
    # The same models validate it (the local runner would refuse what the operator refuses).
    loaded = load_manifests([CLUSTER])
    assert [r.resource.kind for r in loaded] == ["DatasetVersion", "TrainingJob", "InferenceService"]
    # The doc uploads to exactly that prefix and applies exactly that folder.
    doc = DOC.read_text()
    assert f"kubeforge store upload examples/quickstart/data/shapes {uri}" in doc
    assert "kubectl -n kubeforge apply -f examples/quickstart/cluster/" in doc


def _shell_lines(markdown: str) -> list[str]:
    """Lines of the top-level fenced blocks without a language (the doc's shell commands)."""
    out, fence = [], None
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fence = None if fence is not None else line
            continue
        if fence == "```" and line.strip():
            out.append(line)
    return out


def test_the_doc_lists_every_tool_it_uses_and_builds_what_the_chart_deploys() -> None:
    doc = DOC.read_text()
    needs = doc.split("You need", 1)[1].split("\n\n", 1)[0]
    commands = {line.split()[0] for line in _shell_lines(doc) if not line.startswith((" ", "#", "-"))}
    commands -= {"export", "kubeforge", "source", "cd", "curl"}  # shell, ours (installed by the step it is in)
    for tool in sorted(commands):
        assert f"`{tool}`" in needs, f"docs/cluster.md runs `{tool}` but does not list it under 'You need'"
    assert "mc " not in doc.replace("mcImage", ""), "upload with kubeforge, not the MinIO client"
    chart = yaml.safe_load((REPO / "helm/kubeforge/Chart.yaml").read_text())
    values = yaml.safe_load((REPO / "helm/kubeforge/values.yaml").read_text())
    for image in (values["operator"]["image"], values["images"]["trainer"]):
        ref = f"{image['repository']}:{image['tag'] or chart['appVersion']}"
        assert f"-t {ref} ." in doc, f"docs/cluster.md does not build {ref}"
        assert ref in doc.split("kind load docker-image", 1)[1].split("\n", 1)[0], f"{ref} is not loaded into kind"


def test_the_readme_short_path_builds_loads_uploads_and_applies_the_cluster_variant() -> None:
    readme = (REPO / "README.md").read_text()
    short = readme.split("## On Kubernetes", 1)[1].split("```", 2)[1]
    steps = [line.split("#")[0].strip() for line in short.splitlines() if line.strip()]
    order = ["kind create cluster", "docker build", "kind load docker-image", "helm install",
             "kubeforge store upload", "kubectl -n kubeforge apply -f examples/quickstart/cluster/"]
    found = [next((i for i, s in enumerate(steps) if s.startswith(step)), -1) for step in order]
    assert -1 not in found and found == sorted(found), f"README's cluster path misses or misorders a step: {steps}"


def test_store_upload_to_a_directory_keeps_relative_paths_and_skips_hidden_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "images" / "a.png").write_bytes(b"png")
    (src / "annotations.json").write_text("{}")
    (src / ".DS_Store").write_text("x")
    result = CliRunner().invoke(app, ["store", "upload", str(src), str(tmp_path / "dest")])
    assert result.exit_code == 0, result.output
    assert "uploaded 2 files" in result.output
    assert sorted(p.relative_to(tmp_path / "dest").as_posix() for p in (tmp_path / "dest").rglob("*")
                  if p.is_file()) == ["annotations.json", "images/a.png"]
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = CliRunner().invoke(app, ["store", "upload", str(empty), str(tmp_path / "dest")])
    assert nothing.exit_code == 2 and "no files to upload" in nothing.output


@pytest.mark.s3
def test_uploaded_quickstart_data_imports_as_the_same_version(tmp_path: Path, s3_store: Any) -> None:
    """The doc's path on a real S3 API: upload the folder, import the s3:// source the cluster manifest names."""
    data = tmp_path / "shapes"
    generate_shapes_coco(data, n_images=12, size=48, seed=7)
    runner = CliRunner()
    prefix = f"{s3_store.uri}/raw/shapes/"
    up = runner.invoke(app, ["store", "upload", str(data), prefix])
    assert up.exit_code == 0, up.output
    assert "uploaded 13 files" in up.output  # 12 images + annotations.json

    def digest(source: str, store: str) -> str:
        done = runner.invoke(app, ["datasets", "import", source, "--dataset", "shapes", "--format", "coco",
                                   "--store", store])
        assert done.exit_code == 0, done.output
        return done.stdout.split("shapes@")[1].split()[0]

    assert digest(prefix, f"{s3_store.uri}/store") == digest(str(data), str(tmp_path / "local-store"))
