"""The strict layer itself: moto behaves like AWS on the points the provider relies on."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from tests.aws.conftest import Aws
from tests.aws.test_provider import make_raw_volumes


def error_code(raised: pytest.ExceptionInfo[ClientError]) -> str:
    return str(raised.value.response["Error"]["Code"])


def test_volume_id_filter_skips_missing_ids(aws: Aws) -> None:
    client = aws.client()
    [kept] = make_raw_volumes(1)
    missing = "vol-0123456789abcdef0"

    filtered = client.describe_volumes(Filters=[{"Name": "volume-id", "Values": [kept, missing]}])
    with pytest.raises(ClientError) as raised:
        client.describe_volumes(VolumeIds=[kept, missing])

    assert [volume["VolumeId"] for volume in filtered["Volumes"]] == [kept]
    assert error_code(raised) == "InvalidVolume.NotFound"


def test_max_results_pages(aws: Aws) -> None:
    ids = make_raw_volumes(12)
    client = aws.client()

    first = client.describe_volumes(MaxResults=5)
    second = client.describe_volumes(MaxResults=5, NextToken=first["NextToken"])
    third = client.describe_volumes(MaxResults=5, NextToken=second["NextToken"])

    pages = [first["Volumes"], second["Volumes"], third["Volumes"]]
    assert [len(page) for page in pages] == [5, 5, 2]
    assert "NextToken" not in third
    assert [volume["VolumeId"] for page in pages for volume in page] == ids


def test_page_cap_returns_fewer_than_asked(aws: Aws) -> None:
    make_raw_volumes(10)
    aws.strict.page_cap = 3

    page = aws.client().describe_volumes(MaxResults=500)

    assert len(page["Volumes"]) == 3
    assert page["NextToken"]


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        ({"VolumeIds": ["vol-0123456789abcdef0"], "MaxResults": 5}, "InvalidParameterCombination"),
        ({"MaxResults": 501}, "InvalidParameterValue"),
        ({"MaxResults": 4}, "InvalidParameterValue"),
        ({"Filters": [{"Name": "volume-id", "Values": [f"vol-{n:017x}" for n in range(201)]}]}, "FilterLimitExceeded"),
    ],
)
def test_describe_rejects_what_aws_rejects(aws: Aws, arguments: dict[str, object], code: str) -> None:
    with pytest.raises(ClientError) as raised:
        aws.client().describe_volumes(**arguments)

    assert error_code(raised) == code


def test_new_volume_is_creating_first(aws: Aws) -> None:
    aws.strict.creating_reads = 2
    client = aws.client()

    created = client.create_volume(AvailabilityZone="eu-central-1a", Size=10, VolumeType="gp3")
    states = [client.describe_volumes(VolumeIds=[created["VolumeId"]])["Volumes"][0]["State"] for _ in range(3)]

    assert created["State"] == "creating"
    assert states == ["creating", "creating", "available"]


def test_client_token_returns_first_volume(aws: Aws) -> None:
    client = aws.client()
    arguments = {"AvailabilityZone": "eu-central-1a", "Size": 10, "VolumeType": "gp3", "ClientToken": "abc"}

    first = client.create_volume(**arguments)
    second = client.create_volume(**arguments)
    with pytest.raises(ClientError) as raised:
        client.create_volume(**{**arguments, "Size": 20})

    assert second["VolumeId"] == first["VolumeId"]
    assert error_code(raised) == "IdempotentParameterMismatch"
    assert len(client.describe_volumes()["Volumes"]) == 1


@pytest.mark.parametrize(
    "arguments",
    [
        {"AvailabilityZone": "eu-central-1z", "Size": 10},
        {"AvailabilityZone": "eu-central-1a", "Size": 10, "VolumeType": "gp9"},
        {"AvailabilityZone": "eu-central-1a", "Size": 20000, "VolumeType": "gp3"},
        {"AvailabilityZone": "eu-central-1a", "Size": 10, "ClientToken": "x" * 65},
    ],
)
def test_create_rejects_bogus_parameters(aws: Aws, arguments: dict[str, object]) -> None:
    with pytest.raises(ClientError) as raised:
        aws.client().create_volume(**arguments)

    assert error_code(raised) == "InvalidParameterValue"
    assert aws.client().describe_volumes()["Volumes"] == []


def test_modify_rejects_shrink_and_bogus_type(aws: Aws) -> None:
    [volume_id] = make_raw_volumes(1)
    client = aws.client()
    client.modify_volume(VolumeId=volume_id, Size=5)

    with pytest.raises(ClientError) as shrink:
        client.modify_volume(VolumeId=volume_id, Size=2)
    with pytest.raises(ClientError) as bogus:
        client.modify_volume(VolumeId=volume_id, VolumeType="gp9")

    assert error_code(shrink) == "InvalidParameterValue"
    assert error_code(bogus) == "InvalidParameterValue"
    assert client.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Size"] == 5


def test_injected_failure_is_used_up(aws: Aws) -> None:
    aws.strict.fail("UnauthorizedOperation", "Not allowed.", action="DescribeVolumes")
    client = aws.client()

    with pytest.raises(ClientError) as raised:
        client.describe_volumes()
    client.describe_volumes()

    assert error_code(raised) == "UnauthorizedOperation"
    assert aws.strict.count("DescribeVolumes") == 2
