"""`rnnkit convert`: weights into a run directory from TF1, PyTorch, Keras or Flax, or out of one."""

from __future__ import annotations

import argparse
from typing import Any

from rnnkit.cli._parser import Command, Parser, add_command

EPILOG = """examples:
  rnnkit convert tf1 ckpt/model.ckpt-781 --out runs/from-tf1      # the seed's TF1 checkpoint
  rnnkit convert tf1 ckpt/ --cells lstm:128:forget_bias=0,gru:256 --out runs/x   # what names can't show
  rnnkit convert tf1 runs/seed3 --out ckpt/seed3.ckpt              # weights and Adam state, for TF1's Saver
  rnnkit convert torch runs/ra --out ra.pt    # a run trained with --cells lstm:128,gru_reset_after:256
  rnnkit convert torch model.safetensors --modules lstm,gru --out runs/from-torch
  rnnkit convert keras runs/seed3 --out seed3.npz                  # np.savez of get_weights() order
  rnnkit convert flax params.msgpack --out runs/from-flax          # Linen variables or an NNX state
  rnnkit convert flax runs/ra --style linen --out ra.msgpack       # (.safetensors: paths joined by /)
  rnnkit eval runs/from-tf1                                        # then use it like any run
"""


def image_shape(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 28x28; got {text!r}")
    return int(parts[0]), int(parts[1])


def add_parser(commands: Any) -> None:
    convert = add_command(
        commands,
        "convert",
        help="bring TF1 checkpoints, PyTorch, Keras or Flax weights into a run directory, or take a run's weights out",
        description="Convert weights exactly. Into rnnkit the result is a run directory for rnnkit eval / predict / "
        "train --resume (which fine-tunes with a fresh optimizer); out of rnnkit, a weights file.",
        epilog=EPILOG,
    )
    sources = convert.add_subparsers(dest="convert_source", required=True, metavar="FORMAT", parser_class=Parser)

    def common(p: Any, source_help: str) -> None:
        p.add_argument("source", metavar="SOURCE", help=source_help)
        p.add_argument("--out", required=True, help="run directory to create, or weights file to write")
        p.add_argument("--cells", default=None, help="the stack as kind:units[:options], when names can't show it")
        p.add_argument("--layout", choices=("rows", "pixels", "permuted-pixels"), default="rows")
        p.add_argument("--image-shape", type=image_shape, default=(28, 28), metavar="HxW", help="default 28x28")
        p.add_argument("--mode", choices=("static", "dynamic"), default="dynamic", help="how eval runs it")
        p.add_argument("--allow-unused", action="store_true", help="convert even if some names have no place")
        p.add_argument("--force", action="store_true", help="replace a non-empty --out")

    tf1 = sources.add_parser("tf1", help="a TF1 checkpoint (tf.compat.v1.train.Saver) <-> a run directory")
    common(tf1, "checkpoint prefix (model.ckpt-781), its .index file or its directory; or a run directory")
    tf1.add_argument("--scope", default="rnn", help="variable scope of the RNN (default rnn)")
    tf1.add_argument("--head", default=None, help="scope of the dense head (default: fully_connected or dense)")
    torch = sources.add_parser("torch", help="a PyTorch state_dict (.pt / .safetensors) <-> a run directory")
    common(torch, "a .pt/.safetensors state_dict (into a run directory), or a run directory (out to --out)")
    torch.add_argument("--modules", default=None, help="recurrent module prefixes in forward order, comma-separated")
    torch.add_argument("--head", default=None, help="prefix of the nn.Linear head (default fc)")
    torch.add_argument("--forget-bias", type=float, default=0.0, help="forget bias the LSTM cells add (default 0)")
    keras = sources.add_parser("keras", help="Keras 3 get_weights() lists (.npz) <-> a run directory")
    common(keras, "an .npz of get_weights() (np.savez(path, *weights)), or a run directory")
    keras.add_argument("--forget-bias", type=float, default=0.0, help="forget bias the LSTM cells add (default 0)")
    flax = sources.add_parser(
        "flax", help="Flax Linen / NNX parameter trees (.msgpack, .safetensors) <-> a run directory"
    )
    common(flax, "a .msgpack or .safetensors parameter tree (into a run directory), or a run directory")
    flax.add_argument("--modules", default=None, help="the cells' paths in forward order, comma-separated")
    flax.add_argument("--head", default=None, help="path of the dense head, where it is not the only one")
    flax.add_argument("--forget-bias", type=float, default=0.0, help="forget bias the LSTM cells add (default 0)")
    flax.add_argument("--style", choices=("nnx", "linen"), default="nnx", help="the tree written out (default nnx)")


def handle(args: argparse.Namespace) -> int:
    from rnnkit.workflows.convert import convert

    modules = getattr(args, "modules", None)
    done = convert(
        args.convert_source,
        args.source,
        args.out,
        cells=args.cells,
        scope=getattr(args, "scope", "rnn"),
        head=getattr(args, "head", None),
        modules=None if modules is None else [m.strip() for m in modules.split(",")],
        forget_bias=getattr(args, "forget_bias", 0.0),
        allow_unused=args.allow_unused,
        style=getattr(args, "style", "nnx"),
        layout=args.layout,
        image_shape=args.image_shape,
        mode=args.mode,
        force=args.force,
    )
    print(f"{done.source} -> {done.out}")
    conversion = done.conversion
    if conversion is None:
        return 0
    print(f"  cells {conversion.cells}, reading {conversion.input_size} features, {conversion.num_classes} classes")
    if conversion.adam is not None:
        print(f"  optimizer: TF1's Adam state after {conversion.adam.step} updates (train --resume continues it)")
    else:
        print("  optimizer: fresh (train --resume fine-tunes with a new Adam)")
    if conversion.skipped:
        print(f"  not converted ({len(conversion.skipped)}): {', '.join(conversion.skipped)}")
    print(f"  next: rnnkit eval {done.out}")
    return 0


COMMAND = Command("convert", add_parser, handle)
