"""Early rejection in generate mode: accepted counterfactuals per compute-second with and without it.

The same generated seeds, models and noise run twice through the stages in one process (ingest, plan,
edit, filter, as the pipeline's actors would run them): once with ``edit.early_rejection`` off and once
on. Reported per variant: edit and filter seconds, accepted sets and member images, denoiser rows x
steps and VAE decodes, accepted images per second, and the same work priced with the cost model's FLOPs
for SD 1.5 at 512 px (what a GPU would spend on these counts). Stopped members that would have passed
every check in the run without early rejection are counted as ``false_stops``. Prints JSON.

    python benchmarks/early_rejection.py [--seeds-per-prompt 2] [--candidates 4] [--steps 20] [--text-image -0.15] [--margin 0]
"""

from __future__ import annotations

import argparse
import json

import common  # noqa: F401,E402  (sets sys.path and HF_HUB_OFFLINE)

from pipeline.commands.cost import CLIP_L14_TFLOP, DENOISER_TFLOP_512, VAE_DECODE_TFLOP_512  # noqa: E402
from pipeline.config.loading import load_config  # noqa: E402
from pipeline.execution.local import run_stages  # noqa: E402
from schemas.records import STATUS_ACCEPTED  # noqa: E402


def run(config_path: str, overrides: dict) -> tuple[dict, list[dict]]:
    result = run_stages(load_config(config_path, overrides), stop_before="encode")
    work = result.stages["edit"].counters
    seconds = {name: timing["run_s"] for name, timing in result.timings.items()}
    rows = result.table.to_pylist()
    candidates = [c for r in rows for c in r["candidates"] or []]
    accepted = sum(c["status"] == STATUS_ACCEPTED for c in candidates)
    early = sum((c["reason"] or "").startswith("early rejection") for c in candidates)
    # CLIP embeds every row at the check, then in the filter each base and each candidate not stopped.
    filtered = sum(b is not None for r in rows for b in r["candidate_bases"] or []) + len(candidates) - early
    tflop = (work["denoised_rows"] * 2 * DENOISER_TFLOP_512["sd"] + work["decoded_rows"] * VAE_DECODE_TFLOP_512
             + (work["judged_rows"] + filtered) * CLIP_L14_TFLOP)
    compute_s = seconds["edit"] + seconds["filter"]
    return {
        "edit_s": round(seconds["edit"], 2), "filter_s": round(seconds["filter"], 2),
        "sets": len(rows), "accepted_sets": sum(r["set_status"] == STATUS_ACCEPTED for r in rows),
        "candidates": len(candidates), "failing_a_check": sum(bool(c.get("failed_checks")) for c in candidates),
        "stopped_early": early, "accepted_images": accepted,
        "denoised_rows": work["denoised_rows"], "decoded_rows": work["decoded_rows"], "judged_rows": work["judged_rows"],
        "accepted_images_per_cpu_s": round(accepted / compute_s, 3),
        "sd15_512_tflop": round(tflop, 1),
        "sd15_512_tflop_per_accepted_image": round(tflop / accepted, 1) if accepted else None,
    }, rows


def ratio(a, b) -> float | None:
    return round(a / b, 3) if a and b else None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="configs/mini_generate.yaml")
    parser.add_argument("--seeds-per-prompt", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--at-fraction", type=float, default=0.5)
    parser.add_argument("--margin", type=float, default=0.0)
    # The tiny random CLIP's text-image cosines spread over about [-0.2, 0.03]: at -0.15 about 40% of the
    # candidates fail, as they do in over-generation with a strict filter.
    parser.add_argument("--text-image", type=float, default=-0.15)
    args = parser.parse_args()
    overrides = {"input.seeds_per_prompt": args.seeds_per_prompt, "plan.candidates_per_set": args.candidates,
                 "edit.steps": args.steps, "edit.early_rejection.at_fraction": args.at_fraction,
                 "edit.early_rejection.margin": args.margin, "filter.thresholds.text_image": args.text_image}
    without, plain_rows = run(args.config, {**overrides, "edit.early_rejection.enabled": False})
    with_early, early_rows = run(args.config, {**overrides, "edit.early_rejection.enabled": True})
    passed = {(r["set_id"], c["candidate"], c["member_id"]) for r in plain_rows for c in r["candidates"] or []
              if c["status"] is not None and not c.get("failed_checks")}
    # Stopped for a predicted failure, yet it passed every check when it ran to the end. (Members stopped
    # because their candidate set could no longer be kept are not counted: the filter rejects them too.)
    false_stops = sum((r["set_id"], c["candidate"], c["member_id"]) in passed for r in early_rows
                      for c in r["candidates"] or [] if "steps: predicted " in (c["reason"] or ""))
    lost = {r["set_id"] for r in plain_rows if r["set_status"] == "accepted"} - {
        r["set_id"] for r in early_rows if r["set_status"] == "accepted"}
    result = {
        "benchmark": "early_rejection", "config": args.config, "steps": args.steps, "candidates_per_set": args.candidates,
        "at_fraction": args.at_fraction, "margin": args.margin, "text_image_threshold": args.text_image,
        "without": without, "with": with_early,
        "false_stops": false_stops, "accepted_sets_lost": len(lost),
        "accepted_per_cpu_s_ratio": ratio(with_early["accepted_images_per_cpu_s"], without["accepted_images_per_cpu_s"]),
        "gpu_tflop_per_accepted_ratio": ratio(with_early["sd15_512_tflop_per_accepted_image"],
                                              without["sd15_512_tflop_per_accepted_image"]),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
