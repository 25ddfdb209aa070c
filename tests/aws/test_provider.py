"""The AWS provider against the strict moto server: create, read, grow, retag, delete, refresh."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends

from engine.errors import ProviderError, VolumeNotFound
from providers.aws import LINEAGE_TAG, TOKEN_TAG, AwsProvider, client_token
from providers.base import VolumeSpec
from tests.aws.conftest import FAST, Aws

REGION = "eu-central-1"


def spec(
    name: str = "data", *, size_gb: int = 100, tags: dict[str, str] | None = None, **changes: object
) -> VolumeSpec:
    base = VolumeSpec(
        address=f"volume.{name}",
        name=name,
        backend="aws",
        region=REGION,
        availability_zone=None,
        size_gb=size_gb,
        tags=tags or {},
        lineage="7d7f0c59-5d2e-4d55-9d8e-5a0f4f7b1c11",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def server_tags(aws: Aws, volume_id: str, region: str = REGION) -> dict[str, str]:
    volume = aws.client(region).describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    return {tag["Key"]: tag["Value"] for tag in volume.get("Tags", [])}


def server_volume_count(aws: Aws, region: str = REGION) -> int:
    return len(aws.client(region).describe_volumes()["Volumes"])


def make_raw_volumes(count: int, region: str = REGION) -> list[str]:
    """Volumes made straight in moto's backend: arranging the server, not exercising the provider."""
    backend = ec2_backends[DEFAULT_ACCOUNT_ID][region]
    return [backend.create_volume(size=1, zone_name=f"{region}a").id for _ in range(count)]


# Create


def test_create_tags_and_defaults(aws: Aws) -> None:
    facts = aws.provider().create_volume(spec(tags={"team": "ml"}), "token-1")

    tags = server_tags(aws, facts.id)
    assert tags["Name"] == "data"
    assert tags["volplan:address"] == "volume.data"
    assert tags[LINEAGE_TAG] == "7d7f0c59-5d2e-4d55-9d8e-5a0f4f7b1c11"
    assert tags[TOKEN_TAG] == "token-1"
    assert tags["team"] == "ml"
    assert facts.tags == {"team": "ml"}
    assert facts.availability_zone == "eu-central-1a"
    assert facts.volume_type == "gp3"
    assert facts.size_gb == 100
    assert facts.region == REGION


def test_create_waits_through_creating(aws: Aws) -> None:
    aws.strict.creating_reads = 3

    facts = aws.provider().create_volume(spec(), "token-1")

    assert facts.status == "available"
    # One read per `creating` result, then the read that found the volume available.
    assert aws.count("DescribeVolumes") == 4


def test_create_timeout_records_creating_volume(aws: Aws, caplog: pytest.LogCaptureFixture) -> None:
    aws.strict.creating_reads = 10_000
    provider = aws.provider(replace(FAST, create_timeout=0.05, poll_interval=0.01))

    with caplog.at_level(logging.WARNING, logger="providers.aws"):
        facts = provider.create_volume(spec(), "token-1")

    assert facts.status == "creating"
    assert facts.id.startswith("vol-")
    assert any(facts.id in record.getMessage() for record in caplog.records)


def test_create_replayed_with_same_token(aws: Aws) -> None:
    provider = aws.provider()
    first = provider.create_volume(spec(), "token-1")

    # A new process after a crash: same token, fresh clients.
    second = aws.provider().create_volume(spec(), "token-1")

    assert second.id == first.id
    assert server_volume_count(aws) == 1
    assert aws.strict.count("CreateVolume") == 2


def test_create_with_new_token_makes_new_volume(aws: Aws) -> None:
    provider = aws.provider()
    first = provider.create_volume(spec(), "token-1")
    second = provider.create_volume(spec(), "token-2")

    assert second.id != first.id
    assert server_volume_count(aws) == 2


def test_create_token_reused_with_other_parameters(aws: Aws) -> None:
    provider = aws.provider()
    provider.create_volume(spec(), "token-1")

    with pytest.raises(ProviderError) as raised:
        provider.create_volume(spec(size_gb=200), "token-1")

    assert raised.value.title == "Idempotency token reused"
    assert "IdempotentParameterMismatch" in raised.value.detail
    assert "volume.data" in raised.value.detail


