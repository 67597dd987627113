"""`advisor plan` and POST /api/plan: from a ClusterRequest to a ClusterPlan and its
manifests. The adapter around the pure advisor.cluster: it finds the model (the catalog,
the large models of catalog/large/, a local folder or a Hub repo through hfmeta) and the
GPU's figures (the GPU table)."""

from __future__ import annotations

from pathlib import Path

import msgspec

from advisor.catalog import Catalog, data_dir, load_catalog
from advisor.cluster import ClusterPlan, ClusterRequest, plan_cluster, shape_of
from advisor.errors import AdvisorError
from advisor.hardware import capability_of, cuda_gib, find_gpu
from advisor.hfmeta import resolve
from advisor.manifests import FORMATS, render
from advisor.plan import checkpoint_for
from advisor.specs import GpuSpec

LARGE = "large"  # catalog/large/: models planned for clusters, never ranked


def with_large(catalog: Catalog) -> Catalog:
    """The catalog and the large models of catalog/large/ (shipped beside it)."""
    folder = data_dir("catalog") / LARGE
    if not folder.is_dir():
        return catalog
    large = load_catalog(folder)
    known = {m.id for m in catalog.models}
    return Catalog(models=catalog.models + [m for m in large.models if m.id not in known],
                   files=catalog.files + large.files)


def plan_for(req: ClusterRequest, catalog: Catalog, gpus: list[GpuSpec], *,
             local_ok: bool = True) -> ClusterPlan:
    model, named = resolve(req.model, with_large(catalog), local_ok=local_ok)
    ckpt = named if named and (req.quant is None or named.quant == req.quant) else \
        checkpoint_for(model, req.quant)
    if ckpt is None:
        have = ", ".join(sorted({c.quant for c in model.checkpoints}))
        raise AdvisorError(f"quant: {model.id} has no {req.quant} checkpoint (it has: {have})")
    spec = None
    if req.gpu:
        spec = find_gpu(gpus, req.gpu)
        if spec is None:
            raise AdvisorError(f"gpu: {req.gpu!r} is not in the GPU table "
                               f"({', '.join(g.name for g in gpus)})")
    if req.gpu_gib is None and spec is None:
        raise AdvisorError("gpu_gib: give the memory of one GPU (GiB, as CUDA reports it) or "
                           "name a card of the GPU table with gpu")
    shape = shape_of(req, req.gpu_gib or cuda_gib(spec),  # type: ignore[arg-type]
                     spec.name if spec else "", spec.bandwidth_gbps if spec else None,
                     (spec.bf16_tflops or None) if spec else None,
                     capability_of(spec.compute_capability) if spec else None)
    return plan_cluster(req, model, ckpt, shape)


def manifests_of(plan: ClusterPlan, formats: list[str] | None = None) -> dict[str, str]:
    """File name -> text of each format asked (all by default); none when nothing fits."""
    if plan.layout is None:
        return {}
    return {FORMATS[f]: render(plan.layout, f) for f in (formats or list(FORMATS))}


def write_manifests(plan: ClusterPlan, out: Path, formats: list[str] | None = None) -> list[Path]:
    """The manifests and the plan itself (plan.json) into `out`; the paths written."""
    files = manifests_of(plan, formats)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in {**files, "plan.json": msgspec.json.format(
            msgspec.json.encode(plan), indent=2).decode() + "\n"}.items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        if name.endswith(".sh"):
            path.chmod(0o755)
        written.append(path)
    return written


class PlanAnswer(msgspec.Struct, kw_only=True):
    """POST /api/plan's answer: the plan and its manifests (file name -> text)."""

    plan: ClusterPlan
    manifests: dict[str, str]


def answer_for(req: ClusterRequest, catalog: Catalog, gpus: list[GpuSpec], *,
               local_ok: bool = True) -> PlanAnswer:
    plan = plan_for(req, catalog, gpus, local_ok=local_ok)
    return PlanAnswer(plan=plan, manifests=manifests_of(plan))


def form_request(form: dict[str, str]) -> tuple[ClusterRequest | None, dict[str, str]]:
    """The /plan page's query as a request, or the message for the field that is wrong."""
    data = {k: v.strip() for k, v in form.items() if k in ClusterRequest.__struct_fields__ and v.strip()}
    if not data.get("model"):
        return None, {"model": "name a catalog id (e.g. llama-3.1-70b), a listed repo or a Hub repo"}
    try:
        return msgspec.convert(data, ClusterRequest, strict=False), {}
    except msgspec.ValidationError as exc:
        text = str(exc)
        what, _, at = text.rpartition(" - at `$.")
        return None, {at.rstrip("`") if what else "model": what or text}
