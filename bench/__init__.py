"""Benchmarks of fedjax_med.

Scripts (each prints a human table and, last, one JSON line): ``round_speed``
(the headline: one-jit round vs per-client loop vs centralized), ``algorithm_speed``
(every registered algorithm vs FedAvg), ``zoo`` (each model's round cost),
``analysis_speed`` (sharpness metrics vs an epoch); ``gpu.sh`` runs round_speed
on a lent GPU. Their parts: ``harness`` (interleaved timing, ratios, output),
``workload`` (the round's data, model and its three variants), ``chunks``
(chunk tuning), ``memory`` (compiled working memory), ``cohort`` (1,000 of
10,000 clients), ``first_round`` (quickstart time to first round).
"""
