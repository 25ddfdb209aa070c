"""moto's S3 server on 127.0.0.1 for the S3 state tests, with fake credentials only.

moto 5.2.6 honours If-Match and If-None-Match on put_object and delete_object, one request at
a time. But it checks the condition and then writes without holding a lock
(moto/s3/responses.py, put_object). So two concurrent conditional puts of one key can both
succeed, where S3 lets exactly one win. `OneRequestAtATime` is a test-only layer that serves
one request at a time, so that each check and write is atomic as in S3.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer


class OneRequestAtATime:
    """A WSGI wrapper that serves one request at a time (see the module's docstring)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self.lock:
            return list(self.app(environ, start_response))


@dataclass
class S3:
    endpoint: str
    bucket: str
    client: Any

    def url(self, key: str = "prod/volplan.state.json") -> str:
        return f"s3://{self.bucket}/{key}"

    def body(self, key: str = "prod/volplan.state.json") -> bytes:
        data: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        return data

    def etag(self, key: str = "prod/volplan.state.json") -> str:
        etag: str = self.client.head_object(Bucket=self.bucket, Key=key)["ETag"]
        return etag

    def keys(self, prefix: str = "") -> list[str]:
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for item in listed.get("Contents", []))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    # ThreadedMotoServer offers no hook for WSGI middleware, so the wrapper replaces its app.
    server._server.app = OneRequestAtATime(server._server.app)
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, moto_endpoint: str) -> dict[str, str]:
    """Fake credentials and the moto endpoint, for this process and for the subprocesses it starts."""
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def s3(aws_env: dict[str, str], moto_endpoint: str) -> S3:
    """An empty bucket of its own on the moto server."""
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    bucket = f"state-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return S3(moto_endpoint, bucket, client)
