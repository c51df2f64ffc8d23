"""Build `src/vidgate/catalog/data/catalog.json`, the shipped catalogue, from Venice's published data.

    python tools/build_catalog.py [--shared ../shared]

Inputs (all Venice's own data, see ../shared/venice-2026-09/CHANGES.md for sources):
- `venice-2026-09/model-catalog-video.json` (CAT-SEP, 132 video models): which models exist, their mode,
  family, privacy, prompt limit and inputs;
- `venice-2026-09/video-pricing-sample.json` (PRICE-SEP): the `/models` constraint arrays, in Venice's order;
- `venice-video-models-2026-08-20.json` (CAT-AUG): fields CAT-SEP lacks (name, `uncensored`, `modelSource`,
  `per_reference_audio`, the listed reference-image limits) for the 110 ids in both;
- `src/vidgate/catalog/data/venice-prices-2026-09.json`: the pricing rule per model (tools/fit_venice_prices.py).

This script is the only place where per-family knowledge (SPEC §2.2/§4/§5, CHANGES §2.2/§9.3: Seedance's media
limits, Kling O3's composition totals, Wan 3.0's rules, ...) is turned into record fields. Its output is data:
review the diff it makes, and from then on the server reads only the records.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "src" / "vidgate" / "catalog" / "data"
MB = 1024 * 1024

# SPEC §9.2: the June-2026 Seedance ids the consent flow is specified on; Venice lists them no longer, vidgate
# keeps them (priced as their `-basic` siblings). name, model_type, audio input.
CONSENT_ERA = {
    "seedance-2-0-text-to-video": ("Seedance 2.0", "t2v"),
    "seedance-2-0-image-to-video": ("Seedance 2.0", "i2v"),
    "seedance-2-0-reference-to-video": ("Seedance 2.0", "r2v"),
    "seedance-2-0-fast-text-to-video": ("Seedance 2.0 Fast", "t2v"),
    "seedance-2-0-fast-image-to-video": ("Seedance 2.0 Fast", "i2v"),
    "seedance-2-0-fast-reference-to-video": ("Seedance 2.0 Fast", "r2v"),
}
CONSENT_ERA_CREATED = 1776643200  # 2026-04-20, CAT-APR
FACE_CONSENT = {"seedance-2-0-image-to-video", "seedance-2-0-reference-to-video",
                "seedance-2-0-fast-image-to-video", "seedance-2-0-fast-reference-to-video"}
RETIRED = {  # CHANGES §9.4: in CAT-AUG, gone from CAT-SEP; answered 410
    "sora-2-image-to-video": "removed on 2026-09-24 (announced sunset)",
    "sora-2-text-to-video": "removed on 2026-09-24 (announced sunset)",
    "sora-2-pro-image-to-video": "removed on 2026-09-24 (announced sunset)",
    "sora-2-pro-text-to-video": "removed on 2026-09-24 (announced sunset)",
    "wan-2.1-pro-image-to-video": "removed by 2026-09-29",
    "wan-2.2-a14b-text-to-video": "removed by 2026-09-29",
}

MODEL_TYPE_OF_TASK = {"t2v": "text-to-video", "i2v": "image-to-video", "r2v": "image-to-video",
                      "flf": "image-to-video", "transition": "image-to-video", "multi-angle": "image-to-video",
                      "v2v": "video", "motion": "video", "upscale": "video"}
ENGINE_OF_TASK = {"t2v": "procedural", "i2v": "image", "flf": "image", "transition": "image",
                  "multi-angle": "image", "r2v": "reference", "v2v": "video", "motion": "video",
                  "upscale": "upscale"}

VIDEO_CONTAINERS = ["mp4", "webm", "matroska"]
AUDIO_CONTAINERS = ["wav", "mp3"]
# `audio_url`, any model: WAV/MP3, at most 30 s and 15 MB (SPEC §2.2).
AUDIO_URL = {"containers": AUDIO_CONTAINERS, "max_s": 30, "max_bytes": 15 * MB}
# topaz-video-upscale `video_url`: MP4/MOV/WebM, at most 300 s (SPEC §6).
UPSCALE_VIDEO = {"containers": ["mp4", "webm"], "max_s": 300}
# Video-to-video `video_url`: MP4/MOV/WebM; Venice documents no length limit, we take 30 s (the longest output).
V2V_VIDEO = {"containers": ["mp4", "webm"], "max_s": 30}


def _seedance_clips(noun: str, count: int, clip_s: float, total_s: float) -> dict[str, Any]:
    if noun == "video":
        return {"containers": ["mp4"], "max_count": count, "min_s": 2, "max_s": clip_s, "max_total_s": total_s,
                "max_bytes": 50 * MB, "video_codecs": ["h264", "hevc"], "audio_codecs": ["aac", "mp3"]}
    return {"containers": AUDIO_CONTAINERS, "max_count": count, "min_s": 2, "max_s": clip_s,
            "max_total_s": total_s, "max_bytes": 15 * MB}


def _clips(kind: str, count: int, min_s: float | None = None, max_s: float | None = None,
           total_s: float | None = None, max_mb: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"containers": VIDEO_CONTAINERS if kind == "video" else AUDIO_CONTAINERS,
                           "max_count": count}
    for key, value in (("min_s", min_s), ("max_s", max_s), ("max_total_s", total_s)):
        if value is not None:
            out[key] = value
    if max_mb is not None:
        out["max_bytes"] = max_mb * MB
    return out


def _family(model_id: str, sep_family: str) -> str:
    for prefix in ("seedance-2-5", "seedance-2-0", "kling-o3", "kling-v3", "wan-3-0", "minimax-h3-max"):
        if model_id.startswith(prefix):
            return prefix
    return sep_family


def _inputs(model_id: str, family: str, task: str, constraints: dict[str, Any]) -> dict[str, Any]:
    """Media fields, counts and limits (SPEC §2.2, §4, §6; CHANGES §2.2, §9.3)."""
    inputs: dict[str, Any] = {}
    image_task = MODEL_TYPE_OF_TASK[task] == "image-to-video"
    if image_task:
        inputs["image_url"] = "optional" if task == "r2v" else "required"
        inputs["end_image_url"] = task != "multi-angle"
        inputs["keyframes"] = 0 if task == "multi-angle" else 10
    if constraints.get("audio_input"):
        inputs["audio_url"] = AUDIO_URL
    if task == "upscale":
        inputs["video_url"] = UPSCALE_VIDEO
    elif MODEL_TYPE_OF_TASK[task] == "video":
        inputs["video_url"] = V2V_VIDEO
    seedance = family in ("seedance-2-0", "seedance-2-5")
    if seedance:
        inputs["images"] = {"min_short_side": 300, "min_aspect": 0.4, "max_aspect": 2.5}
    listed = {k: constraints[k] for k in ("reference_image_min_short_side_pixels", "reference_image_min_aspect_ratio",
                                          "reference_image_max_aspect_ratio") if k in constraints}
    if listed:
        inputs["listed_image_limits"] = True
        inputs["images"] = {"min_short_side": listed.get("reference_image_min_short_side_pixels"),
                            "min_aspect": listed.get("reference_image_min_aspect_ratio"),
                            "max_aspect": listed.get("reference_image_max_aspect_ratio")}
    if family == "minimax-h3-max":  # CHANGES §9.3.2 GUESS: H3's limits
        inputs["images"] = {"min_short_side": 256, "min_aspect": 0.4, "max_aspect": 2.5}
    if family == "wan-3-0":
        inputs["images"] = {"min_short_side": 240}
    if task != "r2v":
        return inputs
    inputs["references_required"] = True
    takes_audio_refs = bool(constraints.get("audio_input") or constraints.get("per_reference_audio"))
    if family == "seedance-2-0":
        inputs |= {"reference_images": 9, "reference_videos": _seedance_clips("video", 3, 15, 15),
                   "reference_audios": _seedance_clips("audio", 3, 15, 15), "audio_url_is_reference": True}
    elif family == "seedance-2-5":
        inputs |= {"reference_images": 30, "reference_videos": _seedance_clips("video", 10, 30, 30),
                   "reference_audios": _seedance_clips("audio", 10, 30, 30), "audio_url_is_reference": True,
                   "reference_image_max_bytes": 30 * MB}
    elif family == "wan-3-0":
        inputs |= {"reference_images": 10, "reference_videos": _clips("video", 5, 1, 15, 15, 100),
                   "reference_audios": _clips("audio", 5, 1, 15, 15, 15), "max_references": 20,
                   "reference_image_max_bytes": 20 * MB, "end_image_url": False,
                   "reference_documents": 1 if model_id == "wan-3-0-reference-to-video" else 0}
    elif model_id.startswith(("minimax-h3-max-reference", "minimax-h3-reference", "minimax-h3-enhanced-reference")):
        inputs |= {"reference_images": 9, "reference_videos": _clips("video", 3, 2, 15, 15, 50),
                   "reference_audios": _clips("audio", 3, 2, 15, 15, 15), "audio_url_is_reference": True,
                   "frames_exclude_references": True}
    elif family == "gemini-omni-flash-1-1":
        inputs |= {"reference_images": 10}
    else:
        # SK-VIDEO-B: a model its table does not list takes 4 reference images; clips are not documented.
        inputs |= {"reference_images": 4, "reference_videos": _clips("video", 10)}
        if takes_audio_refs:
            inputs["reference_audios"] = _clips("audio", 10)
    if family in ("kling-o3", "kling-v3"):
        inputs |= {"elements": 4, "scene_images": 4}
    if family == "kling-o3":
        inputs["composition"] = {"max_visual_inputs": 7, "max_elements_with_frame": 3}
    return inputs


def _record(model_id: str, sep: dict[str, Any] | None, aug: dict[str, Any] | None, price: dict[str, Any],
            fingerprint: list[Any]) -> dict[str, Any]:
    model_type, resolutions, durations, aspect_ratios, audio, configurable, _video_input = fingerprint
    spec = (aug or {}).get("model_spec", {})
    constraints = spec.get("constraints", {})
    task = sep["video"]["mode"] if sep else CONSENT_ERA[model_id][1]
    family = _family(model_id, sep["family"] if sep else "seedance-2-0")
    if sep and "audio" in sep["video"].get("inputs", {}):
        constraints = {**constraints, "audio_input": True}
    record: dict[str, Any] = {
        "id": model_id,
        "name": spec.get("name") or (sep or {}).get("name") or CONSENT_ERA[model_id][0],
        "family": family,
        "task": task,
        "model_type": model_type,
        "created": (aug or {}).get("created") or (sep or {}).get("created") or CONSENT_ERA_CREATED,
        "privacy": spec.get("privacy") or (sep or {}).get("privacy", "anonymized"),
    }
    uncensored = spec.get("uncensored", (sep or {}).get("uncensored"))
    if uncensored is not None:
        record["uncensored"] = uncensored
    if spec.get("modelSource"):
        record["model_source"] = spec["modelSource"]
    record["durations"] = durations
    if durations == ["Auto"]:
        record["duration_required"] = False
    record["resolutions"] = resolutions
    if resolutions and task != "upscale":
        default = "1080p" if family == "wan-3-0" else ("720p" if "720p" in resolutions else resolutions[0])
        record["default_resolution"] = default
    if task == "upscale":
        record["resolutions"] = resolutions
        record["upscale_factors"] = [1, 2, 4]
    record["aspect_ratios"] = aspect_ratios
    if aspect_ratios:
        record["default_aspect_ratio"] = "16:9" if "16:9" in aspect_ratios else aspect_ratios[0]
    record["audio"] = "optional" if configurable else ("native" if audio else "none")
    if task == "upscale":
        record["prompt"] = "none"
    elif task == "multi-angle":
        record["prompt"] = "optional"
    prompt_limit = constraints.get("prompt_character_limit") or (sep or {}).get("video", {}).get("promptLimit")
    if model_id in CONSENT_ERA:
        prompt_limit = 3500
    if prompt_limit:
        record["prompt_limit"] = prompt_limit
    record["inputs"] = _inputs(model_id, family, task, constraints)
    if constraints.get("per_reference_audio"):
        record["per_reference_audio"] = True
    if task == "multi-angle":
        record["camera_trajectory"] = True
    seedance = family in ("seedance-2-0", "seedance-2-5")
    if family == "wan-3-0":
        record["aliases"] = [model_id.replace("wan-3-0", "wan-3.0", 1)]
        record["aspect_ratio_required"] = True
        if task == "r2v":
            record["max_reference_plus_output_s"] = 30
            record["max_quote_reference_video_s"] = 15
    if family.startswith("minimax-h3") and task == "r2v":
        record["max_quote_reference_video_s"] = 15
    if seedance:
        record["bitrate_modes"] = True
    if seedance and task == "r2v":
        record["workflows"] = True
        record["source_matched_aspect"] = True
    if family == "seedance-2-5" and task == "r2v":
        record["task_types"] = True
        record["source_matched_duration"] = True
    if model_id in FACE_CONSENT:
        record["face_consent"] = True
    if family.startswith("grok-imagine") and model_id.endswith("-private"):
        record["download_url"] = True  # CHANGES §2.5: Grok Imagine only, not every private model
    record["pricing"] = price
    record["engine"] = ENGINE_OF_TASK[task]
    return record


def build(shared: Path) -> dict[str, Any]:
    sep_doc = json.loads((shared / "venice-2026-09" / "model-catalog-video.json").read_text())
    sample = json.loads((shared / "venice-2026-09" / "video-pricing-sample.json").read_text())["models"]
    aug = {e["id"]: e for e in json.loads((shared / "venice-video-models-2026-08-20.json").read_text())["data"]}
    prices = json.loads((DATA / "venice-prices-2026-09.json").read_text())["models"]
    models = []
    for model_id, sep in sep_doc["models"].items():
        fingerprint = json.loads(sample[model_id]["fingerprint"])
        models.append(_record(model_id, sep, aug.get(model_id), prices[model_id], fingerprint))
    ids = [m["id"] for m in models]
    for model_id, (_, task) in CONSENT_ERA.items():
        sibling = f"{model_id}-basic"
        base = next(m for m in models if m["id"] == sibling)
        fingerprint = [base["model_type"], ["720p", "480p"], ["4s", "5s", "8s", "10s", "12s", "15s"],
                       ["21:9", "16:9", "4:3", "1:1", "3:4", "9:16"] if task in ("t2v", "r2v") else [],
                       True, True, False]
        record = _record(model_id, None, None, prices[sibling], fingerprint)
        at = ids.index(sibling)
        models.insert(at, record)
        ids.insert(at, model_id)
    return {
        "source": "Venice's video catalogue of 2026-09-29 (CAT-SEP) with its published quotes (PRICE-SEP); built by "
                  "tools/build_catalog.py",
        "generatedAt": sep_doc["generatedAt"],
        "models": models,
        "retired": RETIRED,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    args = parser.parse_args()
    out = DATA / "catalog.json"
    out.write_text(json.dumps(build(args.shared), indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
