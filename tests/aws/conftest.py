"""Fixtures for the AWS provider: a strict moto EC2 server on 127.0.0.1 and clients that count calls.

Nothing here reaches AWS: the server listens on 127.0.0.1 only, the credentials are fake, the
instance metadata service is disabled, every endpoint is set explicitly, and a botocore
`before-send` hook fails any request aimed at another host.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.loaders
import botocore.session
import pytest
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
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
# One loader for every test session, so that the EC2 service model is parsed once per run.
_LOADER = botocore.loaders.create_loader()
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
    _clients: dict[str, Any] = field(default_factory=dict)

    def session(self, *, credentials: bool = True) -> boto3.Session:
        """A session whose clients count their calls; without `credentials` it uses the environment's."""
        keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"} if credentials else {}
        session = _new_session(**keys)
        session.events.register("before-call.ec2", self._count)
        session.events.register("before-send", _only_local)
        return session

    def provider(self, settings: AwsSettings = FAST) -> AwsProvider:
        return AwsProvider(settings, session=self.session())

    def client(self, region: str = "eu-central-1") -> Any:
        """A client for arranging and inspecting the server; its calls are not counted."""
        if region not in self._clients:
            session = _new_session(aws_access_key_id="testing", aws_secret_access_key="testing")
            session.events.register("before-send", _only_local)
            self._clients[region] = session.client("ec2", region_name=region)
        return self._clients[region]

    def count(self, operation: str | None = None) -> int:
        return sum(1 for call in self.calls if operation in (None, call))

    def _count(self, model: Any, **kwargs: Any) -> None:
        self.calls.append(model.name)


def _forget_volumes_and_instances() -> None:
    """Empty what the tests make in each region, keeping moto's region set-up.

    moto's own reset (POST /moto-api/reset) rebuilds each region's EC2 backend on its next
    request, which takes most of a second; these tests make only volumes and instances.
    """
    for backend in ec2_backends[DEFAULT_ACCOUNT_ID].values():
        backend.volumes.clear()
        backend.attachments.clear()
        backend.reservations.clear()


def _new_session(**keys: str) -> boto3.Session:
    core = botocore.session.Session()
    core.register_component("data_loader", _LOADER)
    return boto3.Session(botocore_session=core, **keys)


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

    _forget_volumes_and_instances()

    strict = StrictEc2()
    strict.install(monkeypatch)
    assert os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    yield Aws(moto_endpoint, strict)
