"""glmdata's benchmark suite: ``python -m bench`` (see bench/README.md).

Speed claims are ratios measured side by side in one run on one machine: every contender runs
several times, interleaved, on the same workload built from the real Glaive zh 1k rows. Results go
to stdout and to ``bench/RESULTS.md``.
"""
