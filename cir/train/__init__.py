"""Training both stages and the sparse heads: the loop, data, mining, the synthetic-only probes, the runner."""
