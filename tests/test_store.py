"""The same behaviour from LocalStore and S3Store (on a real SeaweedFS), and S3 failure modes."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from kubeforge.ports import free_port
from kubeforge.store import LocalStore, Store, StoreError, StoreUnreachableError, layout, open_store
from kubeforge.store.s3 import S3Store, parse_endpoint


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return request.getfixturevalue("s3_store")


def test_bytes_json_and_files_round_trip(store: Store, tmp_path: Path) -> None:
    store.put_bytes("a/b.bin", b"\x00\x01payload")
    assert store.get_bytes("a/b.bin") == b"\x00\x01payload"
    store.put_bytes("a/b.bin", b"overwritten")
    assert store.get_bytes("a/b.bin") == b"overwritten"

    store.put_json("info.json", {"b": 1, "a": [1, 2]})
    assert store.get_json("info.json") == {"a": [1, 2], "b": 1}

    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 100_000)
    store.put_file("files/src.bin", src)
    dest = tmp_path / "out" / "deep" / "copy.bin"  # parents do not exist yet
    store.get_file("files/src.bin", dest)
    assert dest.read_bytes() == src.read_bytes()
    assert store.exists("files/src.bin") and not store.exists("files/other.bin")


def test_missing_key_raises_key_error(store: Store, tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        store.get_bytes("nope/missing.json")
    with pytest.raises(KeyError):
        store.get_file("nope/missing.json", tmp_path / "x")
    assert not (tmp_path / "x").exists()
    store.put_bytes("dir/file", b"1")
    # A "directory" is not an object.
    assert not store.exists("dir")
    with pytest.raises(KeyError):
        store.get_bytes("dir")


def test_blobs_are_stored_once_by_digest(store: Store) -> None:
    data = b"the same image bytes"
    first = store.put_blob(data)
    second = store.put_blob(data)
    assert first == second == hashlib.sha256(data).hexdigest()
    assert list(store.list("blobs/")) == [layout.blob_key(first)]
    assert store.get_blob(first) == data


def test_list_is_recursive_sorted_and_prefix_may_end_mid_name(store: Store) -> None:
    for key in ["b/z.txt", "a/2.txt", "a/1.txt", "ab/x.txt", "a/sub/deep.txt", "c.txt"]:
        store.put_bytes(key, key.encode())
    assert list(store.list()) == ["a/1.txt", "a/2.txt", "a/sub/deep.txt", "ab/x.txt", "b/z.txt", "c.txt"]
    assert list(store.list("a/")) == ["a/1.txt", "a/2.txt", "a/sub/deep.txt"]
    # S3 semantics: "a" also matches "ab/...".
    assert list(store.list("a")) == ["a/1.txt", "a/2.txt", "a/sub/deep.txt", "ab/x.txt"]
    assert list(store.list("a/s")) == ["a/sub/deep.txt"]
    assert list(store.list("zzz")) == []


def test_delete(store: Store) -> None:
    store.put_bytes("d/one", b"1")
    store.put_bytes("d/two", b"2")
    store.delete("d/one")
    store.delete("d/never-existed")  # not an error
    assert list(store.list("d/")) == ["d/two"]
    assert not store.exists("d/one")


def test_tree_round_trip(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "tree"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "top.txt").write_text("top")
    (src / "sub" / "mid.bin").write_bytes(b"\x01" * 10)
    (src / "sub" / "deeper" / "leaf.json").write_text("{}")
    keys = store.put_tree("exp/run1/", src)
    assert keys == ["exp/run1/sub/deeper/leaf.json", "exp/run1/sub/mid.bin", "exp/run1/top.txt"]

    out = tmp_path / "back"
    paths = store.get_tree("exp/run1", out)
    assert sorted(p.relative_to(out).as_posix() for p in paths) == [
        "sub/deeper/leaf.json", "sub/mid.bin", "top.txt",
    ]
    for rel in ("top.txt", "sub/mid.bin", "sub/deeper/leaf.json"):
        assert (out / rel).read_bytes() == (src / rel).read_bytes()


def test_keys_escaping_the_root_are_rejected(store: Store) -> None:
    with pytest.raises(StoreError, match=r"\.\./outside"):
        store.put_bytes("../outside", b"x")
    with pytest.raises(StoreError):
        store.get_bytes("a/../../outside")


def test_url_names_the_location(store: Store) -> None:
    store.put_bytes("k/v.txt", b"1")
    url = store.url("k/v.txt")
    if isinstance(store, S3Store):
        assert url == f"{store.uri}/k/v.txt" and url.startswith("s3://kubeforge-test/t-")
    else:
        assert Path(url).read_bytes() == b"1"


# --- S3 specifics -----------------------------------------------------------------------


@pytest.mark.s3
def test_open_store_uses_the_environment(s3_store: S3Store) -> None:
    # s3_store set the env; open_store must find the same objects through it alone.
    s3_store.put_bytes("shared.txt", b"seen")
    again = open_store(s3_store.uri)
    assert isinstance(again, S3Store)
    assert again.get_bytes("shared.txt") == b"seen"
    again.check()


@pytest.mark.s3
def test_triton_uri_and_endpoint(s3_store: S3Store) -> None:
    host, port = s3_store.endpoint_url.split(":")
    assert host == "127.0.0.1" and int(port) > 0
    assert s3_store.triton_uri("serving/ns_svc/") == (
        f"s3://{s3_store.endpoint_url}/{s3_store.bucket}/{s3_store.prefix}/serving/ns_svc"
    )


def test_endpoint_forms() -> None:
    assert parse_endpoint("127.0.0.1:8333") == ("127.0.0.1:8333", False)
    assert parse_endpoint("http://minio:9000/") == ("minio:9000", False)
    assert parse_endpoint("https://s3.example.com") == ("s3.example.com", True)
    with pytest.raises(StoreUnreachableError, match="KUBEFORGE_S3_ENDPOINT"):
        parse_endpoint("ftp://host:21")


def test_missing_environment_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KUBEFORGE_S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "someone")
    with pytest.raises(StoreUnreachableError) as err:
        S3Store.from_uri("s3://some-bucket/p")
    assert "KUBEFORGE_S3_ENDPOINT" in str(err.value) and "AWS_SECRET_ACCESS_KEY" in str(err.value)
    assert "AWS_ACCESS_KEY_ID," not in str(err.value)  # the one that is set is not blamed


def test_unreachable_endpoint_fails_fast_without_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"127.0.0.1:{free_port()}"  # bound and closed again: nothing listens there
    secret = "sEcReT-value-that-must-not-leak"
    monkeypatch.setenv("KUBEFORGE_S3_ENDPOINT", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    start = time.monotonic()
    with pytest.raises(StoreUnreachableError) as err:
        S3Store.from_uri("s3://some-bucket/p")
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert endpoint in message and secret not in message and "\n" not in message

    store = S3Store("some-bucket", "p", endpoint=endpoint, access_key="key", secret_key=secret,
                    create_bucket=False)
    assert secret not in repr(store)
    for call in (store.check, lambda: store.get_bytes("k"), lambda: list(store.list()),
                 lambda: store.put_bytes("k", b"1"), lambda: store.exists("k")):
        with pytest.raises(StoreUnreachableError, match=endpoint):
            call()


@pytest.mark.s3
def test_wrong_secret_is_refused(seaweedfs, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("KUBEFORGE_S3_ENDPOINT", seaweedfs.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-" + seaweedfs.secret_key)
    with pytest.raises(StoreUnreachableError) as err:
        S3Store.from_uri("s3://kubeforge-test/wrong")
    message = str(err.value)
    assert seaweedfs.endpoint in message and "credentials" in message
    assert seaweedfs.secret_key not in message


def test_list_sizes_reports_each_object(store: Store) -> None:
    store.put_bytes("sizes/a.bin", b"12345")
    store.put_bytes("sizes/b/c.bin", b"1")
    assert list(store.list_sizes("sizes/")) == [("sizes/a.bin", 5), ("sizes/b/c.bin", 1)]
