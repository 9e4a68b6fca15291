"""The stack's object store keeps what it is given: objects, multipart uploads and deletions
survive a restart of the store; S3's paging and batch delete work as boto3, s3fs (MLflow) and
DVC use them; only the stack's key and secret get in."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError

from flows.stack import urls, weed_socket
from tests.helpers import sh

pytestmark = pytest.mark.integration
MIB = 1024 * 1024
KEPT = ["persist/big", "persist/k2", "persist/k3", "persist/k4"]


def _client(stack, secret: str | None = None):
    s = stack.s
    return boto3.client(
        "s3",
        endpoint_url=urls(s)["s3"],
        aws_access_key_id=s.s3_key,
        aws_secret_access_key=secret or s.s3_secret,
        region_name="us-east-1",
    )


def _keys(s3, bucket: str, prefix: str) -> list[str]:
    """Every key under `prefix`, two per page: the continuation token must carry the rest."""
    keys, token, pages = [], None, 0
    while True:
        extra = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=2, **extra)
        keys += [o["Key"] for o in page.get("Contents", [])]
        pages += 1
        if not page.get("IsTruncated"):
            return keys
        token = page["NextContinuationToken"]
        assert pages < 100, "the listing does not end"


def test_objects_multipart_and_deletes_survive_a_restart(stack) -> None:
    s3, bucket = _client(stack), stack.s.bucket
    small = {f"persist/k{i}": os.urandom(100 + i) for i in range(5)}
    for key, body in small.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    parts = [os.urandom(5 * MIB), os.urandom(5 * MIB), os.urandom(1000)]
    up = s3.create_multipart_upload(Bucket=bucket, Key="persist/big")
    etags = [
        s3.upload_part(
            Bucket=bucket, Key="persist/big", UploadId=up["UploadId"], PartNumber=n, Body=p
        )["ETag"]
        for n, p in enumerate(parts, 1)
    ]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="persist/big",
        UploadId=up["UploadId"],
        MultipartUpload={"Parts": [{"ETag": e, "PartNumber": n} for n, e in enumerate(etags, 1)]},
    )
    gone = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "persist/k0"}, {"Key": "persist/k1"}]}
    )
    assert len(gone.get("Deleted", [])) == 2 and not gone.get("Errors")
    assert _keys(s3, bucket, "persist/") == [
        "persist/big",
        "persist/k2",
        "persist/k3",
        "persist/k4",
    ]

    pid = stack.state()["s3"]["pid"]
    stack.stop("s3")
    # nothing of it is left in /tmp: its socket removed, its logs (named by pid) in the home
    assert not weed_socket(stack.s).exists()
    assert list((stack.home / "logs").glob(f"weed.*.{pid}"))
    assert not list(Path("/tmp").glob(f"weed.*.{pid}"))
    stack.up(progress=lambda _m: None)

    s3 = _client(stack)
    assert _keys(s3, bucket, "persist/") == [
        "persist/big",
        "persist/k2",
        "persist/k3",
        "persist/k4",
    ]
    for key in ["persist/k2", "persist/k3", "persist/k4"]:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == small[key]
    big = s3.get_object(Bucket=bucket, Key="persist/big")["Body"].read()
    assert hashlib.sha256(big).digest() == hashlib.sha256(b"".join(parts)).digest()
    with pytest.raises(ClientError) as err:
        _client(stack, secret="wrong").list_objects_v2(Bucket=bucket)
    assert err.value.response["Error"]["Code"] in {"SignatureDoesNotMatch", "InvalidAccessKeyId"}


def test_dvc_pushes_collects_garbage_and_pulls_across_a_restart(stack, stack_env, tmp_path) -> None:
    from tasks.publish import configure_remote

    repo, dvc = tmp_path / "repo", [sys.executable, "-m", "dvc"]
    repo.mkdir()
    sh(["git", "init", "-q"], repo)
    sh([*dvc, "init", "-q"], repo)
    remote = f"s3://{stack.s.bucket}/dvc-store-test"
    configure_remote(repo, remote, stack_env["MLFLOW_S3_ENDPOINT_URL"])
    data = repo / "data.bin"
    data.write_bytes(os.urandom(300_000))
    sh([*dvc, "add", "-q", "data.bin"], repo)
    sh([*dvc, "push", "-q"], repo)
    data.unlink()
    data.write_bytes(os.urandom(300_000))  # a second version; the first is now garbage
    sh([*dvc, "add", "-q", "data.bin"], repo)
    sh([*dvc, "push", "-q"], repo)
    s3, prefix = _client(stack), "dvc-store-test/"
    assert len(_keys(s3, stack.s.bucket, prefix)) == 2
    sh([*dvc, "gc", "-q", "--workspace", "--cloud", "--force"], repo)  # a batch delete
    assert len(_keys(s3, stack.s.bucket, prefix)) == 1
    sh(["git", "add", "-A"], repo)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "v2"], repo)

    stack.stop("s3")
    stack.up(progress=lambda _m: None)

    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    configure_remote(clone, remote, stack_env["MLFLOW_S3_ENDPOINT_URL"])
    sh([*dvc, "pull"], clone)  # not -q: DVC's quiet mode hides its errors too
    assert (clone / "data.bin").read_bytes() == data.read_bytes()
