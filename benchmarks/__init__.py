"""python -m benchmarks — how fast lossbench's real training path is, against hand-written yardsticks.

Lives beside the package, not in it: it is never installed, and lossbench carries no hook for it.
It times lossbench only through what a user also has: ``lossbench.train.run(cfg, extra_callbacks=[...])``
(a public Lightning-callback parameter) and ``python -m lossbench.train``. See docs/benchmark.md.

- ``settings``  what a benchmark run measures, and the overrides of one timed job
- ``epochs``    the epoch variants (plain, plain-fused, lossbench, conventional), run inside a child
- ``children``  child processes: spawning, peak memory, ABBA rounds, pooling
- ``jobs``      whole jobs: start-up, memory, per-job overhead, the README's sweep before/after
- ``table``     ratios against the targets, the printed table, the machine
- ``main``      the command line
"""
