"""Fit the estimator's remaining constants on the fit split of tests/data/vllm_logs, only.

Run: .venv/bin/python bench/fit_terms.py
Prints each constant with the cases it came from; advisor/estimate.py carries the values
(rounded) and names this script. The check split is never read here.

The terms' shapes come from vLLM's code (advisor/estimate.py says where); what is fitted
is what the code cannot give: how many bytes a captured graph's kernel nodes take, what the
libraries hold outside torch, and the small base of the profiling pass.

- CUDA graphs: vLLM estimates per mode the first capture plus the second times the graphs
  left (gpu_model_runner.py::profile_cudagraph_memory). A piecewise graph has a piece per
  layer, so the fit is MiB per (layer × graph), the median over fit logs that print the
  estimate ("Estimated CUDA graph memory", 0.19) at tp 1; tp > 1 as the ratio of a tp-2
  log's estimate to the same model's tp-1 one.
- 0.24 on: the breakdown line gives peak activation (the transient peak of the profile
  run plus the graph estimate where vLLM applies one) and non-torch memory (0.27: one
  "consumed" figure with the weights). The base of the transient peak is what is left of
  peak activation after the modelled sampler or forward pass and graphs. In Model Runner
  V2's 0.25-0.28 (no graph estimate) a cold compile's peak is its kernel benchmark's copy of
  the embedding table (estimate.py COMPILE_SINCE, from Inductor's code, not fitted): what
  the fit logs print beyond it is shown, as a check of that term.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from vllm_cases import load_cases  # noqa: E402

from advisor.estimate import (  # noqa: E402
    GIB,
    batching,
    compile_peak_gib,
    graphs_after_the_first,
    graphs_in_reservation,
    profile_peak_gib,
)

POST_024 = (0, 24)
V2_ESTIMATE_SINCE = (0, 29)


def _graphs(case) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    s = case.settings
    batched, seqs = batching(case.target, s.tp, s.max_num_batched_tokens, s.max_num_seqs,
                             s.max_model_len or case.model.arch.native_context)
    return batched, seqs, graphs_after_the_first(batched, seqs)


def _transient(case, batched: int, seqs: int) -> float:  # type: ignore[no-untyped-def]
    return profile_peak_gib(case.model.arch, case.settings.tp, batched, seqs, case.version)


def main() -> None:
    fit = [c for c in load_cases() if c.split == "fit" and not c.skip and c.settings]
    per_graph: list[tuple[str, float]] = []
    v2_per_graph: list[tuple[str, float]] = []  # 0.29 on: Model Runner V2's own estimate
    by_model_tp: dict[tuple[str, int], float] = {}
    for c in fit:
        est = c.measured.cuda_graph_estimate_gib
        if est is None or c.settings.enforce_eager:
            continue
        _, _, graphs = _graphs(c)
        per = est * 1024 / (c.model.arch.layers * graphs)
        if c.version >= V2_ESTIMATE_SINCE:
            # V2 captures every PIECEWISE graph to estimate and extrapolates only FULL
            # (0.32: v1/worker/gpu/cudagraph_utils.py::profile_cudagraph_memory): another
            # measurement than the one GRAPH_MIB_PER_LAYER was fitted on; printed, not shipped
            if c.settings.tp == 1:
                v2_per_graph.append((c.name, per))
            continue
        by_model_tp[(c.model.id, c.settings.tp)] = est
        if c.settings.tp == 1:
            per_graph.append((c.name, per))
    mib = statistics.median(v for _, v in per_graph)
    print(f"GRAPH_MIB_PER_LAYER = {mib:.3f}  (median of {len(per_graph)}: "
          + ", ".join(f"{n} {v:.3f}" for n, v in per_graph) + ")")
    if v2_per_graph:
        # per case, not a median: V2's estimate holds its first capture's pool whole, so a
        # start of two capture sizes reads ten times a start of fifty (not shipped)
        print("MiB per layer and graph of V2's 0.29+ estimate (not shipped): "
              + ", ".join(f"{n} {v:.3f}" for n, v in v2_per_graph))
    ratios = [(m, est / by_model_tp[(m, 1)]) for (m, tp), est in by_model_tp.items()
              if tp > 1 and (m, 1) in by_model_tp]
    for m, r in ratios:
        print(f"GRAPH_TP_FACTOR = {r:.2f}  ({m}: tp 2 estimate over tp 1)")

    # 0.24 on: peak activation = the transient peak (+ the graph estimate where vLLM applies
    # one). On Model Runner V2's 0.25-0.28 there is none (estimate.py MRV2_NO_GRAPH_ESTIMATE),
    # and a cold compile's peak is the larger of the forward pass and its kernel benchmark's
    # buffers (compile_peak_gib): what it leaves of the printed peak is a check, not a fit
    late_graph, scratch, bases, non_torch = [], [], [], []
    consumed: list[tuple[str, float]] = []
    for c in fit:
        if c.version < POST_024 or c.measured.activation_gib is None:
            continue
        batched, seqs, graphs = _graphs(c)
        # what the printed peak holds beyond the forward pass or, cold, the benchmark's buffers
        bench = compile_peak_gib(c.model.arch, c.settings.tp, batched, c.version,
                                 c.settings.enforce_eager, c.settings.compile_cache)
        left = c.measured.activation_gib - max(bench, _transient(c, batched, seqs))
        if c.settings.enforce_eager:
            bases.append((c.name, left))
        elif not graphs_in_reservation(c.model.arch, c.version):
            if c.settings.compile_cache == "cold":
                scratch.append((c.name, left))
        else:
            late_graph.append((c.name, left * 1024 / (c.model.arch.layers * graphs)))
        if c.measured.non_torch_gib is not None and c.settings.tp == 1:
            non_torch.append((c.name, c.measured.non_torch_gib))
        # 0.27 prints weights and non-torch as one "consumed" figure: what a start that
        # compiled nothing new (warm cache, or eager) consumed beyond its weights
        if (c.measured.consumed_gib is not None and c.measured.weights_gib is not None
                and c.settings.tp == 1
                and (c.settings.enforce_eager or c.settings.compile_cache == "warm")):
            consumed.append((c.name, c.measured.consumed_gib - c.measured.weights_gib))
    if late_graph:
        print("MiB per layer and graph the 0.29+ peaks leave beyond the forward pass or the "
              "compile benchmark (not shipped): "
              + ", ".join(f"{n} {v:.3f}" for n, v in late_graph))
    if scratch:
        print("cold peak beyond compile_peak_gib (a check, GiB): "
              + ", ".join(f"{n} {v:+.3f}" for n, v in scratch))
    if bases:
        print(f"ACT_BASE_GIB (0.24+, eager) = {statistics.median(v for _, v in bases):.3f}  ("
              + ", ".join(f"{n} {v:+.3f}" for n, v in bases) + ")")
    # what the compiled 0.24+ starts leave unexplained, per compile-cache state, with the
    # flat compile term at 0 (the scratch charged): the residual of the KV pool (or of its
    # tokens) against the estimate
    import advisor.estimate as est_mod

    saved = est_mod.COMPILE_GIB
    est_mod.COMPILE_GIB = {"cold": 0.0, "warm": 0.0}
    est_mod._shared.cache_clear()
    left: dict[str, list[tuple[str, float]]] = {"cold": [], "warm": []}
    seen: set[tuple[object, ...]] = set()
    for c in fit:
        if c.version < POST_024 or c.settings.enforce_eager or c.failed:
            continue
        if graphs_in_reservation(c.model.arch, c.version):  # outside the window it was fitted in
            continue
        e = est_mod.estimate(c.model, c.ckpt, c.target, c.settings)
        if c.measured.kv_cache_gib is not None:
            miss = e.kv_cache_gib - c.measured.kv_cache_gib
        elif c.measured.kv_cache_tokens:
            miss = (e.kv_cache_tokens - c.measured.kv_cache_tokens) * e.kv_bytes_per_token / GIB
        else:
            continue
        # one entry per configuration: the same model and flags on the same card twice
        # (Qwen3-1.7B at utilizations 0.92 and 0.80) is one observation of what it leaves
        key = (c.ckpt.repo, c.target.gpu_name, c.settings.max_model_len, c.settings.max_num_seqs)
        if key not in seen:
            seen.add(key)
            left[c.settings.compile_cache].append((c.name, miss))
    est_mod.COMPILE_GIB = saved
    est_mod._shared.cache_clear()
    for state, misses in left.items():
        if misses:
            print(f"COMPILE_GIB[{state}] (0.24+) = "
                  f"{max(0.0, statistics.median(v for _, v in misses)):.3f}  ("
                  + ", ".join(f"{n} {v:+.2f}" for n, v in misses) + ")")
    if non_torch:
        print(f"NON_TORCH_GIB (0.24+, tp 1) = {statistics.median(v for _, v in non_torch):.3f}  ("
              + ", ".join(f"{n} {v:.2f}" for n, v in non_torch) + ")")
    if consumed:
        print(f"NON_TORCH_GIB (0.27, tp 1) = {statistics.median(v for _, v in consumed):.3f}  ("
              + ", ".join(f"{n} {v:.2f}" for n, v in consumed) + ")")


if __name__ == "__main__":
    main()
