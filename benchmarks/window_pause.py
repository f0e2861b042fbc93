"""How a pause between steps changes one model's jaxdl step: back to back against after `--pause` seconds idle.

    python -m benchmarks.window_pause                       # airbench94, huge pages as jaxdl sets them
    JAXDL_HUGE_PAGES=0 python -m benchmarks.window_pause    # the same with glibc's 4 KB pages
    python -m benchmarks.window_pause --model transformer --pause 3 --steps 8

The step is `scripts.benchmark`'s jaxdl step of the case (the real task,
model, optimizer and batch, one CPU device). After two warm-up steps it times
`--rounds` rounds of `--steps` steps back to back, then the same with the
process asleep for `--pause` seconds before each step, and prints each step
in ms with the minor page faults it took (`ru_minflt`, the guest kernel's
count).

Why it exists: in `scripts.benchmark` every framework waits while the others
run their windows. On a virtual machine whose kernel reports free 2 MB blocks
to the host (free page reporting), a step after such a pause gets its memory
back from the host; with huge pages that cost shows up in the step time but
not in the guest's fault count. Hence one untimed step opens every benchmark
window (`scripts.benchmark.measure`). Results: benchmarks/RESULTS.md, "How to
read these numbers".
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

from jaxdl import backend


def timed_steps(run, steps: int, pause_s: float) -> list[tuple[float, int]]:
    """(ms, minor page faults) of each of `steps` calls of `run(1)`, each after `pause_s` seconds asleep."""
    out = []
    for _ in range(steps):
        if pause_s:
            time.sleep(pause_s)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        run(1)
        out.append(((time.perf_counter() - start) * 1e3, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults))
    return out


def main(argv: list[str] | None = None) -> int:
    from scripts import benchmark

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="airbench94", choices=sorted(benchmark.CASES))
    parser.add_argument("--pause", type=float, default=3.0, help="seconds asleep before each step (default 3)")
    parser.add_argument("--steps", type=int, default=4, help="steps per round (default 4)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per setting (default 2)")
    args = parser.parse_args(argv)

    backend.configure()
    print(f"huge pages {backend.describe()['huge_pages']}", flush=True)
    case = benchmark.CASES[args.model]
    run = benchmark.jaxdl_runner(benchmark.build(benchmark.compose(case.overrides), train_limit=2048), 1)
    run(1)  # compiles
    run(1)
    for pause_s in (0.0, args.pause):
        for _ in range(args.rounds):
            steps = timed_steps(run, args.steps, pause_s)
            print(
                f"{args.model}, pause {pause_s:g} s: steps {', '.join(f'{ms:.0f}' for ms, _ in steps)} ms; "
                f"minor faults {', '.join(str(faults) for _, faults in steps)}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    backend.restart_with_huge_pages()
    sys.exit(main())
