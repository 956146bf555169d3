"""A chain of N do-nothing steps in Kubeflow Pipelines' local runner, timed.

Each step is a lightweight Python component that adds one to the value it is given and depends on
the previous step through that value. Runs with `SubprocessRunner(use_venv=False)`, KFP's fastest
local mode (one subprocess per step, no container, no per-step virtual environment), and by
default with `install_kfp_package=False`, so the steps skip the `pip install kfp` that a
lightweight component otherwise runs before its code: the figure is KFP's orchestration
overhead, not pip's. `--pip-install` measures the default behaviour instead.

Only the pipeline execution is timed (imports and pipeline definition are not). Prints one JSON
object: {"steps": N, "seconds": S, "per_step_ms": X}. Needs the kfp SDK (`scripts/setup --bench`
installs it into .venv-bench).

    .venv-bench/bin/python bench/kfp_chain.py --steps 200
"""

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--pip-install", action="store_true",
                    help="let every step pip-install kfp first (the lightweight-component default)")
    ap.add_argument("--verbose", action="store_true", help="show KFP's per-task log lines")
    args = ap.parse_args()
    if args.steps < 1:
        sys.exit("kfp_chain: --steps must be >= 1")

    from kfp import dsl, local

    @dsl.component(base_image="python:3.11", install_kfp_package=args.pip_install)
    def pass_along(x: int) -> int:
        return x + 1

    @dsl.pipeline(name="chain")
    def chain() -> int:
        task = pass_along(x=0)
        for _ in range(args.steps - 1):
            task = pass_along(x=task.output)
        return task.output

    with tempfile.TemporaryDirectory(prefix="kfp-chain-") as root:
        local.init(
            runner=local.SubprocessRunner(use_venv=False),
            pipeline_root=os.path.join(root, "outputs"),
        )
        # KFP logs several lines per task; keep them out of the JSON unless asked for.
        quiet = contextlib.nullcontext() if args.verbose else contextlib.redirect_stdout(io.StringIO())
        started = time.perf_counter()
        with quiet:
            result = chain()
        seconds = time.perf_counter() - started

    if result.output != args.steps:
        sys.exit(f"kfp_chain: the chain returned {result.output!r}, expected {args.steps}")
    print(json.dumps({
        "steps": args.steps,
        "seconds": round(seconds, 3),
        "per_step_ms": round(1000 * seconds / args.steps, 1),
    }))


if __name__ == "__main__":
    main()
