"""Data-parallel training on every local device and across machines, on JAX's own runtime.

One device (the default) keeps `rnnkit train`'s single-device path untouched. With several
devices, `train` lays them out as a 1-D mesh with one axis, "batch":

    global batch [B, time, features]   sharded over "batch": each device holds B / n rows
    parameters, optimizer state        replicated: every device holds all of them
    gradients                          the loss is the mean over the global batch, so XLA
                                       all-reduces the per-device gradient sums in the step

so each step computes what the single-device step computes, up to the order in which the
per-device partial sums are added.

Several processes (one per machine, or per GPU) join through `jax.distributed.initialize`,
which must run before any JAX computation: `initialize` below does that, and switches the CPU
backend's cross-process collectives to gloo (XLA's CPU client has none otherwise). Every
process then sees every device; each builds the same mesh, cuts only its own rows of each
global batch (`DataParallel.local_rows`), and hands them to
`jax.make_array_from_process_local_data`. Only process 0 writes the run directory.

A process that dies makes the next collective of the others fail ("Gloo all-reduce failed:
Connection closed by peer"); `train` turns that into `PeerLost`. Where a failure gives no
such error (a machine that vanishes without closing its connections), the coordination
service's heartbeat ends the survivors after `Cluster.heartbeat_timeout` seconds.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from rnnkit import _native
from rnnkit._version import __version__
from rnnkit.errors import ConfigError

BATCH_AXIS = "batch"

# Environment variables by which a cluster launcher says how many processes a job has; JAX's
# own cluster detection (jax.distributed.initialize with no arguments) reads the same ones.
_CLUSTER_SIZE_VARIABLES = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE")


class DistributedError(RuntimeError):
    """The processes of a multi-process run could not start together, or lost each other."""


class PeerLost(DistributedError):
    """Another process of the run stopped (killed, crashed, lost its machine) during training.
    Nothing was saved after the failure; the last checkpoint is intact."""

    def __init__(self, message: str, step: int, last_checkpoint: int | None):
        super().__init__(message)
        self.step, self.last_checkpoint = step, last_checkpoint


@dataclass(frozen=True)
class Cluster:
    """How this process joins a multi-process run (`jax.distributed.initialize`'s arguments).

    Left as None, coordinator, process count and id come from the cluster's environment
    (SLURM, Open MPI, ...), as `jax.distributed.initialize` detects them."""

    coordinator_address: str | None = None  # HOST:PORT of process 0, where the coordination service listens
    num_processes: int | None = None  # processes in the run
    process_id: int | None = None  # this process, 0 .. num_processes - 1
    initialization_timeout: int = 300  # seconds to wait for every process to join (JAX's default)
    # Seconds without a heartbeat before the coordination service declares a process dead and
    # ends the others; JAX's default is 100, shorter here so a lost machine stops the run sooner.
    heartbeat_timeout: int = 30

    def validate(self) -> None:
        n, i = self.num_processes, self.process_id
        if n is not None and n < 1:
            raise ConfigError(f"--num-processes must be a positive integer; got {n}")
        if i is not None and i < 0:
            raise ConfigError(f"--process-id must be 0 or more; got {i}")
        if n is not None and i is not None and i >= n:
            raise ConfigError(f"--process-id must be below --num-processes {n} (0 .. {n - 1}); got {i}")
        if self.coordinator_address is not None:
            parse_address(self.coordinator_address)
        given = {"--coordinator": self.coordinator_address, "--num-processes": n, "--process-id": i}
        if (n is None or n > 1) and not cluster_environment() and any(v is not None for v in given.values()):
            missing = [flag for flag, value in given.items() if value is None]
            if missing:
                raise ConfigError(
                    f"several processes need --coordinator HOST:PORT (process 0's), --num-processes and "
                    f"--process-id, unless a cluster launcher such as srun sets them; missing {', '.join(missing)}"
                )

    def wanted(self) -> bool:
        """Whether this asks for more than one process (explicitly or through the environment)."""
        if self.num_processes is not None:
            return self.num_processes > 1
        return self.coordinator_address is not None or cluster_environment()


def parse_address(address: str) -> tuple[str, int]:
    match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^:\s]+):(\d+)", address)
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise ConfigError(f"--coordinator must be HOST:PORT (e.g. 10.0.0.1:1234); got {address!r}")
    return match.group(1), int(match.group(2))


def cluster_environment() -> bool:
    """Whether a cluster launcher started this process as one of several."""
    for name in _CLUSTER_SIZE_VARIABLES:
        try:
            if int(os.environ.get(name, "1")) > 1:
                return True
        except ValueError:
            continue
    return False


def initialize(cluster: Cluster) -> None:
    """Join the multi-process run `cluster` describes. Call before any JAX computation, once.

    Sets gloo as the CPU backend's cross-process collectives (a no-op for GPU and TPU
    backends, which bring their own), then `jax.distributed.initialize`, which blocks until
    every process has connected or `cluster.initialization_timeout` has passed."""
    cluster.validate()
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=cluster.coordinator_address,
            num_processes=cluster.num_processes,
            process_id=cluster.process_id,
            initialization_timeout=cluster.initialization_timeout,
            heartbeat_timeout_seconds=cluster.heartbeat_timeout,
        )
    except (RuntimeError, ValueError) as err:  # jax raises both (timeouts, a backend already started)
        where = cluster.coordinator_address or "the cluster's coordinator"
        raise DistributedError(f"could not join the run through {where}: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def is_writer() -> bool:
    """Whether this process writes the run directory: process 0 (or the only process)."""
    return jax.process_index() == 0


def several_processes() -> bool:
    return jax.process_count() > 1


def abandon(code: int) -> NoReturn:
    """Exit now, without JAX's shutdown barrier: after a peer is lost the barrier would wait
    for it, then abort with a fatal log. Flushes Python's streams first."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def select_devices(devices: int | str | None) -> list[Any] | None:
    """The devices a run trains on, in mesh order (by process, then id); None for the
    single-device path (one process and --devices 1 or unset).

    `devices` is a count or "all". With several processes the default is "all", and a count
    must split evenly over them (each process gives the same number of its local devices)."""
    num_processes = jax.process_count()
    if devices is None:
        devices = "all" if num_processes > 1 else 1
    available = jax.devices()
    platform = available[0].platform
    if devices == "all":
        count = len(available)
    elif isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1:
        count = devices
    else:
        raise ConfigError(f"--devices must be a positive integer or 'all'; got {devices!r}")
    across = f" across {num_processes} processes" if num_processes > 1 else ""
    if count > len(available):
        raise ConfigError(
            f"--devices {count}: only {len(available)} {platform} device{'s' * (len(available) != 1)} "
            f"exist{'s' * (len(available) == 1)}{across}; use --devices {len(available)} (or all)"
        )
    if count % num_processes:
        raise ConfigError(
            f"--devices {count} must divide by the {num_processes} processes (each gives the same number); "
            f"nearest valid: {_nearest_multiples(count, num_processes)}"
        )
    if num_processes == 1 and count == 1:
        return None
    per_process = count // num_processes
    chosen = []
    for process in range(num_processes):
        local = sorted((d for d in available if d.process_index == process), key=lambda d: d.id)
        chosen.extend(local[:per_process])
    return chosen


