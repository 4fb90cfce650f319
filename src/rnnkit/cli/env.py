"""`rnnkit env`: versions, processes, devices and the mesh training would use."""

from __future__ import annotations

import argparse
from typing import Any

from rnnkit.cli._parser import Command, add_command, add_distributed_flags, join_processes

EPILOG = """examples:
  rnnkit env                      # versions, processes, devices, the native CPU kernel in use
  RNNKIT_NATIVE_ISA=avx2 rnnkit env   # force the kernel's AVX2 build (avx512, avx2, portable or auto)
  rnnkit env --devices all        # the mesh rnnkit train --devices all would use
  XLA_FLAGS=--xla_force_host_platform_device_count=4 rnnkit env --devices 4   # try meshes on a CPU
"""


def add_parser(commands: Any) -> None:
    p = add_command(
        commands, "env", help="versions, processes, devices and the device mesh training would use", epilog=EPILOG
    )
    add_distributed_flags(p)


def handle(args: argparse.Namespace) -> int:
    from rnnkit.workflows import distributed

    join_processes(args)
    env = distributed.describe_environment(args.devices)
    print(f"rnnkit {env.rnnkit_version}, jax {env.jax_version} (jaxlib {env.jaxlib_version})", end="")
    print(f", python {env.python_version}")
    print(f"backend: {env.backend}")
    print(f"process: {env.process_index} of {env.process_count}")
    print(f"local devices ({len(env.local_devices)}): {', '.join(env.local_devices)}")
    print(f"global devices: {len(env.global_devices)}")
    flag = "" if args.devices is None else f" (--devices {args.devices})"
    print(f"training mesh{flag}: {env.mesh}")
    print(f"--batch-size must be a multiple of {env.batch_multiple}")
    print(f"native CPU kernel: {env.native_kernel}")
    return 0


COMMAND = Command("env", add_parser, handle)
