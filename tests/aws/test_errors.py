"""AWS errors reach the user as volplan errors that name the volume, the AWS code and the next step.

The refusals injected with `strict.fail` come from AWS's throttling and policy engine, which moto
does not run. Everything else is moto's own response, made strict.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from engine.errors import ProviderError
from providers.aws import AwsProvider
from tests.aws.conftest import FAST, Aws
from tests.aws.test_provider import REGION, make_raw_volumes, spec


def test_throttling_burst_absorbed_by_retries(aws: Aws) -> None:
    ids = make_raw_volumes(3)
    aws.strict.fail("RequestLimitExceeded", "Request limit exceeded.", action="DescribeVolumes", status=503, times=2)

    found = aws.provider().refresh_volumes(ids, dict.fromkeys(ids, REGION))

    assert set(found) == set(ids)
    assert aws.count("DescribeVolumes") == 1
    assert aws.strict.count("DescribeVolumes") == 3


def test_throttling_burst_during_create_makes_one_volume(aws: Aws) -> None:
    aws.strict.fail("RequestLimitExceeded", "Request limit exceeded.", action="CreateVolume", status=503, times=2)

    facts = aws.provider().create_volume(spec(), "token-1")

    assert aws.strict.count("CreateVolume") == 3
    assert [volume["VolumeId"] for volume in aws.client().describe_volumes()["Volumes"]] == [facts.id]


def test_throttling_after_every_retry(aws: Aws) -> None:
    ids = make_raw_volumes(1)
    provider = aws.provider(replace(FAST, max_attempts=2))
    aws.strict.fail("RequestLimitExceeded", "Request limit exceeded.", action="DescribeVolumes", status=503, times=2)

    with pytest.raises(ProviderError) as raised:
        provider.read_volume(ids[0], REGION)

    assert raised.value.title == "AWS kept throttling requests"
    assert "RequestLimitExceeded" in raised.value.detail
    assert ids[0] in raised.value.detail
    assert "2 attempts" in raised.value.detail
    assert "max_attempts" in raised.value.detail


@pytest.mark.parametrize(
    ("code", "title", "next_step"),
    [
        ("UnauthorizedOperation", "Not authorized", "Allow ec2:DeleteVolume"),
        ("ExpiredToken", "AWS credentials expired or invalid", "Refresh the credentials"),
        ("RequestExpired", "AWS credentials expired or invalid", "Refresh the credentials"),
        ("IncorrectState", "Volume in the wrong state", "Wait until the volume is available"),
        ("VolumeInUse", "Volume in use", "Detach it"),
        ("InternalError", "AWS request failed", "Fix the cause"),
    ],
)
def test_permanent_error_names_volume_and_code(aws: Aws, code: str, title: str, next_step: str) -> None:
    provider = aws.provider()
    created = provider.create_volume(spec(), "token-1")
    aws.strict.fail(code, "Refused by the test.", action="DeleteVolume")

    with pytest.raises(ProviderError) as raised:
        provider.delete_volume(created.id, REGION)

    assert raised.value.title == title
    assert created.id in raised.value.detail
    assert code in raised.value.detail
    assert REGION in raised.value.detail
    assert next_step in raised.value.detail
    assert aws.strict.count("DeleteVolume") == 1


def test_unauthorized_create_names_address(aws: Aws) -> None:
    aws.strict.fail("UnauthorizedOperation", "You are not authorized to perform this operation.")

    with pytest.raises(ProviderError) as raised:
        aws.provider().create_volume(spec(), "token-1")

    assert raised.value.title == "Not authorized"
    assert "volume.data" in raised.value.detail
    assert "UnauthorizedOperation" in raised.value.detail


def test_unreachable_endpoint(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    # Port 9 on 127.0.0.1 (discard) has no listener here, so the connection is refused.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    provider = aws.provider(replace(FAST, max_attempts=1))

    with pytest.raises(ProviderError) as raised:
        provider.read_volume("vol-0123456789abcdef0", REGION)

    assert raised.value.title == "AWS endpoint unreachable"
    assert "vol-0123456789abcdef0" in raised.value.detail


def test_missing_credentials(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    provider = AwsProvider(FAST, session=aws.session(credentials=False))

    with pytest.raises(ProviderError) as raised:
        provider.read_volume("vol-0123456789abcdef0", REGION)

    assert raised.value.title == "AWS credentials missing"
    assert "AWS_PROFILE" in raised.value.detail