def _nearest_multiples(value: int, of: int) -> str:
    below = value // of * of
    above = below + of
    return f"{below} or {above}" if below > 0 else str(above)


def check_batch_size(batch_size: int, num_devices: int, flag: str = "--batch-size") -> None:
    if batch_size % num_devices:
        raise ConfigError(
            f"{flag} {batch_size} must divide by {num_devices} devices; "
            f"nearest valid: {_nearest_multiples(batch_size, num_devices)}"
        )


class DataParallel:
    """A 1-D mesh over `devices`: how batches, parameters and the jitted functions are laid out."""

    def __init__(self, devices: Sequence[Any]):
        self.mesh = Mesh(np.array(devices), (BATCH_AXIS,))
        self.batch_sharding = NamedSharding(self.mesh, PartitionSpec(BATCH_AXIS))
        self.replicated = NamedSharding(self.mesh, PartitionSpec())

    @property
    def num_devices(self) -> int:
        return self.mesh.size

    def describe(self) -> str:
        processes = len({d.process_index for d in self.mesh.devices.flat})
        return f"mesh ('{BATCH_AXIS}': {self.num_devices}) over {processes} process{'es' * (processes != 1)}"

    def local_rows(self, batch_size: int) -> slice:
        """The rows of a global batch that this process's devices hold: the only ones it reads."""
        index_map = self.batch_sharding.addressable_devices_indices_map((batch_size,))
        starts = sorted(index[0].indices(batch_size)[:2] for index in index_map.values())
        for (_, stop), (start, _) in itertools.pairwise(starts):
            if stop != start:  # devices are ordered by process, so a process's rows are contiguous
                raise AssertionError(f"this process's rows of the batch are not contiguous: {starts}")
        return slice(starts[0][0], starts[-1][1])

    def global_batch(self, local: np.ndarray, batch_size: int) -> jax.Array:
        """One global [batch_size, ...] array, sharded over the mesh, from this process's rows."""
        return jax.make_array_from_process_local_data(self.batch_sharding, local, (batch_size, *local.shape[1:]))

    def replicate(self, tree: Any) -> Any:
        """Every array leaf of `tree` (the same values in every process) copied to every device."""

        def put(leaf: Any) -> Any:
            if not isinstance(leaf, jax.Array | np.ndarray):
                return leaf
            host = np.asarray(leaf)
            return jax.make_array_from_callback(host.shape, self.replicated, lambda index: host[index])

        return jax.tree_util.tree_map(put, tree)

    def jit(self, fn: Callable[..., Any], batch_args: Sequence[int], num_args: int, **kwargs: Any) -> Any:
        """`jax.jit(fn)` with the arguments at `batch_args` sharded over the batch, the others
        and every output replicated."""
        in_shardings = tuple(self.batch_sharding if i in batch_args else self.replicated for i in range(num_args))
        return jax.jit(fn, in_shardings=in_shardings, out_shardings=self.replicated, **kwargs)

    def eval_batch_size(self, eval_batch_size: int) -> int:
        """`eval_batch_size` rounded up to a multiple of the device count (padding fills it)."""
        return math.ceil(eval_batch_size / self.num_devices) * self.num_devices

    def predict_logits(self, predict: Any, params: Any, x: np.ndarray, eval_batch_size: int) -> np.ndarray:
        """Logits for all of x (every process holds all of x and gets all the logits), each chunk
        of `eval_batch_size` rows sharded over the mesh, the last one padded."""
        batch = self.eval_batch_size(eval_batch_size)
        rows = self.local_rows(batch)
        out = []
        for start in range(0, len(x), batch):
            chunk = x[start : start + batch]
            pad = batch - len(chunk)
            padded = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)]) if pad else chunk
            out.append(np.asarray(predict(params, self.global_batch(padded[rows], batch)))[: len(chunk)])
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


