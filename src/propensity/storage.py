"""Every read and write of propensity, for local paths and `s3://` URIs alike.

Contract (shared/DESIGN.md, "Storage"):
- a date partition is `<dataset>/dt=YYYY-MM-DD/`; it is complete only when its `_SUCCESS` marker
  exists, and readers refuse it otherwise;
- the marker names the partition's data files: a JSON list of names relative to the partition
  (`["part-00000-....parquet", ...]`), written by the run that wrote them, and readers read
  exactly those, so stray files of a crashed or concurrent run in the folder are never read. An
  empty marker (partitions written before markers named their files) means "every file";
- objects are written whole: a hidden temp file renamed into place locally, one whole-object
  upload on S3 (the object appears only when the upload completes), never appended;
- `create_exclusive` creates an object only where none exists (a hard link of a temp file
  locally, a conditional PUT `If-None-Match: *` on S3): the atomic step of leases
  (`propensity.lease`) and of registry version numbers.

S3 goes through pyarrow's S3FileSystem, which uses the AWS SDK's default credential chain and
region, honours `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3` (any S3-compatible endpoint, path-style
addressing) and retries transient errors in the SDK's standard mode. The few S3 calls pyarrow
has no API for (conditional writes, a copy onto itself) go through boto3 with the same endpoint,
path-style addressing and standard-mode retries.
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

import boto3
import botocore.config
import botocore.exceptions
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


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


@functools.lru_cache(maxsize=8)
def _boto3_client(endpoint: str | None, region: str | None):
    config = botocore.config.Config(
        retries={"mode": "standard", "max_attempts": S3_MAX_ATTEMPTS},
        s3={"addressing_style": "path"} if endpoint else {},
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.client("s3", endpoint_url=endpoint, region_name=region, config=config)


def _s3_object(uri: str):
    """(boto3 client, bucket, key) of an `s3://` URI, on the endpoint `resolve` uses."""
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    return _boto3_client(_endpoint(), region), bucket, key


def _s3_code(err: botocore.exceptions.ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path inside it for a URI."""
    if is_s3(uri):
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        return _s3_filesystem(_endpoint(), region), uri.split("://", 1)[1]
    uri = uri.removeprefix("file://")
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


def create_exclusive(uri: str, data: bytes) -> bool:
    """Create an object whole, only if none exists at `uri`: True when this call created it,
    False when one was there (of this or another process, on this or another host)."""
    if is_s3(uri):
        client, bucket, key = _s3_object(uri)
        try:
            client.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
        except botocore.exceptions.ClientError as e:
            # 412: the object exists; 409: a concurrent conditional write to it is in flight.
            if _s3_code(e) in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return False
            raise _wrap(uri, "cannot create", e) from e
        except botocore.exceptions.BotoCoreError as e:
            raise _wrap(uri, "cannot create", e) from e
        return True
    path = resolve(uri)[1]
    parent = os.path.dirname(path)
    tmp = os.path.join(parent, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
    try:
        os.makedirs(parent, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # link(2) fails where the name exists and shows the whole file where it succeeds: an
        # exclusive create that readers never see half-written (O_EXCL would show an empty file).
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as e:
        raise _wrap(uri, "cannot create", e) from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def modified_at(uri: str) -> float | None:
    """When an object was last written or touched (epoch seconds), or None when it is absent."""
    fs, path = resolve(uri)
    try:
        info = fs.get_file_info(path)
    except OSError as e:
        raise _wrap(uri, "cannot stat", e) from e
    if info.type != pafs.FileType.File or info.mtime is None:
        return None
    return info.mtime.timestamp()


def touch(uri: str) -> bool:
    """Renew an existing object's modification time, its content unchanged; False when it is
    absent (never creates one). On S3: a copy onto itself, conditional on the object existing."""
    if is_s3(uri):
        client, bucket, key = _s3_object(uri)
        try:
            client.copy_object(
                Bucket=bucket,
                Key=key,
                CopySource={"Bucket": bucket, "Key": key},
                MetadataDirective="REPLACE",  # S3 refuses a copy onto itself that changes nothing
                Metadata={"touched-at": f"{dt.datetime.now(dt.UTC).timestamp():.3f}"},
            )
        except botocore.exceptions.ClientError as e:
            if _s3_code(e) in ("NoSuchKey", "404"):
                return False
            raise _wrap(uri, "cannot touch", e) from e
        except botocore.exceptions.BotoCoreError as e:
            raise _wrap(uri, "cannot touch", e) from e
        return True
    try:
        os.utime(resolve(uri)[1])
        return True
    except FileNotFoundError:
        return False
    except OSError as e:
        raise _wrap(uri, "cannot touch", e) from e


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


def mark_complete(partition_uri: str, files: list[str] | None = None) -> None:
    """Write the marker; call it last, after every other object of the partition. `files`: the
    data files of the run (URIs inside the partition), which readers then read and nothing else;
    None writes an empty marker (every file of the partition is its content)."""
    body = b""
    if files is not None:
        base = partition_uri.rstrip("/") + "/"
        outside = [f for f in files if not f.startswith(base)]
        if outside:
            raise StorageError(f"marker of {partition_uri}: files outside it: {outside[:3]}")
        body = (json.dumps(sorted(f[len(base) :] for f in files), indent=1) + "\n").encode()
    write_bytes(join(partition_uri, MARKER), body)


def marked_files(partition_uri: str) -> list[str] | None:
    """The file names (relative) a partition's marker lists; None for an empty (older) marker.
    Refuses a partition without one."""
    require_complete(partition_uri)
    uri = join(partition_uri, MARKER)
    raw = read_bytes(uri)
    if not raw.strip():
        return None
    try:
        names = json.loads(raw)
    except json.JSONDecodeError as e:
        raise StorageError(f"{uri}: not a JSON list of file names: {e}") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise StorageError(f"{uri}: not a JSON list of file names")
    return names


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


def data_files(partition_uri: str, suffix: str = "") -> list[str]:
    """The data files of a complete partition, sorted: those its marker lists (where it lists
    any; other files in the folder are not its content), else every file. Refuses an incomplete
    partition, and one whose marker lists a file that is absent."""
    names = marked_files(partition_uri)
    present = list_files(partition_uri, suffix=suffix)
    if names is None:
        return present
    wanted = {join(partition_uri, n) for n in names if n.endswith(suffix)}
    absent = sorted(wanted - set(present))
    if absent:
        raise StorageError(
            f"partition {partition_uri}: {len(absent)} file(s) its {MARKER} lists are missing "
            f"(e.g. {absent[0]}): the partition was changed after it was published; "
            "run the stage that writes it for that date again"
        )
    return sorted(wanted)


def parquet_files(partition_uri: str) -> list[str]:
    """The Parquet files of a complete partition (as `data_files`), sorted."""
    return data_files(partition_uri, suffix=".parquet")


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
