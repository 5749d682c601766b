"""The same storage suite against a temp folder and a real S3 endpoint on loopback."""

from __future__ import annotations

import datetime as dt
import socket
import threading

import pyarrow as pa
import pytest

from propensity import storage


@pytest.fixture
def root(storage_root):
    return storage_root


def test_bytes_and_json_round_trip(root):
    uri = storage.join(root, "a", "b.json")
    assert not storage.exists(uri)
    storage.write_json(uri, {"x": 1, "when": dt.date(2026, 1, 2)})
    assert storage.exists(uri)
    assert storage.read_json(uri) == {"x": 1, "when": "2026-01-02"}
    storage.write_bytes(uri, b"replaced")
    assert storage.read_bytes(uri) == b"replaced"


def test_missing_object_names_the_uri(root):
    uri = storage.join(root, "missing.json")
    with pytest.raises(storage.StorageError, match="missing.json"):
        storage.read_bytes(uri)


def test_partition_needs_marker(root):
    dataset = storage.join(root, "histories")
    part = storage.partition(dataset, "2026-03-01")
    table = pa.table({"profile_id": ["a", "b"], "n": [1, 2]})
    storage.write_parquet(table, storage.join(part, "part-00000.parquet"))

    with pytest.raises(storage.IncompletePartition, match="no _SUCCESS marker"):
        storage.read_parquet(part)
    assert storage.list_partitions(dataset) == []
    assert storage.list_partitions(dataset, complete_only=False) == [dt.date(2026, 3, 1)]

    storage.mark_complete(part)
    assert storage.read_parquet(part).equals(table)
    assert storage.list_partitions(dataset) == [dt.date(2026, 3, 1)]


def test_missing_partition_is_refused_clearly(root):
    part = storage.partition(storage.join(root, "histories"), "2026-03-02")
    with pytest.raises(storage.IncompletePartition, match="does not exist"):
        storage.parquet_files(part)


def test_list_partitions_sorted_and_ignores_other_names(root):
    dataset = storage.join(root, "events")
    for day in ["2026-01-03", "2026-01-01", "2026-01-02"]:
        storage.mark_complete(storage.partition(dataset, day))
    storage.write_bytes(storage.join(dataset, "README.txt"), b"not a partition")
    storage.write_bytes(storage.join(dataset, "dt=garbage", "x"), b"")
    assert storage.list_partitions(dataset) == [
        dt.date(2026, 1, 1),
        dt.date(2026, 1, 2),
        dt.date(2026, 1, 3),
    ]


def test_list_files_skips_hidden_and_delete_removes_tree(root):
    folder = storage.join(root, "p")
    for name in ["b.parquet", "a.parquet", "_SUCCESS", ".tmp-x", "c.json"]:
        storage.write_bytes(storage.join(folder, name), b"1")
    assert [u.rsplit("/", 1)[1] for u in storage.list_files(folder, ".parquet")] == [
        "a.parquet",
        "b.parquet",
    ]
    storage.delete(folder)
    assert storage.list_files(folder) == []
    storage.delete(folder)  # deleting what is gone is fine


def test_local_write_leaves_no_temp_file_on_failure(tmp_path, monkeypatch):
    uri = str(tmp_path / "x" / "obj.bin")
    storage.write_bytes(uri, b"old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(storage.os, "replace", broken_replace)
    with pytest.raises(storage.StorageError, match="obj.bin"):
        storage.write_bytes(uri, b"new")
    monkeypatch.undo()
    assert storage.read_bytes(uri) == b"old"
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["obj.bin"]


class FlakyProxy:
    """A TCP proxy to the S3 endpoint whose first `failures` connections get 503 SlowDown.

    Later connections are piped through byte for byte, so chunked uploads and keep-alive work as
    they do against the endpoint itself.
    """

    def __init__(self, upstream: str, failures: int):
        host, port = upstream.split("://", 1)[1].split(":")
        self.upstream = (host, int(port))
        self.failures = failures
        self.refused = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        if self.failures > 0:
            self.failures -= 1
            self.refused += 1
            client.recv(65536)  # the request head; the SDK sends nothing more before an answer
            body = b"<Error><Code>SlowDown</Code><Message>Reduce your rate</Message></Error>"
            client.sendall(
                b"HTTP/1.1 503 Slow Down\r\nConnection: close\r\nContent-Type: application/xml\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            client.close()
            return
        upstream = socket.create_connection(self.upstream)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.sock.close()


def test_s3_transient_errors_are_retried(s3_endpoint, s3_bucket, monkeypatch):
    proxy = FlakyProxy(s3_endpoint, failures=2)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        storage._s3_filesystem.cache_clear()
        uri = f"s3://{s3_bucket}/retry/obj.json"
        storage.write_json(uri, {"survived": True})
        assert proxy.refused == 2
        proxy.failures = 2
        assert storage.read_json(uri) == {"survived": True}
        assert proxy.refused == 4
    finally:
        proxy.close()
        storage._s3_filesystem.cache_clear()


def test_compressed_names_are_stored_byte_for_byte(root):
    # pyarrow would gzip/gunzip by file extension unless told not to.
    import gzip

    uri = storage.join(root, "dt=2026-01-01", "part-00000.jsonl.gz")
    payload = gzip.compress(b'{"a": 1}\n')
    storage.write_bytes(uri, payload)
    assert storage.read_bytes(uri) == payload
