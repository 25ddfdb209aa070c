"""A crash harness: kill `volplan apply` at random moments and check that nothing is lost.

Each round rewrites the configurations, starts `volplan apply` as a real subprocess and sends
it a signal (SIGKILL by default) at a random moment. After every kill the state must parse and
every object the provider has must be accounted for, either by the state with the journal's
results folded in or by a journal intent's idempotency token. A last apply then runs to the end,
and the provider must hold exactly what is configured.

What is configured, and how the provider is compared with the state, comes from workloads.
`VolumeWorkload` covers volumes; `RunWorkload` covers two-node tasks with a volume per node,
their node folders and their mount links. Each workload checks only the addresses it owns,
so both can run in one project.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from providers.local import METADATA, STAGING_PREFIX, TRASH_PREFIX, VOLUME_ID
from providers.local_nodes import NODE_ID, NODE_METADATA
from state.journal import JournalContents, fold_results, read_journal
from state.model import State
from state.store import LocalStateStore

REPOSITORY = Path(__file__).resolve().parent.parent
STATE_FILE = "volplan.state.json"
# Files a killed apply may leave in the project folder besides the configurations.
_PROJECT_FILES = {STATE_FILE, f"{STATE_FILE}.backup", f"{STATE_FILE}.lock", f"{STATE_FILE}.journal"}
_STEP_LINE = re.compile(rb": (Creating|Destroying|Modifying)\.\.\.")
# CPython's own report when SIGINT arrives while it initializes (importing `site`, opening the
# standard streams). It exits 1 before any volplan code runs, so nothing was touched yet.
_STARTUP_FAILURE = "Fatal Python error: init_"


@dataclass
class World:
    """What a killed or finished apply left on disk, read the way the next command reads it."""

    project: Path
    local_root: Path
    state: State | None
    journal: JournalContents | None

    @property
    def folded(self) -> State | None:
        """The state with the journal's finished steps applied: what the next command starts from."""
        if self.journal is None or self.state is None:
            return self.state
        return fold_results(self.state, self.journal.results)

    @property
    def pending_tokens(self) -> set[str]:
        return {intent.token for intent in self.journal.pending} if self.journal else set()

    def volume_folders(self) -> dict[str, dict[str, object]]:
        """Every volume folder under the local root, by id, with its metadata."""
        found = {}
        for entry in sorted(self.local_root.iterdir()) if self.local_root.exists() else []:
            if VOLUME_ID.match(entry.name):
                found[entry.name] = json.loads((entry / METADATA).read_text())
        return found

    def node_folders(self) -> dict[str, dict[str, Any]]:
        """Every node folder under the local root's nodes/, by id, with its metadata."""
        folder = self.local_root / "nodes"
        found = {}
        for entry in sorted(folder.iterdir()) if folder.exists() else []:
            if NODE_ID.match(entry.name):
                found[entry.name] = json.loads((entry / NODE_METADATA).read_text())
        return found

    def leftover_folders(self) -> list[str]:
        """Temporary and trash folders of interrupted calls, of volumes and of nodes."""
        found: list[str] = []
        for folder in (self.local_root, self.local_root / "nodes"):
            if folder.exists():
                found.extend(
                    str(entry.relative_to(self.local_root))
                    for entry in folder.iterdir()
                    if entry.name.startswith((STAGING_PREFIX, TRASH_PREFIX))
                )
        return sorted(found)

    def stale_node_tokens(self) -> list[str]:
        """Token markers under nodes/.tokens whose node no longer exists."""
        tokens = self.local_root / "nodes" / ".tokens"
        live = set(self.node_folders())
        return sorted(
            marker.name
            for marker in (tokens.iterdir() if tokens.exists() else [])
            if marker.read_text().strip() not in live
        )

    def stray_project_files(self) -> list[str]:
        return sorted(
            entry.name
            for entry in self.project.iterdir()
            if entry.name not in _PROJECT_FILES and not entry.name.endswith(".dstack.yml")
        )


def read_world(project: Path, local_root: Path) -> World:
    """Read the state and journal as volplan does; a damaged file raises StateError."""
    store = LocalStateStore(project / STATE_FILE)
    return World(project, local_root, store.read(), read_journal(store.journal_path))


class Workload(Protocol):
    """One kind of resource the harness configures and checks."""

    name: str

    def write_round(self, project: Path, rng: random.Random, *, final: bool) -> None:
        """Write this round's configurations; the final round configures everything."""

    def check(self, world: World, *, converged: bool) -> list[str]:
        """Describe every broken invariant; `converged` adds the strict end-of-run checks."""


