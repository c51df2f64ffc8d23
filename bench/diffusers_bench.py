"""Benchmark: the `diffusers` engine against calling the same diffusers pipeline directly.

Both sides run the same pipeline object (same weights, settings and device) on the same jobs: the bare side
calls `pipe(**kwargs)` with the arguments the engine would pass and keeps the frames; the engine side runs
the engine as a worker runs it: `generate` (the pipeline, with the step callback), then `encode` (resampling to
24 fps and the MP4) in the background while the next job generates.
Throughput ratio = bare seconds per job / engine seconds per job (target ≥ 0.95).

On this CPU-only machine the weights are the tests' tiny random-weight Wan 2.1 T2V pipeline
(tests/engines/tiny_diffusers.py) at 256x256, 2 s, 8 steps: the denoising is short, so the encode's share is
larger than it would be for a real model. On a GPU, `--device cuda` runs the same comparison.

Run:  .venv/bin/python bench/diffusers_bench.py [--device cpu] [--jobs 4]
Needs the `diffusers` extra; without it `measure()` returns no rows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STEPS, SECONDS, SIZE, JOBS, ROUNDS = 8, 2, 256, 4, 2
TARGET = 0.95


def measure(device: str = "cpu", jobs: int = JOBS) -> list[dict[str, Any]]:
    try:
        import torch
    except ImportError:
        print("[diffusers_bench] torch/diffusers not installed; skipped", file=sys.stderr)
        return []
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.engines.tiny_diffusers import build_wan_t2v

    from vidgate.engines.base import RenderSpec
    from vidgate.engines.diffusers_engine import DiffusersEngine, call_arguments
    from vidgate.engines.diffusers_models import DiffusersBinding, pipeline_size

    with tempfile.TemporaryDirectory(prefix="vidgate-diffusers-bench-") as tmp:
        weights = build_wan_t2v(Path(tmp) / "wan")
        binding = DiffusersBinding(path=weights, pipeline="WanPipeline", dtype="float32", device=device,
                                   steps=STEPS)
        engine = DiffusersEngine({"m": binding}, preset="veryfast", crf=23)
        pipe = engine.pipeline("m")
        specs = [RenderSpec(model="m", prompt=f"the red fox runs through fresh snow {i}", duration_s=SECONDS,
                            width=SIZE, height=SIZE, fps=24, seed=i) for i in range(jobs)]

        def bare(spec: RenderSpec) -> None:
            width, height = pipeline_size(binding, spec.width, spec.height)
            kwargs = call_arguments(binding, spec, width, height)
            _ = pipe(**kwargs, generator=torch.Generator().manual_seed(spec.seed)).frames[0]

        def through_engine(batch: list[RenderSpec]) -> None:
            """As a worker runs them: each job's encode overlaps the next job's generate (one at a time)."""
            with ThreadPoolExecutor(1) as encoder:
                pending = None
                for spec in batch:
                    frames = engine.generate(spec, lambda _f: None)
                    if pending is not None:
                        pending.result()
                    pending = encoder.submit(engine.encode, spec, frames, Path(tmp) / f"{spec.seed}.mp4",
                                             lambda _f: None)
                if pending is not None:
                    pending.result()

        bare(specs[0])
        through_engine(specs[:1])  # warm-up: lazy imports, first allocation
        per_job: dict[str, list[float]] = {"bare": [], "engine": []}
        for _ in range(ROUNDS):  # alternated, so drift on a shared machine hits both sides alike
            start = time.perf_counter()
            for spec in specs:
                bare(spec)
            per_job["bare"].append((time.perf_counter() - start) / jobs)
            start = time.perf_counter()
            through_engine(specs)
            per_job["engine"].append((time.perf_counter() - start) / jobs)
    bare_s, engine_s = statistics.median(per_job["bare"]), statistics.median(per_job["engine"])
    label = f"diffusers_wan_tiny_{SIZE}px_{SECONDS}s_{STEPS}steps_{device}"
    ratio = bare_s / engine_s
    return [
        {"name": f"{label}_s_per_job", "value": round(engine_s, 3), "unit": "s", "reference": round(bare_s, 3),
         "ratio": round(engine_s / bare_s, 3), "target": "", "ok": True},
        {"name": f"{label}_throughput_vs_bare", "value": round(1 / engine_s, 3), "unit": "jobs/s",
         "reference": round(1 / bare_s, 3), "ratio": round(ratio, 3), "target": f"ratio ≥ {TARGET}",
         "ok": ratio >= TARGET},
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--jobs", type=int, default=JOBS)
    args = parser.parse_args()
    for row in measure(args.device, args.jobs):
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
