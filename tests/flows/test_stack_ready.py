"""The stack's readiness probe for its object store (no server is started here): ready only
once a stored object's bytes come back, not when the S3 API first answers."""

from __future__ import annotations

import io

from flows.stack import store_serves


class Store:
    """An S3 client's calls the probe makes, on a bucket `objects` whose reads fail until
    `serving` (as a restarted store whose volume server has not re-registered yet)."""

    def __init__(self, buckets: list[str], objects: list[str], serving: bool = True) -> None:
        self.buckets, self.objects, self.serving = buckets, objects, serving
        self.reads: list[str] = []

    def list_buckets(self) -> dict:
        return {"Buckets": [{"Name": b} for b in self.buckets]}

    def list_objects_v2(self, Bucket: str, MaxKeys: int) -> dict:  # noqa: N803 - boto's names
        assert Bucket in self.buckets and MaxKeys == 1
        return {"Contents": [{"Key": k} for k in self.objects[:MaxKeys]]} if self.objects else {}

    def get_object(self, Bucket: str, Key: str) -> dict:  # noqa: N803
        self.reads.append(Key)
        if not self.serving:
            raise ConnectionError("volume server not registered")
        return {"Body": io.BytesIO(b"bytes")}


def test_a_store_that_lists_but_cannot_read_is_not_ready() -> None:
    store = Store(["gifqa"], ["dvc/files/md5/ab/cd"], serving=False)
    assert not store_serves(store, "gifqa") and store.reads == ["dvc/files/md5/ab/cd"]
    store.serving = True
    assert store_serves(store, "gifqa")


def test_an_empty_or_missing_bucket_is_ready_once_the_api_answers() -> None:
    empty, fresh = Store(["gifqa"], []), Store([], [])
    assert store_serves(empty, "gifqa") and store_serves(fresh, "gifqa")
    assert empty.reads == fresh.reads == []  # nothing to read back


def test_an_api_that_does_not_answer_is_not_ready() -> None:
    class Down(Store):
        def list_buckets(self) -> dict:
            raise ConnectionError("connection refused")

    assert not store_serves(Down(["gifqa"], ["k"]), "gifqa")
