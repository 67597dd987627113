"""GGUF files, written here with llama.cpp's own `gguf` package: read from the header alone,
estimated, and refused on the CPU engine with the nearest checkpoint that runs there."""

from __future__ import annotations

import os
from pathlib import Path

import gguf
import msgspec
import numpy as np
import pytest

from advisor.advice import estimate_for
from advisor.catalog import load_catalog
from advisor.errors import ModelNotFound
from advisor.gguf_file import find_cached, is_gguf_name, read_gguf
from advisor.profile import read_host
from advisor.specs import PlanRequest

Q = gguf.GGMLQuantizationType
GIB = 2**30


def _nbytes(kind: Q, elements: int) -> int:
    block, size = gguf.GGML_QUANT_SIZES[kind]
    return elements // block * size


def write_gguf(path: Path, *, arch: str, layers: int, hidden: int, ffn: int, heads: int,
               kv_heads: int, vocab: int, context: int, tied: bool = False,
               ftype: gguf.LlamaFileType = gguf.LlamaFileType.MOSTLY_Q4_K_M,
               name: str = "", meta: dict[str, str] | None = None) -> int:
    """A GGUF file of a decoder laid out as llama.cpp's Q4_K_M writes one (Q4_K linears, Q6_K
    down projections and head, F32 norms). Its data section is left sparse (zeros the
    filesystem does not store): only the header is meant to be read. Returns its data bytes."""
    w = gguf.GGUFWriter(path, arch)
    w.add_name(name or f"test-{arch}")
    for key, value in (meta or {}).items():  # e.g. general.base_model.0.repo_url
        w.add_string(key, value)
    w.add_file_type(int(ftype))
    w.add_block_count(layers)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_context_length(context)
    w.add_vocab_size(vocab)
    head_dim = hidden // heads
    q4, q6 = Q.Q4_K, Q.Q6_K
    if hidden % 256 or ffn % 256:  # k-quants need rows of 256: llama.cpp falls back to these
        q4, q6 = Q.Q5_0, Q.Q8_0
    tensors: list[tuple[str, Q, tuple[int, ...]]] = [("token_embd.weight", q4, (vocab, hidden)),
                                                     ("output_norm.weight", Q.F32, (hidden,))]
    if not tied:
        tensors.append(("output.weight", q6, (vocab, hidden)))
    for i in range(layers):
        b = f"blk.{i}."
        tensors += [(b + "attn_norm.weight", Q.F32, (hidden,)), (b + "ffn_norm.weight", Q.F32, (hidden,)),
                    (b + "attn_q.weight", q4, (heads * head_dim, hidden)),
                    (b + "attn_k.weight", q4, (kv_heads * head_dim, hidden)),
                    (b + "attn_v.weight", q6, (kv_heads * head_dim, hidden)),
                    (b + "attn_output.weight", q4, (hidden, heads * head_dim)),
                    (b + "ffn_gate.weight", q4, (ffn, hidden)),
                    (b + "ffn_up.weight", q4, (ffn, hidden)),
                    (b + "ffn_down.weight", q6, (hidden, ffn))]
    total = 0
    for name, kind, shape in tensors:
        n = _nbytes(kind, int(np.prod(shape)))
        total += n
        w.add_tensor_info(name, shape, np.dtype(np.float32), n, raw_dtype=kind)
    w.write_header_to_file(path)
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    header = path.stat().st_size
    align = 32  # GGUF's default alignment, of the data section and of each tensor in it
    data = sum(-(-_nbytes(k, int(np.prod(s))) // align) * align for _, k, s in tensors)
    os.truncate(path, -(-header // align) * align + data)
    return total


def test_a_gguf_header_gives_the_tensor_types_exact_bytes_and_the_architecture(tmp_path: Path) -> None:
    f = tmp_path / "tiny-Q4_K_M.gguf"
    written = write_gguf(f, arch="llama", layers=2, hidden=256, ffn=512, heads=4, kv_heads=2,
                         vocab=512, context=4096)
    g = read_gguf(f)
    assert g.weight_bytes == written
    assert g.file_type == "MOSTLY_Q4_K_M" and g.architecture == "llama"
    assert g.tensor_types == {"Q4_K": 1 + 2 * 5, "Q6_K": 1 + 2 * 2, "F32": 1 + 2 * 2}
    a = g.arch
    assert (a.architecture, a.layers, a.hidden_size, a.attention_heads, a.kv_heads, a.head_dim) == (
        "LlamaForCausalLM", 2, 256, 4, 2, 64)
    assert a.native_context == 4096 and a.vocab_size == 512 and not a.tied_embeddings


def test_a_gguf_of_a_catalog_model_is_estimated_then_refused_on_the_cpu_engine(tmp_path: Path) -> None:
    # Qwen2.5-0.5B-Instruct's shape (the catalog's qwen2.5-0.5b), as llama.cpp's Q4_K_M file
    # of it is laid out; the 0.4 GB data section is sparse on disk
    f = tmp_path / "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    written = write_gguf(f, arch="qwen2", layers=24, hidden=896, ffn=4864, heads=14, kv_heads=2,
                         vocab=151936, context=32768, tied=True)
    catalog = load_catalog()
    host = read_host()
    cpu = estimate_for(PlanRequest(model=str(f), gpus=0, max_model_len=4096), catalog, host, [])
    assert not cpu.fits
    assert "cannot load GGUF" in cpu.reason and "vllm-gguf-plugin" in cpu.reason
    assert "nearest that runs there: Qwen/Qwen2.5-0.5B-Instruct" in cpu.reason
    assert cpu.weights_gib == pytest.approx(written / GIB, abs=0.01)
    # KV per token from the header: 24 layers x 2 (K and V) x 2 heads x 64 x 2 bytes
    assert cpu.kv_bytes_per_token == 24 * 2 * 2 * 64 * 2
    # on a GPU (through the plugin) the same file is accounted as any checkpoint
    gpu = estimate_for(PlanRequest(model=str(f), gpu_gib=15.0, gpus=1, max_model_len=4096),
                       catalog, host, [])
    assert gpu.fits, gpu.reason
    # the same tensors; on the GPU also what torch's allocator rounds them up to and the
    # rotary cache (weights.py::load_overhead_bytes)
    assert gpu.weights_gib == pytest.approx(cpu.weights_gib, abs=0.02)
    assert gpu.weights_gib >= cpu.weights_gib and gpu.kv_cache_tokens > 4096


def test_a_gguf_named_by_repo_and_quant_is_read_from_the_hf_cache_only(tmp_path: Path) -> None:
    assert is_gguf_name("Qwen/Qwen2.5-7B-Instruct-GGUF:Q4_K_M") and is_gguf_name("/m/x.gguf")
    assert not is_gguf_name("Qwen/Qwen2.5-7B-Instruct") and not is_gguf_name("/m/folder")
    env = {"HF_HUB_CACHE": str(tmp_path / "hub")}
    with pytest.raises(ModelNotFound, match="no Q5_K_M GGUF file of org/m-GGUF in the Hugging Face cache"):
        find_cached("org/m-GGUF:Q5_K_M", env)
    snap = tmp_path / "hub" / "models--org--m-GGUF" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    write_gguf(snap / "m-q5_k_m.gguf", arch="llama", layers=2, hidden=256, ffn=512, heads=4,
               kv_heads=2, vocab=512, context=2048, ftype=gguf.LlamaFileType.MOSTLY_Q5_K_M)
    found = find_cached("org/m-GGUF:Q5_K_M", env)
    assert found.name == "m-q5_k_m.gguf" and read_gguf(found).file_type == "MOSTLY_Q5_K_M"


def test_a_file_that_is_not_gguf_is_refused_in_words(tmp_path: Path) -> None:
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(Exception, match=r"x.gguf: not a readable GGUF file"):
        read_gguf(bad)


def test_a_damaged_header_is_refused_in_words_whatever_bytes_changed(tmp_path: Path) -> None:
    import random

    from advisor.errors import ModelDirError

    good = tmp_path / "good.gguf"
    write_gguf(good, arch="llama", layers=2, hidden=256, ffn=512, heads=4, kv_heads=2, vocab=512,
               context=2048)
    header = good.read_bytes()[:4096]
    rng = random.Random(1)
    bad = tmp_path / "bad.gguf"
    for _ in range(60):
        damaged = bytearray(good.read_bytes())
        for _ in range(12):
            damaged[rng.randrange(8, len(header))] = rng.randrange(256)
        bad.write_bytes(bytes(damaged))
        try:
            read_gguf(bad)
        except ModelDirError as exc:
            assert "bad.gguf" in str(exc)


# ------------------------------------------------------- served on a GPU through the plugin

BASE = "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct"


def _qwen05(path: Path, **kw: object) -> Path:
    """Qwen2.5-0.5B-Instruct's shape (the catalog's qwen2.5-0.5b) as a Q4_K_M file."""
    write_gguf(path, arch="qwen2", layers=24, hidden=896, ffn=4864, heads=14, kv_heads=2,
               vocab=151936, context=32768, tied=True, **kw)  # type: ignore[arg-type]
    return path


def test_the_tokenizer_repo_comes_from_the_header_else_the_catalog(tmp_path: Path) -> None:
    from advisor.gguf_file import model_from_gguf

    catalog = load_catalog()
    based = _qwen05(tmp_path / "a.gguf", meta={"general.base_model.0.repo_url": BASE})
    ckpt = model_from_gguf(str(based), catalog).checkpoints[0]
    assert ckpt.tokenizer == "Qwen/Qwen2.5-0.5B-Instruct"
    assert ckpt.tokenizer_source.startswith("GGUF header general.base_model.0.repo_url")
    # the repo it was converted from comes before the model it was made from
    both = _qwen05(tmp_path / "b.gguf", meta={"general.source.repo_url": "org/tuned-0.5b",
                                               "general.base_model.0.repo_url": BASE})
    assert model_from_gguf(str(both), catalog).checkpoints[0].tokenizer == "org/tuned-0.5b"
    # no name in the header: the one catalog model of this architecture
    bare = model_from_gguf(str(_qwen05(tmp_path / "c.gguf")), catalog).checkpoints[0]
    assert bare.tokenizer == "Qwen/Qwen2.5-0.5B-Instruct"
    assert bare.tokenizer_source == "the catalog's qwen2.5-0.5b: the same architecture"
    # Qwen2.5 7B's shape is also Qwen2.5-Coder 7B's and the R1 distill's: the header's name
    # picks one, and without one that the catalog knows there is none
    seven = dict(arch="qwen2", layers=28, hidden=3584, ffn=18944, heads=28, kv_heads=4,
                 vocab=152064, context=32768)
    write_gguf(tmp_path / "d.gguf", name="Qwen2.5 Coder 7B Instruct", **seven)  # type: ignore[arg-type]
    coder = model_from_gguf(str(tmp_path / "d.gguf"), catalog).checkpoints[0]
    assert coder.tokenizer == "Qwen/Qwen2.5-Coder-7B-Instruct", coder.tokenizer_source
    write_gguf(tmp_path / "e.gguf", name="someones-7b-merge", **seven)  # type: ignore[arg-type]
    none = model_from_gguf(str(tmp_path / "e.gguf"), catalog).checkpoints[0]
    assert none.tokenizer == "" and "names no source or base model" in none.tokenizer_source


def _parse(argv: list[str]) -> object:
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return make_arg_parser(FlexibleArgumentParser(prog="api_server.py")).parse_args(argv)


def test_on_a_gpu_host_the_supervisor_starts_it_through_the_plugin_with_the_base_tokenizer(
        python: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The argv the supervisor execs on a faked GPU host (an L4), started for real on the
    scripted engine (tests/fake_engine.py), and read back by vLLM's own parser. The CUDA
    engine and the plugin do not run here: this is the command, not a GPU serving it."""
    from test_multi_gpu import _supervise, host

    from advisor.launch import CPU_ENGINE_MODULE
    from advisor.supervisor import Supervisor

    f = _qwen05(tmp_path / "qwen2.5-0.5b-instruct-q4_k_m.gguf",
                meta={"general.base_model.0.repo_url": BASE})

    async def body(sup: Supervisor) -> None:
        from fake_engine import until_state

        d = await sup.launch(PlanRequest(model=str(f), max_model_len=4096))
        argv = d.command
        assert d.quant == "gguf" and d.engine == "vllm" and d.repo == str(f)
        assert argv[1:5] == ["-m", CPU_ENGINE_MODULE, "--model", str(f)]  # the .gguf itself
        tail = argv[argv.index("--quantization"):][:6]
        assert tail == ["--quantization", "gguf", "--tokenizer", "Qwen/Qwen2.5-0.5B-Instruct",
                        "--hf-config-path", "Qwen/Qwen2.5-0.5B-Instruct"]
        args = _parse(argv[3:])
        assert (args.model, args.tokenizer, args.hf_config_path, args.quantization) == (  # type: ignore[attr-defined]
            str(f), "Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct", "gguf")
        assert (await until_state(sup, d.id, {"ready", "failed"})).state == "ready"

    _supervise(python, monkeypatch, host([0.3]), body)


def test_the_pasted_command_names_the_same_flags(tmp_path: Path) -> None:
    from test_multi_gpu import host

    from advisor.catalog import load_gpus
    from advisor.launch import command_line

    f = _qwen05(tmp_path / "q.gguf", meta={"general.base_model.0.repo_url": BASE})
    req = PlanRequest(model=str(f), max_model_len=4096)
    plan = __import__("advisor.advice", fromlist=["plan_for"]).plan_for(
        req, load_catalog(), host([0.3]), load_gpus())
    line = command_line(plan.ckpt, plan.estimate, plan.settings)
    assert line.startswith(f"vllm serve {f} --host 127.0.0.1")
    assert line.endswith("--quantization gguf --tokenizer Qwen/Qwen2.5-0.5B-Instruct "
                         "--hf-config-path Qwen/Qwen2.5-0.5B-Instruct")


def test_a_launch_is_refused_on_the_cpu_engine_and_without_a_base_repo(tmp_path: Path) -> None:
    from test_multi_gpu import host

    from advisor.admit import Refused, admit
    from advisor.catalog import load_gpus

    catalog, gpus = load_catalog(), load_gpus()
    f = _qwen05(tmp_path / "q.gguf", meta={"general.base_model.0.repo_url": BASE})
    cpu = msgspec.structs.replace(host([]), gpus=[], engine="vllm-cpu")
    with pytest.raises(Refused, match="cannot load GGUF.*nearest that runs there: "
                                      "Qwen/Qwen2.5-0.5B-Instruct"):
        admit(PlanRequest(model=str(f), max_model_len=4096), cpu, [], catalog, gpus, (),
              tmp_path / "hf")
    seven = tmp_path / "merge.gguf"
    write_gguf(seven, arch="qwen2", layers=28, hidden=3584, ffn=18944, heads=28, kv_heads=4,
               vocab=152064, context=32768, name="someones-7b-merge")
    with pytest.raises(Refused, match="no base repo for its tokenizer: the GGUF header names "
                                      "no source or base model"):
        admit(PlanRequest(model=str(seven), max_model_len=4096), host([0.3]), [], catalog,
              gpus, (), tmp_path / "hf")
    # with one, the same host admits it
    chosen = admit(PlanRequest(model=str(f), max_model_len=4096), host([0.3]), [], catalog,
                   gpus, (), tmp_path / "hf")
    assert chosen.ckpt.tokenizer == "Qwen/Qwen2.5-0.5B-Instruct" and chosen.estimate.fits