def test_client_token_at_most_64_characters() -> None:
    long_token = "x" * 100

    assert client_token("a" * 64) == "a" * 64
    assert len(client_token(long_token)) == 64
    assert client_token(long_token) == client_token(long_token)
    assert client_token(long_token) != client_token("y" * 100)


def test_create_with_long_token_is_idempotent(aws: Aws) -> None:
    provider = aws.provider()
    first = provider.create_volume(spec(), "t" * 80)
    second = provider.create_volume(spec(), "t" * 80)

    assert second.id == first.id
    assert provider.find_volumes_by_token(["t" * 80], [REGION])["t" * 80].id == first.id


def test_create_in_configured_zone(aws: Aws) -> None:
    facts = aws.provider().create_volume(spec(availability_zone="eu-central-1b"), "token-1")

    assert facts.availability_zone == "eu-central-1b"


def test_create_in_bogus_zone_rejected(aws: Aws) -> None:
    with pytest.raises(ProviderError) as raised:
        aws.provider().create_volume(spec(availability_zone="eu-central-1z"), "token-1")

    assert raised.value.title == "Invalid request to AWS"
    assert "InvalidParameterValue" in raised.value.detail
    assert "eu-central-1z" in raised.value.detail
    assert server_volume_count(aws) == 0


def test_create_with_bogus_type_rejected(aws: Aws) -> None:
    # AwsSettings.from_options rejects gp9, so the settings are built directly to reach AWS's check.
    provider = aws.provider(replace(FAST, volume_type="gp9"))

    with pytest.raises(ProviderError) as raised:
        provider.create_volume(spec(), "token-1")

    assert "InvalidParameterValue" in raised.value.detail
    assert "volumeType" in raised.value.detail


def test_create_rejects_reserved_tags(aws: Aws) -> None:
    for key in ("Name", "volplan:token", "aws:createdBy"):
        with pytest.raises(ProviderError) as raised:
            aws.provider().create_volume(spec(tags={key: "x"}), "token-1")
        assert raised.value.title == "Reserved tag"
        assert key in raised.value.detail
    assert aws.count("CreateVolume") == 0


def test_create_for_other_backend_rejected(aws: Aws) -> None:
    with pytest.raises(ProviderError) as raised:
        aws.provider().create_volume(spec(backend="gcp"), "token-1")

    assert "gcp" in raised.value.detail
    assert aws.count() == 0


# Read and refresh


def test_read_missing_volume(aws: Aws) -> None:
    with pytest.raises(VolumeNotFound) as raised:
        aws.provider().read_volume("vol-0123456789abcdef0", REGION)

    assert "vol-0123456789abcdef0" in raised.value.detail
    assert REGION in raised.value.detail


def test_read_strips_volplan_tags(aws: Aws) -> None:
    created = aws.provider().create_volume(spec(tags={"team": "ml"}), "token-1")

    facts = aws.provider().read_volume(created.id, REGION)

    assert facts.tags == {"team": "ml"}
    assert facts.token == "token-1"


def test_refresh_thousand_volumes_in_six_calls(aws: Aws) -> None:
    ids = make_raw_volumes(1000)
    vanished = make_raw_volumes(3)
    for volume_id in vanished:
        aws.client().delete_volume(VolumeId=volume_id)

    found = aws.provider().refresh_volumes(ids + vanished, dict.fromkeys(ids + vanished, REGION))

    assert set(found) == set(ids)
    assert aws.count() <= 6
    assert aws.calls == ["DescribeVolumes"] * aws.count()


def test_refresh_follows_short_pages(aws: Aws) -> None:
    ids = make_raw_volumes(250)
    aws.strict.page_cap = 60

    found = aws.provider().refresh_volumes(ids, dict.fromkeys(ids, REGION))

    assert set(found) == set(ids)
    # 200 ids in pages of 60 (4 calls), then 50 ids (1 call).
    assert aws.count("DescribeVolumes") == 5


