"""`python -m rnnkit._native`: build rnnkit's native CPU kernel (see rnnkit/_native)."""

from __future__ import annotations

import sys

from rnnkit._native import NativeUnavailableError, build, unavailable_reason


def main() -> int:
    try:
        path = build()
    except NativeUnavailableError as e:
        print(f"rnnkit: native CPU kernel not built: {e}", file=sys.stderr)
        return 1
    reason = unavailable_reason()
    if reason is not None:
        print(f"rnnkit: native CPU kernel built at {path} but {reason}", file=sys.stderr)
        return 1
    print(f"rnnkit: native CPU kernel built: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
