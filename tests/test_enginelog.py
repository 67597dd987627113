"""vLLM's start-up lines, read into figures, phases and classified failures."""

from __future__ import annotations

from pathlib import Path

from vllm_cases import compile_cache_of

from advisor.enginelog import Measured, read_failure, read_figure, read_phase, summarize

LOGS = Path(__file__).parent / "data" / "vllm_logs"


def test_cpu_engine_lines_from_vllm_032() -> None:
    m = Measured()
    read_figure("INFO [cpu_worker.py:230] Explicitly set (1.0/7.34) GiB for KV cache on node 0.", m)
    read_figure("INFO [kv_cache_utils.py:2328] CPU KV cache size: 1,048,576 tokens, Maximum "
                "concurrency for 256 tokens per request: 4096.00x", m)
    assert (m.kv_cache_gib, m.total_gib) == (1.0, 7.34)
    assert (m.kv_cache_tokens, m.max_model_len, m.max_concurrency) == (1_048_576, 256, 4096.0)


def test_auto_fit_line_gives_the_length_the_engine_chose() -> None:
    m = Measured()
    read_figure("Auto-fit max_model_len: reduced from 65536 to 32640 to fit in available KV cache "
                "memory (1.0 GiB CPU)", m)
    assert (m.auto_fit_from, m.max_model_len) == (65536, 32640)


def test_kv_pool_too_small_carries_vllms_suggested_length() -> None:
    f = read_failure("ValueError: To serve at least one request with the model's max seq len "
                     "(65536), (2.0 GiB KV cache is needed, which is larger than the available KV "
                     "cache memory (1.0 GiB). Based on the available memory, the estimated maximum "
                     "model length is 32640. Try increasing `gpu_memory_utilization`")
    assert f and f.kind == "kv_too_small" and f.suggested_max_model_len == 32640


def test_phases_in_start_up_order() -> None:
    lines = ["Starting to load model /tmp/tiny...", "Model loading took 0.01 GiB memory",
             "CPU KV cache size: 1,048,576 tokens", "Application startup complete."]
    assert summarize(lines).phases == ["loading_weights", "profiling", "allocating_kv_cache",
                                       "ready"]
    assert read_phase("nothing to see") is None


def test_a_published_gpu_log_gives_every_figure() -> None:
    text = (LOGS / "planner-v0190-llama31-8b-h100-tp1.log").read_text().splitlines()
    m = summarize(text).measured
    assert m.weights_gib == 14.99 and m.activation_gib == 1.89 and m.non_torch_gib == 0.25
    assert m.kv_cache_gib == 58.11 and m.kv_cache_tokens == 476_016
    assert m.max_model_len == 8192 and m.max_concurrency == 58.11
    assert m.cuda_graph_gib == 0.91 and m.requested_gib == 75.23 and m.total_gib == 79.19
    assert m.version == "0.19.0"


def test_the_memory_breakdown_of_recent_engines_is_read() -> None:
    # vLLM 0.28 on an RTX 5090 (tests/data/vllm_logs/rtx5090-qwen3-14b-awq-32k-v0280.log, unwrapped)
    m = Measured()
    for line in ["(EngineCore pid=1) INFO [gpu_worker.py:1] Free memory on device (30.86/31.36 GiB) on "
                 "startup. Desired GPU memory utilization is (0.7, 21.95 GiB). Actual usage is 11.22 GiB "
                 "for consumed memory (weights + non-torch), 1.46 GiB for peak activation, and 0.52 GiB "
                 "for CUDAGraph memory. Current kv cache memory in use is 9.27 GiB."]:
        assert read_figure(line, m)
    # the last figure is the graphs as captured, not the estimate the pool was sized with
    assert (m.total_gib, m.consumed_gib, m.activation_gib, m.cuda_graph_gib) == \
        (31.36, 11.22, 1.46, 0.52)
    assert m.cuda_graph_estimate_gib is None


