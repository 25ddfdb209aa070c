"""Choosing the AWS provider and reading its settings from volplan.yml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import UsageError
from providers.aws import AwsProvider, AwsSettings
from providers.aws_nodes import NodeSettings
from providers.registry import PROVIDER_KINDS, default_factory, parse_provider_flag


def test_defaults_use_adaptive_retries() -> None:
    settings = AwsSettings.from_options({})

    assert settings.retry_mode == "adaptive"
    assert settings.volume_type == "gp3"
    assert settings.max_attempts == 10


def test_options_are_read() -> None:
    settings = AwsSettings.from_options(
        {"retry_mode": "standard", "max_attempts": 4, "create_timeout": "10m", "poll_interval": 2, "volume_type": "io2"}
    )

    assert settings == AwsSettings(
        retry_mode="standard", max_attempts=4, create_timeout=600, poll_interval=2, volume_type="io2"
    )


def test_node_options_are_read() -> None:
    options = {
        "ami": "ami-0abc",
        "instance_type": "t3.micro",
        "subnet_id": "subnet-1",
        "security_group_ids": ["sg-1"],
        "key_name": "ops",
        "start_timeout": "15m",
        "attach_timeout": "2m",
    }

    nodes = AwsSettings.from_options(options).nodes

    assert nodes == NodeSettings(
        ami="ami-0abc",
        instance_type="t3.micro",
        subnet_id="subnet-1",
        security_group_ids=("sg-1",),
        key_name="ops",
        start_timeout=900,
        attach_timeout=120,
    )


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"ami": "ami-1", "ami_ssm_parameter": "/aws/service/x"}, "providers.aws.ami_ssm_parameter"),
        ({"security_group_ids": [1]}, "providers.aws.security_group_ids"),
        ({"instance_type": ""}, "providers.aws.instance_type"),
        ({"attach_timeout": "1h30m"}, "providers.aws.attach_timeout"),
    ],
)
def test_invalid_node_option_named(options: dict[str, object], named: str) -> None:
    with pytest.raises(UsageError) as raised:
        AwsSettings.from_options(options)

    assert raised.value.title == "Invalid AWS provider setting"
    assert named in raised.value.detail


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"retry_mode": "eager"}, "providers.aws.retry_mode"),
        ({"max_attempts": 0}, "providers.aws.max_attempts"),
        ({"max_attempts": "3"}, "providers.aws.max_attempts"),
        ({"create_timeout": "1h30m"}, "providers.aws.create_timeout"),
        ({"poll_interval": 0}, "providers.aws.poll_interval"),
        ({"volume_type": "gp9"}, "providers.aws.volume_type"),
        ({"regoin": "eu-central-1"}, "providers.aws.regoin"),
    ],
)
def test_invalid_option_rejected(options: dict[str, object], named: str) -> None:
    with pytest.raises(UsageError) as raised:
        AwsSettings.from_options(options)

    assert named in raised.value.detail
    assert "volplan.yml" in raised.value.detail


def test_registry_makes_aws_provider() -> None:
    provider = default_factory("aws", {"retry_mode": "legacy"})

    assert "aws" in PROVIDER_KINDS
    assert parse_provider_flag("aws=aws") == ("aws", "aws")
    assert isinstance(provider, AwsProvider)
    assert provider.settings.retry_mode == "legacy"


def test_local_commands_never_import_boto3(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "data.dstack.yml").write_text(
        "type: volume\nname: data\nbackend: aws\nregion: eu-central-1\nsize: 1GB\n"
    )
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from engine.cli import cli\n"
        f"result = CliRunner().invoke(cli, ['-C', {str(project)!r}, 'plan'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('boto3', 'botocore')))\n"
    )

    completed = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={"VOLPLAN_LOCAL_ROOT": str(tmp_path / "root"), "PATH": "/usr/bin:/bin"},
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == "[]"
