"""Runs on AWS through the CLI: EC2 nodes, EBS attachments and detaches, against the strict moto server.

volplan runs in-process or as a subprocess that reaches the server through AWS_ENDPOINT_URL;
either way the server runs in this process, so a test can hold a detach stuck and release it.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.aws.conftest import Aws
from tests.aws.test_cli import records
from tests.conftest import run, volume_file, write

REGION = "eu-central-1"
TWO_NODE_TASK = """\
type: task
nodes: 2
commands: [python train.py]
volumes:
  - data-$<< dstack.node_rank >>:/data
"""
# One node with two volumes, so that a test can remove one mount while the node keeps running.
TWO_MOUNT_TASK = """\
type: task
commands: [python train.py]
volumes:
  - data:/data
  - scratch:/scratch
"""


def aws_run_project(aws: Aws, project: Path, *, instant: bool = False) -> None:
    """Serve aws with the AWS provider; with `instant`, instances and attachments skip their transitions."""
    image = aws.client().describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    write(
        project,
        "volplan.yml",
        "providers:\n  aws:\n    kind: aws\n    poll_interval: 1s\n    create_timeout: 60s\n"
        f"    ami: {image}\n    instance_type: t3.micro\n    key_name: ops\n",
    )
    aws.strict.creating_reads = 0
    if instant:
        # The detach tests need no start or attach timing, and each transition costs a 1s poll.
        aws.strict.nodes.pending_reads = aws.strict.nodes.attach_reads = aws.strict.nodes.terminating_reads = 0


def instances(aws: Aws) -> list[dict[str, Any]]:
    reservations = aws.client().describe_instances()["Reservations"]
    return [instance for reservation in reservations for instance in reservation["Instances"]]


def volume(aws: Aws, volume_id: str) -> dict[str, Any]:
    found: dict[str, Any] = aws.client().describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    return found


def line_of(output: str, text: str) -> int:
    lines = output.splitlines()
    return next(index for index, line in enumerate(lines) if text in line)


def test_two_node_task_on_aws(aws: Aws, project: Path) -> None:
    aws_run_project(aws, project)
    volume_file(project, "data-0", region=REGION, size="10GB")
    volume_file(project, "data-1", region=REGION, size="10GB")
    write(project, "train.dstack.yml", TWO_NODE_TASK)

    applied = run(project, "apply", "--provider", "aws=aws", "-y")

    assert applied.exit_code == 0, applied.output
    state = records(project)
    running = [instance for instance in instances(aws) if instance["State"]["Name"] == "running"]
    assert sorted(instance["InstanceId"] for instance in running) == sorted(
        state[f"run.train.node[{rank}]"]["id"] for rank in (0, 1)
    )
    for rank in (0, 1):
        node = state[f"run.train.node[{rank}]"]
        attached = volume(aws, state[f"volume.data-{rank}"]["id"])["Attachments"]
        assert [(a["InstanceId"], a["State"]) for a in attached] == [(node["id"], "attached")]
        assert attached[0]["Device"] == "/dev/sdf"
        assert state[f"run.train.node[{rank}].mount[/data]"]["volume_id"] == state[f"volume.data-{rank}"]["id"]
        # Each attach comes after the create of its volume and the start of its node.
        attach = line_of(applied.output, f"run.train.node[{rank}].mount[/data]: Attach complete")
        assert line_of(applied.output, f"volume.data-{rank}: Creation complete") < attach
        assert line_of(applied.output, f"run.train.node[{rank}]: Start complete") < attach
    tags = {tag["Key"]: tag["Value"] for tag in running[0]["Tags"]}
    assert tags["volplan:token"]
    assert running[0]["KeyName"] == "ops"
    assert running[0]["Placement"]["AvailabilityZone"] == "eu-central-1a"

    planned = run(project, "plan", "--provider", "aws=aws", "--detailed-exitcode")
    destroyed = run(project, "destroy", "--provider", "aws=aws", "-y")

    assert planned.exit_code == 0, planned.output
    assert destroyed.exit_code == 0, destroyed.output
    assert all(instance["State"]["Name"] == "terminated" for instance in instances(aws))
    assert aws.client().describe_volumes()["Volumes"] == []
    assert aws.strict.count("DeleteVolume") == 2
    assert aws.strict.nodes.deletes_while_attached == []


def test_stuck_detach_forced_after_stop_duration(aws: Aws, project: Path) -> None:
    aws_run_project(aws, project, instant=True)
    volume_file(project, "data", region=REGION, size="10GB")
    volume_file(project, "scratch", region=REGION, size="10GB")
    write(project, "train.dstack.yml", TWO_MOUNT_TASK + "stop_duration: 2s\n")
    assert run(project, "apply", "-y").exit_code == 0
    scratch = records(project)["volume.scratch"]["id"]
    aws.strict.nodes.hold_detach(scratch)

    write(project, "train.dstack.yml", TWO_MOUNT_TASK.replace("  - scratch:/scratch\n", "") + "stop_duration: 2s\n")
    started = time.monotonic()
    applied = run(project, "apply", "-y")
    elapsed = time.monotonic() - started

    assert applied.exit_code == 0, applied.output
    assert "did not finish within stop_duration 2s" in applied.stderr
    assert "A forced detach can corrupt the file system" in applied.stderr
    assert elapsed >= 2
    assert volume(aws, scratch)["State"] == "available"
    assert aws.strict.count("DetachVolume") >= 2
    assert "run.train.node[0].mount[/scratch]" not in records(project)
    assert volume(aws, records(project)["volume.data"]["id"])["State"] == "in-use"


def test_detach_off_waits_until_released(aws: Aws, project: Path) -> None:
    # A subprocess, so that this test can release the detach while the apply waits.
    aws_run_project(aws, project, instant=True)
    volume_file(project, "data", region=REGION, size="10GB")
    volume_file(project, "scratch", region=REGION, size="10GB")
    write(project, "train.dstack.yml", TWO_MOUNT_TASK + "stop_duration: off\n")
    assert run(project, "apply", "-y").exit_code == 0
    scratch = records(project)["volume.scratch"]["id"]
    aws.strict.nodes.hold_detach(scratch)
    write(project, "train.dstack.yml", TWO_MOUNT_TASK.replace("  - scratch:/scratch\n", "") + "stop_duration: off\n")

    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "apply", "-y"],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while aws.strict.count("DetachVolume") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.5)
        assert process.poll() is None
        assert volume(aws, scratch)["Attachments"][0]["State"] == "busy"
        aws.strict.nodes.release(scratch)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()

    assert process.returncode == 0, out + err
    assert "forced" not in err.lower()
    assert "run.train.node[0].mount[/scratch]: Detach complete" in out
    assert volume(aws, scratch)["State"] == "available"


def test_stop_terminates_then_detach_is_no_op(aws: Aws, project: Path) -> None:
    # Terminating the instance releases its volumes, so the detach after it finds nothing to do.
    aws_run_project(aws, project, instant=True)
    volume_file(project, "data", region=REGION, size="10GB")
    write(project, "train.dstack.yml", TWO_MOUNT_TASK.replace("  - scratch:/scratch\n", "") + "stop_duration: 2s\n")
    assert run(project, "apply", "-y").exit_code == 0
    data = records(project)["volume.data"]["id"]
    aws.strict.nodes.hold_detach(data)

    stopped = run(project, "stop", "train", "-y")

    assert stopped.exit_code == 0, stopped.output
    assert "forc" not in stopped.stderr.lower()
    assert aws.strict.count("DetachVolume") == 0
    assert [instance["State"]["Name"] for instance in instances(aws)] == ["terminated"]
    assert volume(aws, data)["State"] == "available"
    assert "run.train.node[0].mount[/data]" not in records(project)