def test_the_graph_estimate_and_the_compile_time_are_read() -> None:
    # vLLM 0.32's own wording (gpu_worker.py) and 0.27's (rtx4090-qwen3-8b-8k-warm-v0271.log)
    m = Measured()
    assert read_figure("INFO [gpu_worker.py:1] CUDA graph pool memory: 0.56 GiB (actual), "
                       "0.61 GiB (estimated), difference: 0.05 GiB (8.9%).", m)
    assert read_figure("(EngineCore pid=894) INFO 08-28 23:30:48 [monitor.py:53] "
                       "torch.compile took 0.30 s in total", m)
    assert (m.cuda_graph_gib, m.cuda_graph_estimate_gib, m.compile_s) == (0.56, 0.61, 0.30)


def test_the_compile_time_is_read_from_the_init_line_where_it_is_alone() -> None:
    # a log that kept only the engine's init line (rtx4090-qwen25-0p5b-2k-util085-wsl2-v0271.log)
    init = ("(EngineCore pid=14790) INFO 08-22 20:25:17 [core.py:348] init engine (profile, create "
            "kv cache, warmup model) took 4.68 s (compilation: 0.11 s)")
    m = Measured()
    assert read_figure(init, m)
    assert m.compile_s == 0.11
    # beside torch.compile's own line the first figure read stands
    m = Measured()
    read_figure("INFO [monitor.py:53] torch.compile took 35.49 s in total", m)
    read_figure(init.replace("0.11", "35.50"), m)
    assert m.compile_s == 35.49


def test_the_utilization_vllm_used_is_read_from_its_breakdown_line() -> None:
    # rtx4090-qwen3-8b-8k-warm-v0271.log: no --gpu-memory-utilization passed, 0.92 printed
    m = Measured()
    assert read_figure("(EngineCore pid=894) INFO [gpu_worker.py:789] Free memory on device "
                       "(22.64/23.52 GiB) on startup. Desired GPU memory utilization is (0.92, "
                       "21.64 GiB). Actual usage is 15.54 GiB for consumed memory (weights + "
                       "non-torch), 0.19 GiB for peak activation, and 0.56 GiB for CUDAGraph "
                       "memory.", m)
    assert (m.gpu_mem_util, m.total_gib, m.consumed_gib) == (0.92, 23.52, 15.54)


def test_the_compile_cache_is_read_from_its_own_hit_and_miss_lines() -> None:
    # vllm-project/vllm PR 17122's L40S log (l40s-llama31-8b-pr17122-v1.log): a cache hit
    # whose total took 6.41 s, longer than a warm total usually is; its own line says hit
    hit = summarize((LOGS / "l40s-llama31-8b-pr17122-v1.log").read_text().splitlines()).measured
    assert (hit.compile_cache_hit, hit.compile_s) == (True, 6.41)
    assert compile_cache_of(hit) == "warm"
    # 0.32's wording of a miss (compilation/backends.py): one graph compiled is a cold start,
    # whatever else loaded, and a short total does not make it warm
    m = Measured()
    read_figure("INFO [backends.py:296] Directly load the compiled graph(s) for compile range "
                "(1, 2048) from the cache, took 0.512 s", m)
    assert m.compile_cache_hit is True
    read_figure("INFO [backends.py:399] Compiling a graph for compile range (1, 8192) takes "
                "3.10 s", m)
    read_figure("INFO [monitor.py:20] torch.compile took 3.90 s in total", m)
    assert (m.compile_cache_hit, compile_cache_of(m)) == (False, "cold")
    # no line of either kind: the total decides, as before
    assert compile_cache_of(Measured(compile_s=0.30)) == "warm"
    assert compile_cache_of(Measured(compile_s=35.49)) == "cold"
    assert compile_cache_of(Measured()) == "cold"


def test_the_version_is_read_from_the_banner_where_no_engine_line_was_kept() -> None:
    # rtx4090-qwen3-8b-8k-cold-v0271.log's banner line, verbatim
    m = Measured()
    assert read_figure("(APIServer pid=130) INFO 08-28 23:28:00 [api_utils.py:345]  ▄▄ ▄█ █     █"
                       "     █ ▀▄▀ █  version 0.27.1", m)
    assert m.version == "0.27.1"
    m = Measured()
    read_figure("INFO 10-06 17:00:00 [core.py:1] Initializing a V1 LLM engine (v0.31.0) with "
                "config: model='meta-llama/Llama-3.1-8B-Instruct'", m)
    assert m.version == "0.31.0"
