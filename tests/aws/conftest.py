"""Fixtures for the AWS provider: a strict moto EC2 server on 127.0.0.1 and clients that count calls.

Nothing here reaches AWS: the server listens on 127.0.0.1 only, the credentials are fake, the
instance metadata service is disabled, every endpoint is set explicitly, and a botocore
`before-send` hook fails any request aimed at another host.
"""

from __future__ import annotations

import logging
import os
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from moto.server import ThreadedMotoServer

from providers.aws import AwsProvider, AwsSettings
from tests.aws.strict_ec2 import StrictEc2

# Settings that could lead boto3 to real credentials or a real endpoint.
_AWS_VARIABLES = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ENDPOINT_URL_EC2",
)
FAST = AwsSettings(create_timeout=5, poll_interval=0.01, retry_mode="standard", max_attempts=5)


class NonLocalRequest(RuntimeError):
    """A test client tried to reach a host other than 127.0.0.1."""


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@dataclass
class Aws:
    """The strict server, its endpoint, and the API calls made through `session()` clients."""

    endpoint: str
    strict: StrictEc2
    calls: list[str] = field(default_factory=list)

    def session(self) -> boto3.Session:
        session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
        session.events.register("before-call.ec2", self._count)
        session.events.register("before-send", _only_local)
        return session

    def provider(self, settings: AwsSettings = FAST) -> AwsProvider:
        return AwsProvider(settings, session=self.session())

    def client(self, region: str = "eu-central-1") -> Any:
        """A client for arranging and inspecting the server; its calls are not counted."""
        session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
        session.events.register("before-send", _only_local)
        return session.client("ec2", region_name=region)

    def count(self, operation: str | None = None) -> int:
        return sum(1 for call in self.calls if operation in (None, call))

    def _count(self, model: Any, **kwargs: Any) -> None:
        self.calls.append(model.name)


def _only_local(request: Any, **kwargs: Any) -> None:
    host = urlsplit(request.url).hostname
    if host != "127.0.0.1":
        raise NonLocalRequest(f"a test request was aimed at {host}: {request.url}")


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Aws]:
    for name in _AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)

    request = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200

    strict = StrictEc2()
    strict.install(monkeypatch)
    assert os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    yield Aws(moto_endpoint, strict)