_PEER_FAILURE = re.compile(r"gloo|nccl|connection|peer|heartbeat|coordination|unavailable|barrier", re.IGNORECASE)


def lost_peer(err: BaseException) -> bool:
    """Whether an error raised by a step of a multi-process run says another process went away."""
    return jax.process_count() > 1 and _PEER_FAILURE.search(str(err)) is not None


def peer_lost(err: BaseException, step: int, last_checkpoint: int | None, run_dir: Any) -> PeerLost:
    count, me = jax.process_count(), jax.process_index()
    others = [p for p in range(count) if p != me]
    who = f"process {others[0]}" if len(others) == 1 else f"one of processes {', '.join(map(str, others))}"
    saved = (
        f"the last checkpoint (step {last_checkpoint}) in {run_dir} is intact; once every process is back, "
        f"continue with --run-dir {run_dir} --resume"
        if last_checkpoint is not None
        else "no checkpoint was saved yet"
    )
    return PeerLost(
        f"process {me} of {count} lost contact with {who} at step {step} ({_first_line(err)}); {saved}",
        step,
        last_checkpoint,
    )


@dataclass(frozen=True)
class Environment:
    """What `rnnkit env` reports."""

    rnnkit_version: str
    jax_version: str
    jaxlib_version: str
    python_version: str
    backend: str
    process_index: int
    process_count: int
    local_devices: list[str]
    global_devices: list[str]
    mesh: str  # the mesh `--devices` gives, or "one device: ..." for the single-device path
    batch_multiple: int  # the global batch must be a multiple of this
    native_kernel: str  # rnnkit's native CPU kernel: the build in use and why, or why there is none


def describe_environment(devices: int | str | None = None) -> Environment:
    """Versions, processes, devices and the mesh that `rnnkit train --devices devices` would use."""
    import platform

    import jaxlib

    chosen = select_devices(devices)
    if chosen is None:
        mesh, multiple = f"none: one device, {jax.devices()[0]} (the single-device path)", 1
    else:
        parallel = DataParallel(chosen)
        mesh, multiple = f"{parallel.describe()}: {', '.join(map(str, chosen))}", parallel.num_devices
    return Environment(
        rnnkit_version=__version__,
        jax_version=jax.__version__,
        jaxlib_version=jaxlib.__version__,
        python_version=platform.python_version(),
        backend=jax.default_backend(),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        local_devices=[str(d) for d in jax.local_devices()],
        global_devices=[str(d) for d in jax.devices()],
        mesh=mesh,
        batch_multiple=multiple,
        native_kernel=_native.describe(),
    )
