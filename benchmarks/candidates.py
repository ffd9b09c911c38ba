"""Adaptive over-generation: GPU cost per accepted set of ``plan.candidates.stop: first_pass`` against rendering
every candidate (best_of), at the same K.

The same seeds, models, noise and filter run twice through the stages in one process (the local executor, up to
encode): K candidates per member rendered and judged (best_of), then rendered in rounds until each member's
first passing candidate (first_pass). Counted exactly per variant: images rendered and the denoiser rows x steps
they took, VAE decodes, CLIP image passes (the filter's, and first_pass's judging in the editor) and judge
questions' candidates, priced in TFLOP with the cost model (pipeline/commands/cost.py) at 512 px for the config's
family; accepted sets, and the sets one variant accepts and the other does not; the pass rate (candidates passing
every check in the best_of run); and batch fill: images per editor call over the batch limit. Prints JSON.

    python benchmarks/candidates.py [--config configs/mini.yaml] [--seeds 0] [--candidates 4] [--set FIELD=JSON]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import common  # noqa: E402  (sets sys.path and HF_HUB_OFFLINE)

from pipeline.commands.cost import CLIP_L14_TFLOP, DENOISER_TFLOP_512, VAE_DECODE_TFLOP_512  # noqa: E402
from pipeline.config.loading import load_config  # noqa: E402
from pipeline.execution.local import run_stages  # noqa: E402
from schemas.records import STATUS_ACCEPTED  # noqa: E402
from stages.edit import registry  # noqa: E402


def run(config_path: str, overrides: dict) -> tuple[dict, list[dict]]:
    loaded = load_config(config_path, overrides)
    result = run_stages(loaded, stop_before="encode")
    edit, filt = result.stages["edit"].counters, result.stages["filter"].counters
    config = loaded.config
    editor = registry.backend(config.edit.backend)
    steps, evals = editor.denoising_steps(result.stages["edit"].config), editor.denoiser_evals_per_step(config.edit)
    rows = result.table.to_pylist()
    edited = [r for r in rows if r["candidates"] is not None and r["set_status"] != "error"]
    candidates = [c for r in edited for c in r["candidates"]]
    generate = editor.makes_own_seeds
    if generate:  # the sampler counts its rows (base rows too, and early rejection's stops) and decodes
        denoised, decoded = edit["denoised_rows"], edit["decoded_rows"]
        clip_passes = edit["judged_rows"]
    else:
        # first_pass fills a mixed call's free slots with jobs a later round may ask for, then with padding
        rows_run = edit["images_rendered"] + edit.get("padded_rows", 0) + edit.get("lookahead_unused", 0)
        denoised, decoded = rows_run * steps, rows_run
        clip_passes = 0
    clip_passes += filt["images_scored"] + edit["judge_images_scored"]
    judged = filt["judged"] + edit["judge_judged"]
    limit = editor.batch_limit(config.edit)
    if "round_calls" in edit:  # first_pass counts its calls
        calls, images_in_calls = edit["round_calls"], edit["round_images"]
    else:
        per_set = [editor.images_and_calls(len(r["members"]), len(r["candidate_seeds"]), config.edit) for r in edited]
        images_in_calls, calls = sum(n for n, _ in per_set), sum(c for _, c in per_set)
    family = DENOISER_TFLOP_512[editor.model_family(config.edit)]
    tflop = {"denoiser": denoised * evals * family, "vae_decode": decoded * VAE_DECODE_TFLOP_512,
             "clip": clip_passes * CLIP_L14_TFLOP}
    accepted = sum(r["set_status"] == STATUS_ACCEPTED for r in rows)
    total = sum(tflop.values())
    return {
        "sets": len(rows), "accepted_sets": accepted,
        "candidates_rendered": len(candidates), "images_rendered": edit["images_rendered"],
        "padded_rows": edit.get("padded_rows", 0),
        "lookahead_rows": edit.get("lookahead_rows", 0), "lookahead_unused": edit.get("lookahead_unused", 0),
        "denoiser_rows_x_steps": denoised, "denoiser_evaluations": denoised * evals, "vae_decodes": decoded,
        "clip_image_passes": clip_passes, "judge_candidates": judged,
        "passing_candidates": sum(c.get("failed_checks") == [] for c in candidates),
        "editor_calls": calls, "batch_fill": round(images_in_calls / (calls * limit), 3) if calls else None,
        "tflop": {k: round(v, 1) for k, v in tflop.items()}, "tflop_total": round(total, 1),
        "tflop_per_accepted_set": round(total / accepted, 1) if accepted else None,
        "edit_s": result.timings["edit"]["run_s"], "filter_s": result.timings["filter"]["run_s"],
    }, rows


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/mini.yaml")
    parser.add_argument("--seeds", type=int, default=0,
                        help="photo configs: this many synthetic seeds (benchmarks/common); 0: the config's own")
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="more overrides, e.g. filter.thresholds.image_image=0.6")
    args = parser.parse_args()
    overrides = {"plan.candidates_per_set": args.candidates}
    for item in args.set:
        field, value = item.split("=", 1)
        overrides[field] = json.loads(value)
    with tempfile.TemporaryDirectory() as tmp:
        if args.seeds and load_config(args.config).config.input.kind != "generate":
            overrides["input.path"] = str(common.write_seeds(Path(tmp), args.seeds))
        fixed, fixed_rows = run(args.config, {**overrides, "plan.candidates.stop": "best_of"})
        rounds, round_rows = run(args.config, {**overrides, "plan.candidates.stop": "first_pass"})

    def accepted(rows):
        return {r["set_id"] for r in rows if r["set_status"] == STATUS_ACCEPTED}

    pass_rate = fixed["passing_candidates"] / fixed["candidates_rendered"] if fixed["candidates_rendered"] else None
    k = args.candidates
    result = {
        "benchmark": "candidates", "config": args.config, "candidates": k, "overrides": overrides,
        "pass_rate_best_of": round(pass_rate, 3) if pass_rate is not None else None,
        # what plan --pass-rate would price: (1 - (1 - p)^K) / p candidates a member
        "expected_candidates_per_member": round((1 - (1 - pass_rate) ** k) / pass_rate, 3) if pass_rate else None,
        "best_of": fixed, "first_pass": rounds,
        "sets_lost": sorted(accepted(fixed_rows) - accepted(round_rows)),
        "sets_gained": sorted(accepted(round_rows) - accepted(fixed_rows)),
        "tflop_per_accepted_set_ratio": (round(rounds["tflop_per_accepted_set"] / fixed["tflop_per_accepted_set"], 3)
                                         if rounds["tflop_per_accepted_set"] and fixed["tflop_per_accepted_set"] else None),
        "accepted_sets_ratio": round(rounds["accepted_sets"] / fixed["accepted_sets"], 3) if fixed["accepted_sets"] else None,
        "targets": {"tflop_per_accepted_set_ratio": "<= 0.55", "accepted_sets_ratio": ">= 0.95"},
    }
    print(json.dumps(result, indent=2))
    return 0 if math.isfinite(result["tflop_per_accepted_set_ratio"] or math.nan) else 1


if __name__ == "__main__":
    raise SystemExit(main())
