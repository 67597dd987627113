"""The deployments `advisor plan` writes, validated offline: core kinds with
kubernetes-validate, the custom resources (LeaderWorkerSet, RayService) and the
production-stack Helm values with jsonschema against the schemas their projects publish
(deploy/schemas/), strictly: every object whose schema lists its properties rejects keys it
does not list. And the examples under deploy/examples/ are what `advisor plan` writes now."""

from __future__ import annotations

import copy
import json
import shlex
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from advisor import manifests
from advisor.catalog import data_dir, load_catalog, load_gpus
from advisor.cli import cli
from advisor.cluster import ClusterRequest, Layout
from advisor.planner import plan_for

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "deploy" / "schemas"
EXAMPLES = ROOT / "deploy" / "examples"
K8S_VERSION = "1.33"  # a release kubernetes-validate 1.37 carries schemas for


def strict(schema: Any) -> Any:
    """The schema with additionalProperties false wherever it lists properties and leaves
    extra keys open, recursively; objects it leaves free-form (no properties, or
    x-kubernetes-preserve-unknown-fields) stay open, as the API server treats them."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


@cache
def validator(name: str) -> jsonschema.protocols.Validator:
    schema = strict(json.loads((SCHEMAS / name).read_text()))
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    return cls(schema)  # type: ignore[no-any-return]


CRDS = {"LeaderWorkerSet": "leaderworkerset-v1.schema.json", "RayService": "rayservice-v1.schema.json"}
HELM = "vllm-stack-values.schema.json"


def errors_of(doc: dict[str, Any]) -> list[str]:
    """What the validators say of one Kubernetes object ([] when it is valid)."""
    kind = doc.get("kind")
    if kind in CRDS:
        return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
                for e in validator(CRDS[kind]).iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.path))}: {exc.message}"]
    return []


def helm_errors(values: dict[str, Any]) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator(HELM).iter_errors(values)]


def pod_template(spec: dict[str, Any], name: str) -> dict[str, Any]:
    """A pod template of a custom resource as a core PodTemplate, for kubernetes-validate."""
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": spec}


# ----------------------------------------------------------------- the layouts checked

CASES = {
    "2x24gb-pcie": ClusterRequest(model="phi-4", gpus_per_node=2, gpu="RTX 4090 24GB", interconnect="pcie"),
    "8x80gb": ClusterRequest(model="llama-3.1-70b", gpus_per_node=8, gpu="H100 80GB", concurrency=8),
    "8x80gb-replicas": ClusterRequest(model="llama-3.1-8b", gpus_per_node=8, gpu="H100 80GB",
                                      max_model_len=8192, concurrency=300),
    # at 65,536 tokens, as deploy/examples/regenerate.sh plans it
    "2x8x80gb": ClusterRequest(model="llama-3.1-405b", nodes=2, gpus_per_node=8, gpu="H100 80GB",
                               max_model_len=65536),
    "4x8x80gb-fp8-replicas": ClusterRequest(model="llama-3.1-405b", nodes=4, gpus_per_node=8,
                                            gpu="H100 80GB", quant="fp8", concurrency=12,
                                            kv_cache_dtype="fp8"),
}


@cache
def layout(case: str) -> Layout:
    plan = plan_for(CASES[case], load_catalog(), load_gpus())
    assert plan.layout is not None, plan.reasoning
    return plan.layout


@pytest.mark.parametrize("case", CASES)
def test_every_lws_object_validates(case: str) -> None:
    docs = list(yaml.safe_load_all(manifests.render(layout(case), "lws")))
    assert [d["kind"] for d in docs] == ["LeaderWorkerSet", "Service"]
    for doc in docs:
        assert errors_of(doc) == [], doc["kind"]
    lwt = docs[0]["spec"]["leaderWorkerTemplate"]
    for role in ("leaderTemplate", "workerTemplate"):
        assert errors_of(pod_template(lwt[role], f"{case}-{role.lower()}")) == []


@pytest.mark.parametrize("case", CASES)
def test_the_rayservice_validates_and_its_serve_config_carries_the_layout(case: str) -> None:
    lay = layout(case)
    (doc,) = yaml.safe_load_all(manifests.render(lay, "rayservice"))
    assert errors_of(doc) == []
    for group in [doc["spec"]["rayClusterConfig"]["headGroupSpec"],
                  *doc["spec"]["rayClusterConfig"]["workerGroupSpecs"]]:
        assert errors_of(pod_template(group["template"], case)) == []
    (app,) = yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"]
    assert app["import_path"] == "ray.serve.llm:build_openai_app"
    (llm,) = app["args"]["llm_configs"]
    assert llm["engine_kwargs"]["tensor_parallel_size"] == lay.tp
    assert llm["engine_kwargs"]["pipeline_parallel_size"] == lay.pp
    assert llm["deployment_config"]["autoscaling_config"]["min_replicas"] == lay.replicas
    workers = doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    gpus = int(workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
    assert workers["replicas"] * gpus >= lay.gpus_used


@pytest.mark.parametrize("case", CASES)
def test_the_helm_values_validate(case: str) -> None:
    lay = layout(case)
    values = yaml.safe_load(manifests.render(lay, "helm"))
    assert helm_errors(values) == []
    specs = values["servingEngineSpec"]["modelSpec"]
    assert all(s["vllmConfig"]["tensorParallelSize"] == lay.tp for s in specs)
    if lay.nodes_per_replica > 1:  # the chart's Ray mode: one Ray cluster per entry
        assert len(specs) == lay.replicas
        assert all(s["raySpec"]["enabled"] and s["replicaCount"] == lay.nodes_per_replica - 1
                   for s in specs)
    else:
        assert [s["replicaCount"] for s in specs] == [lay.replicas]


@pytest.mark.parametrize("case", CASES)
def test_the_ray_script_is_bash_and_serves_the_layout(case: str) -> None:
    lay = layout(case)
    text = manifests.render(lay, "ray")
    subprocess.run(["bash", "-n"], input=text, text=True, check=True)
    serve = next(line for line in text.splitlines() if "exec vllm serve" in line)
    words = shlex.split(serve.split("exec ", 1)[1].replace("$((8000 + n))", "8000"))
    assert words[:3] == ["vllm", "serve", lay.repo]
    names = words[words.index("--served-model-name") + 1:words.index("--tensor-parallel-size")]
    assert names == [lay.served_name, lay.repo]  # as the advisor's own /v1 answers to both
    assert words[words.index("--tensor-parallel-size") + 1] == str(lay.tp)
    assert words[words.index("--pipeline-parallel-size") + 1] == str(lay.pp)
    assert ("--distributed-executor-backend" in words) == (lay.nodes_per_replica > 1)
    assert ("ray start --head" in text) == (lay.nodes_per_replica > 1)


# ----------------------------------------------------------------- the validators reject


def _lws() -> dict[str, Any]:
    return next(yaml.safe_load_all(manifests.render(layout("2x8x80gb"), "lws")))


def test_an_unknown_key_in_a_leaderworkerset_is_rejected() -> None:
    doc = _lws()
    doc["spec"]["leaderWorkerTemplate"]["sizee"] = 2
    assert any("sizee" in e for e in errors_of(doc))


def test_a_wrong_type_in_a_leaderworkerset_is_rejected() -> None:
    doc = _lws()
    doc["spec"]["leaderWorkerTemplate"]["size"] = "two"
    assert any("size" in e and "integer" in e for e in errors_of(doc))


def test_an_unknown_key_deep_in_a_pod_template_of_a_crd_is_rejected() -> None:
    doc = copy.deepcopy(_lws())
    doc["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["gpus"] = 8
    assert any("gpus" in e for e in errors_of(doc))


def test_a_broken_service_is_rejected_by_kubernetes_validate() -> None:
    service = list(yaml.safe_load_all(manifests.render(layout("2x8x80gb"), "lws")))[1]
    service["spec"]["ports"][0]["port"] = "http"
    assert errors_of(service)
    service = list(yaml.safe_load_all(manifests.render(layout("2x8x80gb"), "lws")))[1]
    service["spec"]["selectr"] = {}
    assert errors_of(service)


def test_a_broken_rayservice_and_helm_values_are_rejected() -> None:
    doc = yaml.safe_load(manifests.render(layout("2x8x80gb"), "rayservice"))
    doc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "2"
    assert errors_of(doc)
    values = yaml.safe_load(manifests.render(layout("2x8x80gb"), "helm"))
    values["servingEngineSpec"]["modelSpec"][0]["vllmConfig"]["tensorParalelSize"] = 8
    assert any("tensorParalelSize" in e for e in helm_errors(values))
    values = yaml.safe_load(manifests.render(layout("2x8x80gb"), "helm"))
    values["servingEngineSpec"]["modelSpec"][0]["replicaCount"] = "one"
    assert helm_errors(values)


def test_strict_closes_only_objects_that_list_their_properties() -> None:
    s = strict({"type": "object", "properties": {"a": {"type": "object"},
                                                 "b": {"type": "object", "properties": {}},
                                                 "c": {"type": "object", "properties": {"x": {}},
                                                       "x-kubernetes-preserve-unknown-fields": True}}})
    assert s["additionalProperties"] is False
    assert "additionalProperties" not in s["properties"]["a"]
    assert s["properties"]["b"]["additionalProperties"] is False
    assert "additionalProperties" not in s["properties"]["c"]


# ----------------------------------------------------------------- the examples


def example_commands() -> list[tuple[str, list[str]]]:
    """The `advisor plan` lines of deploy/examples/regenerate.sh: (folder, arguments)."""
    out = []
    for line in (EXAMPLES / "regenerate.sh").read_text().splitlines():
        if line.startswith("$advisor plan "):
            args = shlex.split(line.removeprefix("$advisor "))
            folder = args[args.index("--out") + 1]
            out.append((folder, args))
    return out


def test_the_examples_cover_the_issues_clusters() -> None:
    shapes = set()
    for folder, _ in example_commands():
        plan = json.loads((ROOT / folder / "plan.json").read_text())
        shape, lay = plan["shape"], plan["layout"]
        assert plan["fits"] and lay["meets_target"], folder
        # every example needs the GPUs it names: the layout takes all of them
        assert lay["gpus_used"] == shape["nodes"] * shape["gpus_per_node"], folder
        shapes.add((shape["nodes"], shape["gpus_per_node"], round(shape["gpu_gib"])))
    assert {(1, 2, 24), (1, 8, 79), (2, 8, 79)} <= shapes


@pytest.mark.parametrize("folder,args", example_commands(), ids=[f for f, _ in example_commands()])
def test_the_examples_are_what_advisor_plan_writes(folder: str, args: list[str], tmp_path: Path) -> None:
    args[args.index("--out") + 1] = str(tmp_path)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    made = {p.name: p.read_text() for p in tmp_path.iterdir()}
    kept = {p.name: p.read_text() for p in (ROOT / folder).iterdir()}
    assert made.keys() == kept.keys()
    for name in made:
        assert made[name] == kept[name], (
            f"{folder}/{name} drifted from what `advisor plan` writes; regenerate with "
            "ADVISOR='python -m advisor' bash deploy/examples/regenerate.sh (docs/cluster.md)")


@pytest.mark.parametrize("folder", [f for f, _ in example_commands()])
def test_every_example_validates(folder: str) -> None:
    path = ROOT / folder
    for doc in yaml.safe_load_all((path / "lws.yaml").read_text()):
        assert errors_of(doc) == []
    assert errors_of(yaml.safe_load((path / "rayservice.yaml").read_text())) == []
    assert helm_errors(yaml.safe_load((path / "values.yaml").read_text())) == []
    subprocess.run(["bash", "-n", str(path / "vllm-ray.sh")], check=True)


def test_the_schemas_readme_names_each_schema_with_its_source() -> None:
    text = (SCHEMAS / "README.md").read_text()
    for name in (*CRDS.values(), HELM):
        assert name in text
    assert text.count("https://github.com/") >= 3


def test_the_large_models_ship_beside_the_catalog_not_in_it() -> None:
    ranked = {m.id for m in load_catalog().models}
    large = {m.id for m in load_catalog(data_dir("catalog") / "large").models}
    assert large == {"llama-3.1-70b", "llama-3.1-405b"} and not ranked & large


def test_a_broken_pod_template_is_rejected_by_kubernetes_validate() -> None:
    lws = _lws()
    template = pod_template(lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"], "leader")
    template["template"]["spec"]["containers"][0]["resources"]["limitz"] = {}
    assert errors_of(template)
    template = pod_template(lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"], "leader")
    template["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    assert errors_of(template)
