"""Refresh of N AWS volumes and M run nodes: how many API calls one refresh makes, against moto.

The server is moto's ThreadedMotoServer on 127.0.0.1 with the strict layer of the tests, so
that DescribeVolumes pages and filters behave as on AWS. Credentials are fake, the instance
metadata service is disabled, and a botocore hook stops any request to another host. The
state contains N volumes of which `--vanished` were deleted out of band; the refresh goes through
engine.workflow.refresh, as plan and apply do, and API calls are counted with botocore's
`before-call` hook. With `--instances M`, the state also holds M run nodes (EC2 instances),
read with engine.workflow.refresh_nodes as plan and apply do.

    python -m bench.refresh_aws [--sizes 1000,5000] [--vanished 10] [--instances 200]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.server import ThreadedMotoServer

from bench.common import report
from engine.workflow import refresh, refresh_nodes
from providers.aws import AwsProvider, AwsSettings
from providers.registry import ProviderSet
from state.model import State
from tests.aws.strict_ec2 import StrictEc2

REGION = "eu-central-1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,5000", help="comma-separated volume counts")
    parser.add_argument("--vanished", type=int, default=10, help="volumes deleted outside volplan before the refresh")
    parser.add_argument("--instances", type=int, default=200, help="run nodes (EC2 instances) in the state")
    arguments = parser.parse_args()

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        with tempfile.TemporaryDirectory(prefix="volplan-bench-") as scratch, pytest.MonkeyPatch.context() as patch:
            isolate_from_aws(patch, f"http://{host}:{port}", scratch)
            StrictEc2().install(patch)
            for count in (int(size) for size in arguments.sizes.split(",")):
                measure(count, arguments.vanished, arguments.instances)
    finally:
        server.stop()


def isolate_from_aws(patch: pytest.MonkeyPatch, endpoint: str, scratch: str) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            patch.delenv(name)
    patch.setenv("AWS_ACCESS_KEY_ID", "testing")
    patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    patch.setenv("AWS_CONFIG_FILE", os.path.join(scratch, "no-aws-config"))
    patch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.path.join(scratch, "no-aws-credentials"))
    patch.setenv("AWS_ENDPOINT_URL", endpoint)


def measure(count: int, vanished: int, instance_count: int) -> None:
    backend = ec2_backends[DEFAULT_ACCOUNT_ID][REGION]
    backend.volumes.clear()
    backend.reservations.clear()
    ids = [backend.create_volume(size=1, zone_name=f"{REGION}a").id for _ in range(count)]
    for volume_id in ids[:vanished]:
        backend.delete_volume(volume_id)
    state = State.new()
    for index, volume_id in enumerate(ids):
        address = f"volume.v{index:06d}"
        state.resources[address] = {
            "address": address,
            "kind": "volume",
            "id": volume_id,
            "backend": "aws",
            "region": REGION,
            "provider": "aws",
        }

    add_nodes(state, backend, instance_count)

    calls: list[str] = []
    session = boto3.Session()
    session.events.register("before-call.ec2", lambda model, **kwargs: calls.append(model.name))
    session.events.register("before-send", only_local)
    providers = ProviderSet(kinds={"aws": "aws"}, factory=lambda kind, options: AwsProvider(AwsSettings(), session))

    started = time.perf_counter()
    facts = refresh(state, providers)
    nodes = refresh_nodes(state, providers)
    elapsed = time.perf_counter() - started

    found = sum(1 for value in facts.values() if value is not None)
    assert found == count - vanished, (found, count, vanished)
    assert sum(1 for value in nodes.values() if value is not None) == instance_count
    report(
        f"refresh of {count} AWS volumes ({vanished} vanished) and {instance_count} instances",
        f"{len(calls)} API calls ({', '.join(f'{calls.count(name)} {name}' for name in sorted(set(calls)))}), "
        f"{elapsed:.2f} s wall against moto",
        f"python -m bench.refresh_aws --sizes {count} --vanished {vanished} --instances {instance_count}",
    )


def add_nodes(state: State, backend: Any, count: int) -> None:
    """Add `count` running instances to moto and to the state as the nodes of one run."""
    if count == 0:
        return
    image = backend.describe_images()[0].id
    reservation = backend.run_instances(
        image, count, "", [], placement=f"{REGION}a", region_name=REGION, is_instance_type_default=True
    )
    for index, instance in enumerate(reservation.instances):
        address = f"run.bench.node[{index}]"
        state.resources[address] = {
            "address": address,
            "kind": "node",
            "id": instance.id,
            "run": "run.bench",
            "backend": "aws",
            "region": REGION,
            "provider": "aws",
        }


def only_local(request: Any, **kwargs: Any) -> None:
    host = urlsplit(request.url).hostname
    if host != "127.0.0.1":
        raise RuntimeError(f"the benchmark aimed a request at {host}")


if __name__ == "__main__":
    main()