def test_refresh_ignores_unrequested_volumes(aws: Aws) -> None:
    wanted = make_raw_volumes(2)
    make_raw_volumes(5)

    found = aws.provider().refresh_volumes(wanted, dict.fromkeys(wanted, REGION))

    assert set(found) == set(wanted)


def test_refresh_reads_each_region(aws: Aws) -> None:
    europe = make_raw_volumes(2, "eu-central-1")
    america = make_raw_volumes(3, "us-east-1")
    regions = {**dict.fromkeys(europe, "eu-central-1"), **dict.fromkeys(america, "us-east-1")}

    found = aws.provider().refresh_volumes(europe + america, regions)

    assert {found[volume_id].region for volume_id in america} == {"us-east-1"}
    assert {found[volume_id].region for volume_id in europe} == {"eu-central-1"}
    assert aws.count("DescribeVolumes") == 2


def test_refresh_without_any_region_fails_clearly(aws: Aws) -> None:
    with pytest.raises(ProviderError) as raised:
        aws.provider().refresh_volumes(["vol-0123456789abcdef0"])

    assert raised.value.title == "AWS region missing"
    assert "vol-0123456789abcdef0" in raised.value.detail


def test_find_by_token_across_chunks(aws: Aws) -> None:
    provider = aws.provider()
    made = {f"token-{index}": provider.create_volume(spec(f"v{index}"), f"token-{index}").id for index in range(3)}
    aws.calls.clear()
    tokens = [f"unused-{index}" for index in range(300)] + list(made)

    found = provider.find_volumes_by_token(tokens, [REGION])

    assert {token: facts.id for token, facts in found.items()} == made
    assert aws.calls == ["DescribeVolumes", "DescribeVolumes"]


# Update


def test_grow_calls_modify_volume(aws: Aws) -> None:
    provider = aws.provider()
    created = provider.create_volume(spec(), "token-1")

    updated = provider.update_volume(created.id, size_gb=200, tags=None, region=REGION)

    assert updated.size_gb == 200
    assert aws.client().describe_volumes(VolumeIds=[created.id])["Volumes"][0]["Size"] == 200
    assert aws.count("ModifyVolume") == 1


def test_retag_sets_and_removes_user_tags_only(aws: Aws) -> None:
    provider = aws.provider()
    created = provider.create_volume(spec(tags={"team": "ml", "stage": "dev", "keep": "1"}), "token-1")

    updated = provider.update_volume(created.id, size_gb=None, tags={"team": "research", "keep": "1"}, region=REGION)

    assert updated.tags == {"team": "research", "keep": "1"}
    tags = server_tags(aws, created.id)
    assert "stage" not in tags
    assert tags["team"] == "research"
    assert tags["Name"] == "data"
    assert tags[TOKEN_TAG] == "token-1"
    assert aws.count("CreateTags") == 1
    assert aws.count("DeleteTags") == 1
    assert aws.count("ModifyVolume") == 0


def test_shrink_refused_before_aws(aws: Aws) -> None:
    provider = aws.provider()
    created = provider.create_volume(spec(), "token-1")

    with pytest.raises(ProviderError) as raised:
        provider.update_volume(created.id, size_gb=50, tags=None, region=REGION)

    assert raised.value.title == "Volume cannot shrink"
    assert created.id in raised.value.detail
    assert aws.strict.count("ModifyVolume") == 0


def test_shrink_refused_by_server(aws: Aws) -> None:
    created = aws.provider().create_volume(spec(), "token-1")

    with pytest.raises(Exception, match="New size cannot be smaller"):
        aws.client().modify_volume(VolumeId=created.id, Size=50)


def test_grow_while_optimizing_refused(aws: Aws) -> None:
    aws.strict.optimizing = True
    provider = aws.provider()
    created = provider.create_volume(spec(), "token-1")
    provider.update_volume(created.id, size_gb=200, tags=None, region=REGION)

    with pytest.raises(ProviderError) as raised:
        provider.update_volume(created.id, size_gb=300, tags=None, region=REGION)

    assert raised.value.title == "Volume still being modified"
    assert "IncorrectModificationState" in raised.value.detail
    assert created.id in raised.value.detail
    assert "describe-volumes-modifications" in raised.value.detail


