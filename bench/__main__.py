"""`python -m bench [NAME…]`: run benchmarks (all by default) and print their ratios."""

from __future__ import annotations

import argparse
import asyncio

from bench import engine, gguf_header, proxy, pull

BENCHMARKS = {
    "engine": engine.main,
    "gguf_header": gguf_header.main,
    "proxy": proxy.main,
    "pull": pull.main,
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", choices=[[], *sorted(BENCHMARKS)], default=[])
    parser.add_argument("--rounds", type=int, default=30, help="interleaved repetitions")
    args = parser.parse_args()
    for name in args.names or sorted(BENCHMARKS):
        asyncio.run(BENCHMARKS[name](args.rounds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