@dataclass
class VolumeWorkload:
    """`count` volumes; each round leaves out a random share and grows some of them."""

    count: int = 200
    left_out: float = 0.2
    grown: float = 0.1
    name: str = "volumes"
    sizes: dict[str, int] = field(default_factory=dict)
    configured: set[str] = field(default_factory=set)

    def names(self) -> list[str]:
        return [f"v{index:03d}" for index in range(self.count)]

    def write_round(self, project: Path, rng: random.Random, *, final: bool) -> None:
        self.configured = set()
        for name in self.names():
            path = project / f"{name}.dstack.yml"
            if not final and rng.random() < self.left_out:
                path.unlink(missing_ok=True)
                continue
            # Sizes only grow, so no round requests a shrink that volplan would reject.
            self.sizes[name] = self.sizes.get(name, 1) + (1 if rng.random() < self.grown else 0)
            path.write_text(
                f"type: volume\nname: {name}\nbackend: aws\nregion: eu-central-1\nsize: {self.sizes[name]}GB\n"
            )
            self.configured.add(name)

    def check(self, world: World, *, converged: bool) -> list[str]:
        owned = {f"volume.{name}" for name in self.names()}
        problems = check_volume_folders(world, owned)
        if converged:
            problems.extend(self._check_converged(world, _recorded_volumes(world, owned)))
        return problems

    def _check_converged(self, world: World, recorded: dict[str, str]) -> list[str]:
        problems = []
        folders = _owned_folders(world, set(recorded.values()) | {f"volume.{name}" for name in self.names()})
        expected = {f"volume.{name}" for name in self.configured}
        if set(recorded.values()) != expected:
            missing = sorted(expected - set(recorded.values()))
            extra = sorted(set(recorded.values()) - expected)
            problems.append(f"state addresses differ from the configuration: missing {missing}, extra {extra}")
        for volume_id, address in sorted(recorded.items()):
            metadata = folders.get(volume_id)
            if metadata is None:
                problems.append(f"lost volume: {address} records {volume_id}, which does not exist")
                continue
            name = address.removeprefix("volume.")
            if metadata["size_gb"] != self.sizes.get(name):
                problems.append(f"{address}: size {metadata['size_gb']} GB, configured {self.sizes.get(name)} GB")
        for volume_id in sorted(set(folders) - set(recorded)):
            problems.append(f"orphan volume {volume_id} ({folders[volume_id].get('address')}) after convergence")
        return problems


_MOUNT_PATHS = ("/data", "/workspace/data")
_RUN_TEMPLATE = """type: task
name: {name}
nodes: 2
commands: [{command}]
volumes:
  - {name}-data-$<< dstack.node_rank >>:{path}
"""


