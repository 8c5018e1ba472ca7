"""`python -m bench [name ...]`: run benchmarks and write bench/results/<name>.{json,md}."""

from __future__ import annotations

import argparse
import sys

from bench import autoscale_bench, runtime_bench, scale_bench

BENCHES = {"runtime": runtime_bench.main, "scale": scale_bench.main, "autoscale": autoscale_bench.main}


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench")
    parser.add_argument("names", nargs="*", default=list(BENCHES), help=f"any of {', '.join(BENCHES)}")
    args = parser.parse_args()
    for name in args.names:
        if name not in BENCHES:
            parser.error(f"unknown benchmark {name!r}")
        BENCHES[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
