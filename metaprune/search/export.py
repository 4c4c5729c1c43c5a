"""``metaprune export``: the chosen candidate as a subnet spec, and optionally as a model."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from pruningnet.errors import UserError
from pruningnet.spec import SubnetSpec, make_spec

from ..store.specfile import save_spec
from .runner import BUDGET_FLAGS, format_cost

FORMATS = ("json", "torchscript", "onnx")


def pick_candidate(candidates: list[dict], *, candidate_id: int | None = None,
                   budgets: Mapping[str, float] | None = None) -> dict:
    """Candidate ``candidate_id``, or the best by the search's score (proxy top-1, or the lowest loss
    when the search scored by it) within ``budgets`` (ties: fewer MACs)."""
    if candidate_id is not None:
        for c in candidates:
            if c["id"] == candidate_id:
                return c
        raise UserError(f"--id {candidate_id} is not a candidate of this search; accepted: 0 to "
                        f"{len(candidates) - 1}")
    budgets = dict(budgets or {})
    if not budgets:
        raise UserError("give --id N or a budget (--max-macs, --max-params, --max-latency-ms)")
    for key in budgets:
        if key == "latency_ms" and any("latency_ms" not in c for c in candidates):
            raise UserError("--max-latency-ms: this search did not record latencies; search with "
                            "--max-latency-ms or the latency_ms objective")
    fits = [c for c in candidates if all(c[k] <= cap for k, cap in budgets.items())]
    if not fits:
        cheapest = {k: min(c[k] for c in candidates) for k in budgets}
        raise UserError("no candidate fits " + ", ".join(
            f"{BUDGET_FLAGS[k]} {format_cost(k, v)} (smallest searched: {format_cost(k, cheapest[k])})"
            for k, v in budgets.items()))
    return min(fits, key=lambda c: (-c.get("score", c["top1"]), c["macs"], c["id"]))


def candidate_spec(space, candidate: dict, search_doc: Mapping, run_path: Path) -> SubnetSpec:
    """The subnet spec of ``candidate`` with costs as metrics and the search as provenance."""
    metrics = {"macs": candidate["macs"], "params": candidate["params"], "proxy_top1": candidate["top1"]}
    if "loss" in candidate:
        metrics["proxy_loss"] = candidate["loss"]
    if "latency_ms" in candidate:
        metrics["latency_ms"] = candidate["latency_ms"]
    provenance = {"run": str(run_path), "search": {"strategy": search_doc.get("strategy"),
                                                   "budgets": search_doc.get("budgets"),
                                                   "candidate_id": candidate["id"],
                                                   "generation": candidate["generation"]},
                  "seed": search_doc.get("seed"), "proxy_top1": candidate["top1"]}
    return make_spec(space, candidate["channels"], metrics, provenance)


def export_candidate(run, spec: SubnetSpec, out: Path, fmt: str, with_weights: bool,
                     scorer_factory) -> list[Path]:
    """Write ``spec`` (json) or the model (torchscript/onnx, spec beside it as ``OUT.json``)."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not supported; accepted: {', '.join(FORMATS)}")
    if fmt == "json":
        if with_weights:
            raise UserError("--with-weights needs a model format: --format torchscript or onnx")
        return [save_spec(spec, out)]
    from pruningnet.build import build_model

    from ..export import export_model

    if with_weights:
        model = scorer_factory().model(dict(spec.channels))
        spec.provenance["weights"] = "pruningnet"
    else:
        model = build_model(spec)
        spec.provenance["weights"] = "random init"
    opts = spec.space.options
    written = [export_model(model, out, fmt, opts["input_size"], opts["in_channels"])]
    written.append(save_spec(spec, out.with_name(out.name + ".json")))
    return written