@dataclass
class RunWorkload:
    """`count` two-node tasks, each node mounting its own volume (`NAME-data-0`, `NAME-data-1`).

    Each round leaves out a random share of the runs (and, for half of those, their volumes
    too), moves some mounts to another path and changes some runs' commands, so the applies
    start and stop nodes, attach and detach volumes, and delete volumes that were attached.
    """

    count: int = 20
    left_out: float = 0.25
    changed: float = 0.2
    name: str = "runs"
    paths: dict[str, str] = field(default_factory=dict)
    commands: dict[str, int] = field(default_factory=dict)
    configured: set[str] = field(default_factory=set)

    def names(self) -> list[str]:
        return [f"r{index:02d}" for index in range(self.count)]

    def volume_names(self, run: str) -> list[str]:
        return [f"{run}-data-{rank}" for rank in (0, 1)]

    def write_round(self, project: Path, rng: random.Random, *, final: bool) -> None:
        self.configured = set()
        for name in self.names():
            run_file = project / f"{name}.dstack.yml"
            if not final and rng.random() < self.left_out:
                run_file.unlink(missing_ok=True)
                if rng.random() < 0.5:
                    for volume in self.volume_names(name):
                        (project / f"{volume}.dstack.yml").unlink(missing_ok=True)
                continue

            for volume in self.volume_names(name):
                (project / f"{volume}.dstack.yml").write_text(
                    f"type: volume\nname: {volume}\nbackend: aws\nregion: eu-central-1\nsize: 1GB\n"
                )
            if name not in self.paths or rng.random() < self.changed:
                self.paths[name] = rng.choice(_MOUNT_PATHS)
            if rng.random() < self.changed:
                self.commands[name] = self.commands.get(name, 0) + 1
            command = f"python train.py --round {self.commands.get(name, 0)}"
            run_file.write_text(_RUN_TEMPLATE.format(name=name, command=command, path=self.paths[name]))
            self.configured.add(name)

    def owned_volumes(self) -> set[str]:
        return {f"volume.{volume}" for run in self.names() for volume in self.volume_names(run)}

    def check(self, world: World, *, converged: bool) -> list[str]:
        problems = check_volume_folders(world, self.owned_volumes())
        problems.extend(self._check_nodes(world))
        if converged:
            problems.extend(self._check_converged(world))
        return problems

    def _check_nodes(self, world: World) -> list[str]:
        """Checks that hold after any kill: no duplicate or unaccounted node, and no volume
        attached to a node that does not exist."""
        nodes = world.node_folders()
        by_address: dict[str, list[str]] = {}
        for node_id, metadata in nodes.items():
            by_address.setdefault(metadata["address"], []).append(node_id)
        problems = [f"duplicate nodes for {address}: {ids}" for address, ids in by_address.items() if len(ids) > 1]

        folded = world.folded
        recorded = {
            record["id"] for record in (folded.resources.values() if folded else []) if record.get("kind") == "node"
        }
        pending = world.pending_tokens
        for node_id, metadata in nodes.items():
            if node_id not in recorded and metadata.get("token") not in pending:
                problems.append(f"orphan node {node_id} ({metadata['address']}): not in the state or journal")

        for volume_id, metadata in world.volume_folders().items():
            attachments = metadata.get("attachments") or []
            assert isinstance(attachments, list)
            for node_id in attachments:
                if node_id not in nodes:
                    problems.append(
                        f"volume {volume_id} ({metadata.get('address')}) is attached to missing node {node_id}"
                    )
        return problems

    def _check_converged(self, world: World) -> list[str]:
        assert world.state is not None
        resources = world.state.resources
        problems = self._check_addresses(set(resources))
        nodes = world.node_folders()
        volumes = world.volume_folders()

        expected_nodes: dict[str, str] = {}
        for run in sorted(self.configured):
            for rank, volume in enumerate(self.volume_names(run)):
                node_address = f"run.{run}.node[{rank}]"
                node = resources.get(node_address)
                volume_record = resources.get(f"volume.{volume}")
                mount = resources.get(f"{node_address}.mount[{self.paths[run]}]")
                if node is None or volume_record is None or mount is None:
                    continue
                expected_nodes[node["id"]] = node_address
                problems.extend(
                    self._check_mount(world, node["id"], node_address, self.paths[run], volume_record["id"])
                )
                if mount.get("node_id") != node["id"] or mount.get("volume_id") != volume_record["id"]:
                    problems.append(
                        f"{node_address}.mount[{self.paths[run]}]: the state records the wrong ids: {mount}"
                    )
                attachments = (volumes.get(volume_record["id"]) or {}).get("attachments")
                if attachments != [node["id"]]:
                    problems.append(f"volume.{volume}: attached to {attachments}, configured on {node['id']}")

        for node_id in sorted(set(nodes) - set(expected_nodes)):
            problems.append(f"orphan node folder {node_id} ({nodes[node_id]['address']}) after convergence")
        for node_id, address in sorted(expected_nodes.items()):
            if node_id not in nodes:
                problems.append(f"lost node: {address} records {node_id}, which does not exist")
            elif nodes[node_id]["address"] != address:
                problems.append(f"{address}: node {node_id} was started for {nodes[node_id]['address']}")
        problems.extend(self._check_idle_volumes(volumes))
        if world.stale_node_tokens():
            problems.append(f"token markers of nodes that no longer exist: {world.stale_node_tokens()}")
        return problems

    def _check_addresses(self, addresses: set[str]) -> list[str]:
        expected = {f"volume.{volume}" for run in self.configured for volume in self.volume_names(run)}
        for run in self.configured:
            expected.add(f"run.{run}")
            for rank in (0, 1):
                expected |= {f"run.{run}.node[{rank}]", f"run.{run}.node[{rank}].mount[{self.paths[run]}]"}
        # Volumes of runs left out in the last round may stay configured on their own.
        owned = {a for a in addresses if a.startswith("run.")} | (addresses & self.owned_volumes())
        optional = {f"volume.{v}" for run in set(self.names()) - self.configured for v in self.volume_names(run)}
        missing = sorted(expected - owned)
        extra = sorted(owned - expected - optional)
        return (
            [f"state addresses differ from the runs configured: missing {missing}, extra {extra}"]
            if missing or extra
            else []
        )

    def _check_mount(self, world: World, node_id: str, address: str, path: str, volume_id: str) -> list[str]:
        """The node's root tree holds exactly one link, at `path`, to the volume's data folder,
        and node.json records exactly that mount."""
        problems = []
        root = world.local_root / "nodes" / node_id / "root"
        links = sorted("/" + str(link.relative_to(root)) for link in root.rglob("*") if link.is_symlink())
        if links != [path]:
            problems.append(f"{address}: links {links} in the root tree, configured {[path]}")
        target = world.local_root / volume_id / "data"
        link = root / path.lstrip("/")
        if link.is_symlink() and Path(os.readlink(link)) != target:
            problems.append(f"{address}: {path} links to {os.readlink(link)}, not to {target}")
        files = [
            str(entry.relative_to(root)) for entry in root.rglob("*") if entry.is_file() and not entry.is_symlink()
        ]
        if files:
            problems.append(f"{address}: files in the root tree that no mount made: {files}")
        recorded = world.node_folders()[node_id]["mounts"] if node_id in world.node_folders() else {}
        if sorted(recorded) != [path] or recorded[path].get("volume_id") != volume_id:
            problems.append(f"{address}: node.json records mounts {recorded}, configured {path} -> {volume_id}")
        return problems

    def _check_idle_volumes(self, volumes: dict[str, dict[str, object]]) -> list[str]:
        """Volumes of runs that are not configured are attached nowhere."""
        idle = {f"volume.{v}" for run in set(self.names()) - self.configured for v in self.volume_names(run)}
        return [
            f"{metadata['address']}: attached to {metadata['attachments']}, but its run is not configured"
            for metadata in volumes.values()
            if metadata.get("address") in idle and metadata.get("attachments")
        ]


