"""``python -m benchmarks NAME [args]``: run one benchmark; ``python -m benchmarks`` lists them."""

from __future__ import annotations

import importlib
import signal
import sys

BENCHMARKS = {
    "devcluster": "cold build of the cluster binaries; devcluster up to ready",
    "node": "pod create to Running on the stand-in node",
    "launcher": "virt-launcher start to domain running and first console byte; launcher RSS",
    "controller": "many VMs at once: seconds until every VMI is scheduled, API writes per VMI, controller RSS",
    "api": "admission latency under concurrent creates; subresource call latency",
    "density": "VMIs created 100 ms apart: creation -> Running distribution (chart) and memory per VM",
    "handler": "VMIs created together on one node: Scheduled -> Running; handler RSS and CPU with them idle",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print("usage: python -m benchmarks NAME [options]\n")
        for name, what in BENCHMARKS.items():
            print(f"  {name:12} {what}")
        return 0 if not argv else 2
    # SIGTERM (e.g. from `timeout`) unwinds like Ctrl+C, so every benchmark's cleanup still runs.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    module = importlib.import_module(f"benchmarks.{argv[0]}")
    return int(module.main(argv[1:]))


raise SystemExit(main(sys.argv[1:]))
