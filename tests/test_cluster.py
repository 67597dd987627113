"""Laying a model over a cluster (advisor/cluster.py) and its shells: `advisor plan`,
POST /api/plan and the /plan page. The estimator is the real one; the models are the
catalog's and catalog/large/'s, their figures from config.json."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner
from litestar.testing import TestClient

from advisor.catalog import data_dir, load_catalog, load_gpus
from advisor.cli import cli
from advisor.cluster import (
    ClusterRequest,
    ClusterShape,
    Split,
    plan_cluster,
    size,
    splits,
    stage_of,
)
from advisor.config import load_settings
from advisor.errors import AdvisorError
from advisor.estimate import EngineSettings, Target, estimate
from advisor.placement import tp_divides
from advisor.planner import plan_for
from advisor.specs import Model

GIB = 2**30
CATALOG = load_catalog()
LARGE = load_catalog(data_dir("catalog") / "large")
GPUS = load_gpus()


def model(model_id: str) -> Model:
    found = CATALOG.by_id(model_id) or LARGE.by_id(model_id)
    assert found is not None
    return found


def shape(nodes: int, per_node: int, gib: float = 79.19, interconnect: str = "nvlink") -> ClusterShape:
    return ClusterShape(nodes=nodes, gpus_per_node=per_node, gpu_name="", gpu_gib=gib,
                        interconnect=interconnect, network="infiniband")  # type: ignore[arg-type]


# ----------------------------------------------------------------- the rules


def test_tp_sizes_divide_both_head_counts() -> None:
    phi4 = model("phi-4")  # 40 attention heads, 10 KV heads
    assert [t for t in (1, 2, 4, 8) if tp_divides(phi4, t)] == [1, 2]
    # on 8 GPUs with NVLink Phi-4 cannot take tp 4 or 8: the largest tp that divides, pp for the rest
    assert splits(phi4, shape(1, 8))[-1] == Split(tp=2, pp=4, nodes=1)
    assert Split(tp=4, pp=1, nodes=1) not in splits(phi4, shape(1, 8))


def test_without_nvlink_the_gpus_of_a_node_are_pipeline_stages() -> None:
    assert {s.tp for s in splits(model("llama-3.1-70b"), shape(2, 8, interconnect="pcie"))} == {1}


def test_a_replica_spans_nodes_only_whole_tp_inside_a_node_pp_across() -> None:
    found = splits(model("llama-3.1-405b"), shape(3, 8))
    assert [s for s in found if s.nodes > 1] == [Split(tp=8, pp=2, nodes=2), Split(tp=8, pp=3, nodes=3)]


def test_a_pipeline_stage_holds_its_share_of_the_layers_and_one_vocabulary_matrix() -> None:
    m = model("llama-3.1-405b")
    ckpt = m.checkpoints[0]
    stage, stage_ckpt = stage_of(m, ckpt, 2)
    vocab = m.arch.vocab_size * m.arch.hidden_size * 2
    assert stage.arch.layers == 63
    assert stage_ckpt.weight_bytes == pytest.approx((ckpt.weight_bytes - 2 * vocab) / 2 + vocab, rel=1e-6)
    assert stage_ckpt.weight_bytes < ckpt.weight_bytes / 2 + vocab  # the heavier of the two halves
    assert stage_of(m, ckpt, 1) == (m, ckpt)


def test_one_split_is_sized_by_the_estimator_on_its_heaviest_stage() -> None:
    m = model("llama-3.1-405b")
    ckpt = m.checkpoints[0]
    req = ClusterRequest(model=m.id, max_model_len=32768)
    got = size(m, ckpt, shape(2, 8), Split(tp=8, pp=2, nodes=2), req, 32768)
    stage, stage_ckpt = stage_of(m, ckpt, 2)
    direct = estimate(stage, stage_ckpt, Target(engine="vllm", gpu_gib=79.19, gpus=8),
                      EngineSettings(max_model_len=32768, tp=8))
    assert got.fits and got.kv_cache_gib == direct.kv_cache_gib
    # the KV of one token on one GPU: 63 layers × K and V × one KV head (8 over tp 8) × 128 × bf16
    assert got.kv_bytes_per_token == 63 * 2 * 1 * 128 * 2


def test_405b_in_bf16_needs_both_nodes_tp8_pp2() -> None:
    m = model("llama-3.1-405b")
    # 65,536 tokens, as deploy/examples/ plans it
    plan = plan_cluster(ClusterRequest(model=m.id, max_model_len=65536), m, m.checkpoints[0],
                        shape(2, 8))
    lay = plan.layout
    assert plan.fits and lay is not None, plan.reason
    assert (lay.tp, lay.pp, lay.replicas, lay.nodes_per_replica) == (8, 2, 1, 2)
    assert lay.distributed_executor_backend == "ray" and lay.max_model_len == 65536
    assert any("does not start" in line and "tp 8 × pp 1" in line for line in plan.reasoning)
    # one node alone cannot hold it in bf16, and says what does: its fp8 checkpoint on the
    # eight GPUs (Llama 3.1 405B's FP8 weights are 8 × 47 GiB; the layout people serve it in)
    one = plan_cluster(ClusterRequest(model=m.id, max_model_len=65536), m, m.checkpoints[0],
                       shape(1, 8))
    assert not one.fits and one.layout is None
    assert "tp 8 × pp 1" in one.reason and "does not start" in one.reason
    assert "fp8" in one.reason and "would start" in one.reason
    # on one node of 48 GiB cards not even the fp8 checkpoint does: it says what might
    small = plan_cluster(ClusterRequest(model=m.id, max_model_len=65536), m, m.checkpoints[0],
                         shape(1, 8, gib=44.43))
    assert not small.fits and "more nodes" in small.reason


def test_replicas_for_throughput_take_the_fewest_gpus_that_meet_the_target() -> None:
    m = model("llama-3.1-8b")
    ckpt = m.checkpoints[0]
    req = ClusterRequest(model=m.id, max_model_len=8192, concurrency=150)
    plan = plan_cluster(req, m, ckpt, shape(1, 8))
    lay = plan.layout
    assert lay is not None and lay.meets_target and lay.total_concurrency >= 150
    # no other split that starts would meet the target with fewer GPUs
    for s in splits(m, shape(1, 8)):
        e = size(m, ckpt, shape(1, 8), s, req, 8192)
        if e.fits:
            assert math.ceil(150 / e.max_concurrency) * s.gpus >= lay.gpus_used
    assert lay.replicas == math.ceil(150 / lay.replica_concurrency)


def test_a_target_the_cluster_cannot_meet_says_what_would() -> None:
    m = model("llama-3.1-70b")
    plan = plan_cluster(ClusterRequest(model=m.id, concurrency=100), m, m.checkpoints[0], shape(1, 8))
    lay = plan.layout
    assert plan.fits and lay is not None and not lay.meets_target
    assert "more replica" in lay.reason and "not the 100 asked" in lay.reason


def test_requests_per_s_needs_a_card_with_its_bandwidth() -> None:
    with pytest.raises(AdvisorError, match="requests_per_s"):
        plan_for(ClusterRequest(model="phi-4", gpu_gib=79.0, requests_per_s=5), CATALOG, GPUS)
    plan = plan_for(ClusterRequest(model="phi-4", gpu="H100 80GB", gpus_per_node=8,
                                   requests_per_s=5), CATALOG, GPUS)
    assert plan.layout is not None and plan.layout.replica_requests_per_s


def test_a_bad_gpu_or_quant_is_named() -> None:
    with pytest.raises(AdvisorError, match="gpu: 'B200'"):
        plan_for(ClusterRequest(model="phi-4", gpu="B200"), CATALOG, GPUS)
    with pytest.raises(AdvisorError, match="gpu_gib"):
        plan_for(ClusterRequest(model="phi-4"), CATALOG, GPUS)
    with pytest.raises(AdvisorError, match="quant: phi-4 has no gptq"):
        plan_for(ClusterRequest(model="phi-4", gpu="L4", quant="gptq"), CATALOG, GPUS)


# ----------------------------------------------------------------- the CLI


def test_cli_plan_prints_the_reasoning_and_json() -> None:
    r = CliRunner().invoke(cli, ["plan", "llama-3.1-405b", "--nodes", "2", "--gpus-per-node", "8",
                                 "--gpu", "H100 80GB", "--max-model-len", "65536"])
    assert r.exit_code == 0, r.output
    assert "Chosen: 1 replica of tp 8 × pp 2" in r.output
    r = CliRunner().invoke(cli, ["plan", "phi-4", "--gpus-per-node", "2", "--gpu", "RTX 4090",
                                 "--interconnect", "pcie", "--json"])
    data = json.loads(r.output)
    assert (data["layout"]["tp"], data["layout"]["pp"]) == (1, 2)


def test_cli_plan_writes_one_format_or_all(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["plan", "phi-4", "--gpus-per-node", "2", "--gpu", "L4",
                                 "--max-model-len", "8192", "--format", "helm"])
    assert r.exit_code == 0 and r.output.startswith("# vLLM production-stack values")
    r = CliRunner().invoke(cli, ["plan", "phi-4", "--gpus-per-node", "2", "--gpu", "L4",
                                 "--max-model-len", "8192", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "lws.yaml", "plan.json", "rayservice.yaml", "values.yaml", "vllm-ray.sh"]


def test_cli_plan_refusals_exit_with_a_message() -> None:
    r = CliRunner().invoke(cli, ["plan", "llama-3.1-405b", "--gpus-per-node", "8", "--gpu", "H100 80GB"])
    assert r.exit_code == 1 and "Nothing starts on this cluster" in r.output
    r = CliRunner().invoke(cli, ["plan", "phi-4", "--gpu", "L4", "--nodes", "0"])
    assert r.exit_code == 2 and "--nodes" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["plan", "phi-4", "--gpu", "L4", "--name", "Bad_Name"])
    assert r.exit_code == 2 and "--name" in r.output


# ----------------------------------------------------------------- the API and the page


@pytest.fixture(name="client", scope="module")
def fx_client() -> Iterator[TestClient]:  # type: ignore[type-arg]
    from advisor.web.app import create_app

    with TestClient(app=create_app(load_settings())) as client:
        yield client


def test_api_plan_answers_the_layout_and_its_manifests(client: TestClient) -> None:  # type: ignore[type-arg]
    r = client.post("/api/plan", json={"model": "llama-3.1-70b", "gpus_per_node": 8,
                                       "gpu": "H100 80GB", "concurrency": 8})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["plan"]["layout"]["tp"] == 8 and body["plan"]["reasoning"]
    assert set(body["manifests"]) == {"vllm-ray.sh", "lws.yaml", "values.yaml", "rayservice.yaml"}
    # the same answer as the CLI's
    cli_json = CliRunner().invoke(cli, ["plan", "llama-3.1-70b", "--gpus-per-node", "8", "--gpu",
                                        "H100 80GB", "--concurrency", "8", "--json"]).output
    assert msgspec.json.decode(cli_json)["layout"] == body["plan"]["layout"]


@pytest.mark.parametrize(("body", "names"), [
    ({"model": "phi-4", "gpu": "L4", "nodes": 0}, "nodes"),
    ({"model": "phi-4", "gpu": "L4", "interconnect": "infiniband"}, "interconnect"),
    ({"model": "phi-4", "gpu": "L4", "gpus": 2}, "gpus"),
    ({"gpu": "L4"}, "model"),
    ({"model": "phi-4", "gpu": "Z9"}, "gpu"),
    ({"model": "no-such-model", "gpu": "L4"}, "model"),
])
def test_api_plan_bad_input_is_a_4xx_naming_the_field(client: TestClient, body: dict[str, object],  # type: ignore[type-arg]
                                                      names: str) -> None:
    r = client.post("/api/plan", json=body)
    assert 400 <= r.status_code < 500, r.text
    assert names in r.text


def test_the_plan_page_shows_the_form_then_the_layout(client: TestClient) -> None:  # type: ignore[type-arg]
    r = client.get("/plan")
    assert r.status_code == 200 and 'name="gpus_per_node"' in r.text
    assert r.headers["link"] == '</api/plan>; rel="alternate"; type="application/json"'
    r = client.get("/plan", params={"model": "llama-3.1-405b", "nodes": "2", "gpus_per_node": "8",
                                    "gpu": "H100 80GB", "network": "infiniband",
                                    "max_model_len": "65536"})
    assert r.status_code == 200
    assert "tp 8 × pp 2" in r.text and "lws.yaml" in r.text and "kind: LeaderWorkerSet" in r.text
    assert 'href="/plan"' in client.get("/models").text  # the nav links it


def test_the_plan_page_puts_the_message_beside_the_field(client: TestClient) -> None:  # type: ignore[type-arg]
    r = client.get("/plan", params={"model": "phi-4", "gpu": "L4", "nodes": "lots"})
    assert r.status_code == 400 and 'id="nodes-error"' in r.text
    r = client.get("/plan", params={"model": "phi-4"})
    assert r.status_code == 400 and "gpu_gib" in r.text and 'id="model-error"' in r.text


def test_a_context_beyond_the_models_native_one_is_refused_up_front() -> None:
    with pytest.raises(AdvisorError, match="max_model_len: 300,000 is above llama-3.1-70b's native"):
        plan_for(ClusterRequest(model="llama-3.1-70b", gpu="H100 80GB", gpus_per_node=8,
                                max_model_len=300_000), CATALOG, GPUS)


def test_nvlink_is_assumed_only_when_not_given_and_the_plan_says_so() -> None:
    assumed = plan_for(ClusterRequest(model="phi-4", gpu="L4", gpus_per_node=2), CATALOG, GPUS)
    assert any("NVLink assumed" in line for line in assumed.reasoning)
    given = plan_for(ClusterRequest(model="phi-4", gpu="L4", gpus_per_node=2, interconnect="pcie"),
                     CATALOG, GPUS)
    assert not any("NVLink assumed" in line for line in given.reasoning)
    assert given.layout is not None and (given.layout.tp, given.layout.pp) == (1, 2)