def check_volume_folders(world: World, owned: set[str]) -> list[str]:
    """Report duplicate volume folders for one address, and folders that neither the state
    nor a pending journal intent accounts for, among the volumes at the `owned` addresses."""
    folders = _owned_folders(world, owned)
    by_address: dict[object, list[str]] = {}
    for volume_id, metadata in folders.items():
        by_address.setdefault(metadata.get("address"), []).append(volume_id)
    problems = [f"duplicate volumes for {address}: {ids}" for address, ids in by_address.items() if len(ids) > 1]

    recorded = _recorded_volumes(world, owned)
    pending = world.pending_tokens
    for volume_id, metadata in folders.items():
        if volume_id not in recorded and metadata.get("token") not in pending:
            problems.append(f"orphan volume {volume_id} ({metadata.get('address')}): not in the state or journal")
    return problems


def _owned_folders(world: World, owned: set[str]) -> dict[str, dict[str, object]]:
    return {
        volume_id: metadata
        for volume_id, metadata in world.volume_folders().items()
        if metadata.get("address") in owned
    }


def _recorded_volumes(world: World, owned: set[str]) -> dict[str, str]:
    """Volume id -> address for the owned volumes in the state with the journal folded in."""
    folded = world.folded
    return {
        record["id"]: address
        for address, record in (folded.resources.items() if folded else [])
        if record.get("kind") == "volume" and address in owned
    }


@dataclass
class RoundResult:
    """One apply that received a signal (or finished first)."""

    index: int
    mode: str
    delay: float
    signalled: bool
    exit_code: int
    output: str
    problems: list[str]


@dataclass
class CrashRun:
    """Everything one seed did, for assertions and for the long script's figures."""

    seed: int
    rounds: list[RoundResult] = field(default_factory=list)
    final_output: str = ""
    final_exit_code: int = 0
    final_plan_exit_code: int = 0
    final_problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def problems(self) -> list[str]:
        found = [f"round {r.index}: {problem}" for r in self.rounds for problem in r.problems]
        found.extend(f"final: {problem}" for problem in self.final_problems)
        return found

    def count_in_outputs(self, text: str) -> int:
        """How many lines of every apply's output contain `text` (recovery reports, for figures)."""
        outputs = [r.output for r in self.rounds] + [self.final_output]
        return sum(line.count(text) for output in outputs for line in output.splitlines())


def volplan_command(project: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "engine", "-C", str(project), *args]


def _environment(local_root: Path, extra: dict[str, str] | None) -> dict[str, str]:
    env = {**os.environ, "VOLPLAN_LOCAL_ROOT": str(local_root), "NO_COLOR": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), env.get("PYTHONPATH")]))
    env.update(extra or {})
    return env


