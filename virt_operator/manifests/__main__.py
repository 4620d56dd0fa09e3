"""Command line: ``python -m virt_operator.manifests DIR`` writes the install files; ``--check`` reports stale ones."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .files import COMMAND, stale_files, write_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m virt_operator.manifests", description=__doc__)
    parser.add_argument("directory", type=Path, help="the repository root: deploy/, bundle/, bundle.Dockerfile")
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed files are stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.directory)
        for name in stale:
            print(f"{args.directory / name}: stale; run {COMMAND}", file=sys.stderr)
        return 1 if stale else 0
    for name in write_all(args.directory):
        print(args.directory / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
