"""One reading of a dataset VERSION argument (kubeforge.cli.version_ref) for every datasets command."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kubeforge.api import parse_resource
from kubeforge.cli.main import app
from kubeforge.cli.version_ref import VersionRefError, resolve_version
from kubeforge.datasets.manifest import Manifest
from kubeforge.datasets.versions import write_version
from kubeforge.local.state import Record, StateDir
from kubeforge.store import open_store


def _manifest(n: int) -> Manifest:
    return Manifest.model_validate({
        "dataset": "d", "task": "classification",
        "categories": [{"id": 1, "name": "cat"}],
        "images": [{"file_name": f"{i}.png", "blob": f"{i:064x}", "width": 4, "height": 4,
                    "bytes": 10, "tags": [], "category_id": 1} for i in range(n)],
        "annotations": [],
    })


@pytest.fixture
def versions(tmp_path: Path) -> tuple[Path, list[str]]:
    """A store with five versions of dataset `d`."""
    store = open_store(tmp_path.joinpath("store").as_uri())
    digests = sorted({write_version(store, _manifest(n))[0] for n in range(1, 6)})
    return tmp_path / "store", digests


def _state_with(tmp_path: Path, digest: str | None, store: Path, name: str = "d-v1",
                namespace: str = "default") -> Path:
    status = {"phase": "Succeeded", "digest": digest} if digest else {"phase": "Failed"}
    res = parse_resource({"apiVersion": "kubeforge.io/v1alpha1", "kind": "DatasetVersion",
                          "metadata": {"name": name, "namespace": namespace},
                          "spec": {"dataset": "d", "source": {"uri": "data/d", "format": "coco"}},
                          "status": status})
    StateDir(tmp_path / "state").save(Record(res, store=store.resolve().as_uri()))
    return tmp_path / "state"


def test_digest_prefix_rules(versions: tuple[Path, list[str]]) -> None:
    store, digests = versions
    full = digests[0]
    assert resolve_version(f"d@{full}", store=str(store)).digest == full
    assert resolve_version(f"d@{full[:6]}", store=str(store)).digest == full
    with pytest.raises(VersionRefError, match=r"d@[0-9a-f]{5}: give at least 6 characters"):
        resolve_version(f"d@{full[:5]}", store=str(store))
    absent = next(p for p in ("0000000", "fffffff", "1234567") if not any(d.startswith(p) for d in digests))
    with pytest.raises(VersionRefError, match=rf"no version of dataset 'd' .* \(its versions: {digests[0][:12]}, "):
        resolve_version(f"d@{absent}", store=str(store))
    with pytest.raises(VersionRefError, match=r"no version of dataset 'other' .*it has no versions there"):
        resolve_version("other@abcdef", store=str(store))
    with pytest.raises(VersionRefError, match="expected dataset@digest"):
        resolve_version("d@", store=str(store))


def test_an_ambiguous_prefix_lists_the_candidates(tmp_path: Path) -> None:
    # Two versions sharing 6 characters would take millions of tries; lay two out by hand instead.
    store = open_store(tmp_path.as_uri())
    for digest in ("abcdef" + "1" * 58, "abcdef" + "2" * 58):
        store.put_bytes(f"datasets/d/{digest}/manifest.json", b"{}")
    with pytest.raises(VersionRefError, match=r"2 versions .* start with 'abcdef': abcdef111111, abcdef222222"):
        resolve_version("d@abcdef", store=str(tmp_path))
    assert resolve_version("d@abcdef2", store=str(tmp_path)).digest == "abcdef" + "2" * 58


def test_a_name_from_the_state_uses_the_store_its_run_used(tmp_path: Path, versions: tuple[Path, list[str]]) -> None:
    store, digests = versions
    state = _state_with(tmp_path, digests[1], store)
    found = resolve_version("d-v1", state_dir=state)  # no --store: the record's store, not ./.kubeforge/store
    assert (found.dataset, found.digest, found.store.uri) == ("d", digests[1], store.resolve().as_uri())
    assert resolve_version("default/d-v1", state_dir=state).digest == digests[1]
    _state_with(tmp_path, digests[2], store, namespace="team")
    assert resolve_version("d-v1", state_dir=state, namespace="team").digest == digests[2]
    with pytest.raises(VersionRefError, match=r"no DatasetVersion default/nope .*DatasetVersions there: "
                                              r"default/d-v1, team/d-v1"):
        resolve_version("nope", state_dir=state)
    _state_with(tmp_path, None, store, name="failed")
    with pytest.raises(VersionRefError, match=r"DatasetVersion default/failed has no digest yet \(phase Failed\)"):
        resolve_version("failed", state_dir=state)


@pytest.mark.parametrize("command", [
    ["verify"], ["lineage"], ["diff", "d@PREFIX"], ["export", "--format", "coco", "--out", "OUT"],
    ["checkout", "OUT"], ["inspect-digest"],
])
def test_every_command_reads_versions_the_same_way(tmp_path: Path, versions: tuple[Path, list[str]],
                                                    command: list[str]) -> None:
    """Each command takes a 6-character prefix and a state name with --state-dir, and refuses 5 characters
    with the same message."""
    store, digests = versions
    state = _state_with(tmp_path, digests[0], store)
    runner = CliRunner()
    name, rest = command[0], [a.replace("PREFIX", digests[0][:6]).replace("OUT", str(tmp_path / "out"))
                              for a in command[1:]]

    def invoke(ref: str) -> tuple[int, str]:
        if name == "inspect-digest":  # DATASET DIGEST as two arguments, the same prefix rule
            args = ["datasets", "inspect", "d", ref.split("@")[1], "--store", str(store)]
        elif name == "checkout":
            args = ["datasets", "checkout", ref, *rest, "--store", str(store), "--state-dir", str(state), "--force"]
        else:
            args = ["datasets", name, ref, *rest, "--store", str(store), "--state-dir", str(state)]
        result = runner.invoke(app, args)
        return result.exit_code, result.output

    code, output = invoke(f"d@{digests[0][:5]}")
    assert code == 1 and "give at least 6 characters of the digest" in output, output
    code, output = invoke(f"d@{digests[0][:6]}")
    # blobs of these made-up manifests are absent: verify/export/checkout fail *after* resolving, naming them
    assert "give at least" not in output and "no version" not in output, output
    if name in ("diff", "inspect-digest"):
        assert code == 0, output
    if name != "inspect-digest":
        code, output = invoke("d-v1")
        assert "no DatasetVersion" not in output and "give at least" not in output, output
        code, output = invoke("nope")
        assert code == 1 and "no DatasetVersion default/nope" in output, output