def start(
    command: Sequence[str], local_root: Path, log: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start volplan with its output in a file: a pipe could fill up and stall the child."""
    with log.open("wb") as handle:
        return subprocess.Popen(
            list(command),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_environment(local_root, extra_env),
        )


def wait_for(log: Path, pattern: re.Pattern[bytes], process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait until the output matches `pattern`; False if the process ended or time ran out first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pattern.search(log.read_bytes()):
            return True
        if process.poll() is not None:
            return bool(pattern.search(log.read_bytes()))
        time.sleep(0.002)
    return False


def signal_apply(
    project: Path,
    local_root: Path,
    log: Path,
    rng: random.Random,
    *,
    number: signal.Signals,
    max_delay: float,
    parallelism: int,
) -> tuple[str, float, bool, int]:
    """Run one apply and signal it at a random moment; return (mode, delay, signalled, exit code).

    Half the rounds count the delay from the start, so that kills also land in start-up,
    recovery and planning. The others count it from the first step's progress line, so that
    more kills land among the provider calls and the final save.
    """
    process = start(volplan_command(project, "apply", "-y", "--parallelism", str(parallelism)), local_root, log)
    mode = rng.choice(("from start", "from first step"))
    delay = rng.uniform(0.0, max_delay)
    if mode == "from first step":
        # The steps of one round take a fraction of the whole process's life.
        delay *= 0.4
        wait_for(log, _STEP_LINE, process, timeout=30)
    try:
        exit_code = process.wait(timeout=delay)
        return mode, delay, False, exit_code
    except subprocess.TimeoutExpired:
        process.send_signal(number)
    return mode, delay, True, process.wait(timeout=60)


def _expected_exit_codes(number: signal.Signals | None) -> set[int]:
    """Exit codes an apply may end with: 0 when it finished first, or what the signal causes.

    volplan exits 130 or 143 once it handles SIGINT or SIGTERM; before its handlers are in
    place, or after they are removed, the process dies by the signal itself.
    """
    if number is None:
        return {0}
    handled = {signal.SIGINT: {130}, signal.SIGTERM: {143}}.get(number, set())
    return {0, -number} | handled


def run_crash_rounds(
    project: Path,
    local_root: Path,
    workloads: Sequence[Workload],
    *,
    seed: int,
    rounds: int,
    number: signal.Signals = signal.SIGKILL,
    max_delay: float = 0.5,
    scratch: Path,
) -> CrashRun:
    """Signal `rounds` applies on top of each other, then let one finish and check convergence."""
    rng = random.Random(seed)
    result = CrashRun(seed)
    started = time.monotonic()
    for index in range(1, rounds + 1):
        for workload in workloads:
            workload.write_round(project, rng, final=False)
        log = scratch / f"round-{index}.log"
        parallelism = rng.choice((1, 4, 10, 32))
        mode, delay, signalled, exit_code = signal_apply(
            project, local_root, log, rng, number=number, max_delay=max_delay, parallelism=parallelism
        )
        world = read_world(project, local_root)
        problems = [problem for workload in workloads for problem in workload.check(world, converged=False)]
        output = log.read_text(errors="replace")
        if exit_code not in _expected_exit_codes(number if signalled else None) and not (
            signalled and _STARTUP_FAILURE in output
        ):
            problems.append(f"apply exited {exit_code} (signalled: {signalled}):\n{output[-2000:]}")
        result.rounds.append(RoundResult(index, mode, delay, signalled, exit_code, output, problems))

    for workload in workloads:
        workload.write_round(project, rng, final=True)
    final = subprocess.run(
        volplan_command(project, "apply", "-y"),
        capture_output=True,
        text=True,
        env=_environment(local_root, None),
        timeout=300,
    )
    result.final_output = final.stdout + final.stderr
    result.final_exit_code = final.returncode
    plan = subprocess.run(
        volplan_command(project, "plan", "--detailed-exitcode"),
        capture_output=True,
        text=True,
        env=_environment(local_root, None),
        timeout=300,
    )
    result.final_plan_exit_code = plan.returncode

    world = read_world(project, local_root)
    result.final_problems = [problem for workload in workloads for problem in workload.check(world, converged=True)]
    if world.journal is not None:
        result.final_problems.append("the journal is still there after an apply that finished")
    if world.leftover_folders():
        result.final_problems.append(f"leftover folders under the local root: {world.leftover_folders()}")
    if world.stray_project_files():
        result.final_problems.append(f"stray files in the project folder: {world.stray_project_files()}")
    result.seconds = time.monotonic() - started
    return result
