"""`python -m rnnkit._native`: in a source checkout, build rnnkit's native CPU kernel into
src/rnnkit/_native for runs from src/ without installing (PYTHONPATH=src), with the same CMake
project the wheel's build runs; then say which build this CPU loads. Installed packages have
theirs from pip (`rnnkit env` says which is in use)."""

from __future__ import annotations

import sys

from rnnkit._native import SOURCE, NativeUnavailableError, build, describe, unavailable_reason


def main() -> int:
    try:
        paths = build(SOURCE.parents[2])
    except NativeUnavailableError as e:
        print(f"rnnkit: native CPU kernel not built: {e}", file=sys.stderr)
        return 1
    print("rnnkit: native CPU kernel built: " + ", ".join(p.name for p in paths) + f" in {paths[0].parent}")
    print(f"rnnkit: native CPU kernel: {describe()}")
    return 0 if unavailable_reason() is None else 1


if __name__ == "__main__":
    sys.exit(main())
