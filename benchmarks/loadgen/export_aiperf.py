"""Writes the load generator's workload as an aiperf `single_turn` dataset (JSONL).

    python -m benchmarks.loadgen.export_aiperf --num-requests 32 [workload flags] --out FILE

The cross-check must send the same workload as our own generator, so that a
disagreement between the two tools is about measuring, not about the requests:
request i has the kind, prompt and video length of the generator's request i
(and the same hot videos), but fresh videos of its own, so whichever tool runs
second does not hit an embedding cache the first one filled. aiperf passes
`data:` URLs through untouched.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.loadgen.options import add_workload_arguments, workload_spec
from benchmarks.loadgen.workload import CROSSCHECK, Workload

# Our request body's fields that aiperf should send verbatim (aiperf builds the rest).
SAMPLING_FIELDS = ("max_tokens", "min_tokens", "ignore_eos", "temperature")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen.export_aiperf")
    parser.add_argument("--num-requests", type=int, default=32)
    parser.add_argument("--out", type=Path, required=True)
    add_workload_arguments(parser)
    args = parser.parse_args(argv)
    workload = Workload(workload_spec(args))
    with args.out.open("w") as out:
        for index in range(args.num_requests):
            request = workload.request(index, CROSSCHECK)
            body = workload.body(request, model="")
            line = {"text": request.prompt, "extra": {k: body[k] for k in SAMPLING_FIELDS}}
            if (url := workload.media_url(request)) is not None:
                line["image" if request.kind == "image" else "video"] = url
            out.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