def test_grow_too_often_refused(aws: Aws) -> None:
    aws.strict.max_modifications = 1
    provider = aws.provider()
    created = provider.create_volume(spec(), "token-1")
    provider.update_volume(created.id, size_gb=200, tags=None, region=REGION)

    with pytest.raises(ProviderError) as raised:
        provider.update_volume(created.id, size_gb=300, tags=None, region=REGION)

    assert raised.value.title == "Volume modified too often"
    assert "VolumeModificationRateExceeded" in raised.value.detail


def test_update_of_vanished_volume(aws: Aws) -> None:
    with pytest.raises(VolumeNotFound):
        aws.provider().update_volume("vol-0123456789abcdef0", size_gb=10, tags=None, region=REGION)


# Delete


def test_delete_removes_volume(aws: Aws) -> None:
    provider = aws.provider()
    created = provider.create_volume(spec(), "token-1")

    provider.delete_volume(created.id, REGION)

    assert server_volume_count(aws) == 0


def test_delete_of_vanished_volume_succeeds(aws: Aws) -> None:
    provider = aws.provider()
    created = provider.create_volume(spec(), "token-1")
    aws.client().delete_volume(VolumeId=created.id)

    provider.delete_volume(created.id, REGION)

    assert aws.count("DeleteVolume") == 0


def test_delete_gone_between_read_and_delete(aws: Aws) -> None:
    provider = aws.provider()
    created = provider.create_volume(spec(), "token-1")
    aws.strict.fail("InvalidVolume.NotFound", f"The volume '{created.id}' does not exist.", action="DeleteVolume")

    provider.delete_volume(created.id, REGION)

    assert aws.count("DeleteVolume") == 1


def test_delete_while_attached_refused(aws: Aws) -> None:
    provider = aws.provider()
    created = provider.create_volume(spec(), "token-1")
    instance_id = attach_to_new_instance(aws, created.id)

    with pytest.raises(ProviderError) as raised:
        provider.delete_volume(created.id, REGION)

    assert raised.value.title == "Volume in use"
    assert created.id in raised.value.detail
    assert instance_id in raised.value.detail
    assert aws.count("DeleteVolume") == 0
    assert aws.client().describe_volumes(VolumeIds=[created.id])["Volumes"][0]["State"] == "in-use"


def test_delete_attached_meanwhile_refused_by_aws(aws: Aws) -> None:
    provider = aws.provider()
    created = provider.create_volume(spec(), "token-1")
    aws.strict.fail("VolumeInUse", f"Volume {created.id} is currently attached to i-0abc", action="DeleteVolume")

    with pytest.raises(ProviderError) as raised:
        provider.delete_volume(created.id, REGION)

    assert raised.value.title == "Volume in use"
    assert "VolumeInUse" in raised.value.detail
    assert created.id in raised.value.detail


def test_delete_refuses_volume_not_made_by_volplan(aws: Aws) -> None:
    outside = aws.client().create_volume(AvailabilityZone="eu-central-1a", Size=10)["VolumeId"]

    with pytest.raises(ProviderError) as raised:
        aws.provider().delete_volume(outside, REGION)

    assert raised.value.title == "Volume not created by volplan"
    assert server_volume_count(aws) == 1


def attach_to_new_instance(aws: Aws, volume_id: str) -> str:
    client = aws.client()
    image_id = client.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = client.run_instances(ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="t3.micro")
    instance_id: str = instance["Instances"][0]["InstanceId"]
    # AWS attaches only to a running instance; each describe moves the strict layer one step on.
    client.get_waiter("instance_running").wait(InstanceIds=[instance_id], WaiterConfig={"Delay": 0.01})
    client.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device="/dev/sdf")
    return instance_id


def test_provider_describes_settings() -> None:
    text = AwsProvider(FAST).describe()

    assert "standard" in text
    assert "5 attempts" in text
