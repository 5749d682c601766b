"""Every read and write of propensity, for local paths and `s3://` URIs alike.

Contract (shared/DESIGN.md, "Storage"):
- a date partition is `<dataset>/dt=YYYY-MM-DD/`; it is complete only when its `_SUCCESS` marker
  exists, and readers refuse it otherwise;
- objects are written whole: a hidden temp file renamed into place locally, one whole-object
  upload on S3 (the object appears only when the upload completes), never appended.

S3 goes through pyarrow's S3FileSystem, which uses the AWS SDK's default credential chain and
region, honours `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3` (any S3-compatible endpoint, path-style
addressing) and retries transient errors in the SDK's standard mode.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import re
import uuid
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from propensity.errors import ExitCode, PropensityError

MARKER = "_SUCCESS"
_PARTITION = re.compile(r"^dt=(\d{4}-\d{2}-\d{2})$")
S3_MAX_ATTEMPTS = int(os.environ.get("PROPENSITY_S3_MAX_ATTEMPTS", "5"))


class StorageError(PropensityError, RuntimeError):
    """A storage operation failed; the message names the URI."""

    exit_code = ExitCode.FAILURE


class IncompletePartition(StorageError):
    """A partition has no `_SUCCESS` marker: it is being written, or its writer failed."""

    exit_code = ExitCode.MISSING_INPUT


def is_s3(uri: str) -> bool:
    return uri.startswith(("s3://", "s3a://"))


def join(base: str, *parts: str) -> str:
    """Join URI parts with '/', for local paths and S3 alike."""
    out = base.rstrip("/")
    for p in parts:
        out = f"{out}/{str(p).strip('/')}"
    return out


def partition(dataset: str, day: dt.date | str) -> str:
    """The URI of one date partition of a dataset."""
    return join(dataset, f"dt={as_date(day).isoformat()}")


def as_date(day: dt.date | str) -> dt.date:
    if isinstance(day, dt.datetime):
        return day.date()
    if isinstance(day, dt.date):
        return day
    try:
        return dt.date.fromisoformat(str(day))
    except ValueError:
        raise ValueError(f"not a date (expected YYYY-MM-DD): {day!r}") from None


@functools.lru_cache(maxsize=8)
def _s3_filesystem(endpoint: str | None, region: str | None) -> pafs.S3FileSystem:
    kwargs: dict[str, Any] = {
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=S3_MAX_ATTEMPTS),
        "connect_timeout": 10,
        "request_timeout": 60,
    }
    if region:
        kwargs["region"] = region
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme
    return pafs.S3FileSystem(**kwargs)


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path inside it for a URI."""
    if is_s3(uri):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return _s3_filesystem(endpoint, region), uri.split("://", 1)[1]
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def _wrap(uri: str, action: str, err: Exception) -> StorageError:
    return StorageError(f"{action} {uri}: {err}")


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    try:
        return fs.get_file_info(path).type != pafs.FileType.NotFound
    except OSError as e:
        raise _wrap(uri, "cannot stat", e) from e


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    try:
        with fs.open_input_stream(path, compression=None) as f:
            return f.read()
    except FileNotFoundError:
        raise StorageError(f"not found: {uri}") from None
    except OSError as e:
        raise _wrap(uri, "cannot read", e) from e


def write_bytes(uri: str, data: bytes) -> None:
    """Write one object whole: readers see the old object, the new one, or nothing."""
    fs, path = resolve(uri)
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            parent = os.path.dirname(path)
            os.makedirs(parent, exist_ok=True)
            tmp = os.path.join(parent, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)
        else:
            # One buffered write then close: a single PUT (or a multipart upload completed only
            # at close), so the object never exists half-written.
            with fs.open_output_stream(path, compression=None) as f:
                f.write(data)
    except OSError as e:
        raise _wrap(uri, "cannot write", e) from e


def read_json(uri: str) -> Any:
    raw = read_bytes(uri)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise StorageError(f"not valid JSON: {uri}: {e}") from None


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def delete(uri: str) -> None:
    """Delete a file or a whole folder/prefix; a missing one is fine."""
    fs, path = resolve(uri)
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(path)
        elif info.type == pafs.FileType.File:
            fs.delete_file(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise _wrap(uri, "cannot delete", e) from e


def list_files(uri: str, suffix: str = "", recursive: bool = False) -> list[str]:
    """URIs of the files under a folder, sorted; hidden (`.`/`_`) names are skipped."""
    fs, path = resolve(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=recursive))
    except OSError as e:
        raise _wrap(uri, "cannot list", e) from e
    out = []
    for info in infos:
        if info.type != pafs.FileType.File or info.base_name.startswith((".", "_")):
            continue
        if info.path.endswith(suffix):
            out.append(join(uri, info.path[len(path) :]))
    return sorted(out)


def list_partitions(dataset: str, complete_only: bool = True) -> list[dt.date]:
    """Dates of the partitions of a dataset, oldest first (complete ones only by default)."""
    fs, path = resolve(dataset)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError as e:
        raise _wrap(dataset, "cannot list", e) from e
    days = []
    for info in infos:
        m = _PARTITION.match(info.base_name)
        if m and info.type == pafs.FileType.Directory:
            day = dt.date.fromisoformat(m.group(1))
            if not complete_only or is_complete(partition(dataset, day)):
                days.append(day)
    return sorted(days)


def is_complete(partition_uri: str) -> bool:
    return exists(join(partition_uri, MARKER))


def mark_complete(partition_uri: str) -> None:
    """Write the marker; call it last, after every other object of the partition."""
    write_bytes(join(partition_uri, MARKER), b"")


def require_complete(partition_uri: str) -> None:
    if not is_complete(partition_uri):
        what = "is incomplete (no _SUCCESS marker)" if exists(partition_uri) else "does not exist"
        raise IncompletePartition(
            f"partition {partition_uri} {what}: its writer has not finished or failed; "
            "run the stage that writes it for that date"
        )


def write_parquet(table: pa.Table, uri: str, row_group_size: int | None = None) -> None:
    """Write one Parquet file whole (zstd-compressed)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=row_group_size)
    write_bytes(uri, sink.getvalue().to_pybytes())


def parquet_files(partition_uri: str) -> list[str]:
    """The Parquet files of a complete partition, sorted; refuses an incomplete one."""
    require_complete(partition_uri)
    return list_files(partition_uri, suffix=".parquet")


def open_parquet(uri: str) -> pq.ParquetFile:
    fs, path = resolve(uri)
    try:
        return pq.ParquetFile(fs.open_input_file(path))
    except OSError as e:
        raise _wrap(uri, "cannot open Parquet", e) from e


def read_parquet(partition_uri: str, columns: list[str] | None = None) -> pa.Table:
    """Read a whole complete partition into memory (for small partitions only)."""
    files = parquet_files(partition_uri)
    if not files:
        raise StorageError(f"partition {partition_uri} is complete but holds no Parquet file")
    return pa.concat_tables([open_parquet(f).read(columns=columns) for f in files])
