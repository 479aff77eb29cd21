"""Benchmarks (not tests): `kd-explorer bench methods|schemes|throughput|protocol ...`."""
from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: kd-explorer bench {methods,schemes,throughput,protocol} [options]  (each takes -h)")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name in ("methods", "schemes"):
        from .compare import main as compare_main
        return compare_main(name, rest)
    if name == "throughput":
        from .throughput import main as throughput_main
        return throughput_main(rest)
    if name == "protocol":   # the CIFAR-100 benchmark protocol's configs (CRD recipe)
        from .protocol import main as protocol_main
        return protocol_main(rest)
    print(f"unknown benchmark {name!r}; choose methods, schemes, throughput or protocol", file=sys.stderr)
    return 2
