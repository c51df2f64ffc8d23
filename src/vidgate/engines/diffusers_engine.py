"""The `diffusers` engine: real text- and image-to-video generation from local weights (Wan, LTX-Video).

A worker makes one engine and keeps it: each bound pipeline is loaded on first use and stays on its device
across jobs. A job runs the pipeline at the model's native rate and frame-count rule (Wan 16 fps, 4k+1
frames; LTX 24 fps, 8k+1), at the planned size rounded to the pipeline's multiple, with a `torch.Generator`
seeded from the job, and reports progress from the denoising step callback (steps done / total, then the
encoding). The progress callback raises when the job's lease is lost, which stops the pipeline at its next
step. The frames are resampled to the catalogue's rate and encoded by the shared MP4 writer, with
`audio_url` as the soundtrack, or silence when the model has audio.

torch and diffusers are imported when the first pipeline loads, so a worker without bound models never
imports them (`pip install 'vidgate[diffusers]'` brings them).
"""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from vidgate.engines.base import ProgressCallback, RenderSpec
from vidgate.engines.diffusers_models import DiffusersBinding, frame_count, pipeline_size
from vidgate.engines.encode import AUDIO_RATE, BufferAudio, Mp4Writer
from vidgate.engines.frames import EncodingEngine, load_cover
from vidgate.engines.procedural import soundtrack

DENOISE_SHARE = 0.9  # of the progress bar; the encoding takes the rest


class OutOfDeviceMemory(RuntimeError):
    """The device ran out of memory for this job; the memory was freed and the worker can go on."""


class DiffusersEngine(EncodingEngine):
    """Runs bound diffusers pipelines; one instance per worker process, pipelines kept warm."""

    name = "diffusers"

    def __init__(self, bindings: dict[str, DiffusersBinding], *, device: str | None = None,
                 preset: str = "veryfast", crf: int = 23) -> None:
        super().__init__(preset=preset, crf=crf)
        self.bindings = bindings
        self.device = device  # `vidgate worker --device cuda:1` wins over the bindings' devices
        self._pipelines: dict[str, Any] = {}
        self._lock = threading.Lock()

    def device_of(self, binding: DiffusersBinding) -> str:
        return self.device or binding.device

    def pipeline(self, model: str) -> Any:
        """The model's pipeline, loaded from its directory once (never from a hub)."""
        with self._lock:
            pipe = self._pipelines.get(model)
            if pipe is None:
                binding = self.bindings[model]
                pipe = self._pipelines[model] = load_pipeline(binding, self.device_of(binding))
            return pipe

    def render(self, spec: RenderSpec, out_path: Path, progress: ProgressCallback) -> None:
        self.encode(spec, self.generate(spec, progress), out_path, progress)

    def generate(self, spec: RenderSpec, progress: ProgressCallback) -> np.ndarray:
        """The device stage: the pipeline's frames at the model's native rate. The worker runs the next job's
        generate while this job's `encode` finishes (engines with both stages overlap them)."""
        binding = self.bindings.get(spec.model)
        if binding is None:
            raise ValueError(f"model {spec.model} is not bound to a diffusers pipeline on this worker")
        return generate(self.pipeline(spec.model), binding, spec, self.device_of(binding), progress)

    def encode(self, spec: RenderSpec, frames: np.ndarray, out_path: Path, progress: ProgressCallback) -> None:
        """The CPU stage: frames resampled to the catalogue's rate, into the MP4 with its soundtrack."""
        binding = self.bindings[spec.model]
        width, height = frames.shape[2], frames.shape[1]
        out_frames = spec.duration_s * spec.fps
        with Mp4Writer(Path(out_path), width, height, spec.fps, frame_count=out_frames, settings=self.settings(spec),
                       audio=soundtrack(spec, silence),
                       progress=lambda f: progress(DENOISE_SHARE + (1 - DENOISE_SHARE) * f)) as mp4:
            for i in range(out_frames):
                # Nearest native frame at this output time: a 16 fps model's frames resampled to 24 fps.
                mp4.write_rgb(frames[min(len(frames) - 1, round(i * binding.fps / spec.fps))])


def load_pipeline(binding: DiffusersBinding, device: str) -> Any:
    """Load a pipeline from its local directory onto `device` with the binding's options."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: local_files_only already forbids the hub
    import diffusers
    import torch

    cls = getattr(diffusers, binding.pipeline)
    pipe = cls.from_pretrained(str(binding.path), dtype=getattr(torch, binding.dtype), local_files_only=True)
    if binding.shift is not None and "flow_shift" in pipe.scheduler.config:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, flow_shift=binding.shift)
    if binding.vae_tiling and hasattr(pipe, "vae") and hasattr(pipe.vae, "enable_tiling"):
        pipe.vae.enable_tiling()
    if binding.cpu_offload and device != "cpu":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def seed_of(spec: RenderSpec) -> int:
    return spec.seed % (2**32)


def call_arguments(binding: DiffusersBinding, spec: RenderSpec, width: int, height: int) -> dict[str, Any]:
    """The request mapped onto the pipeline's arguments (see the README's table)."""
    kwargs: dict[str, Any] = {
        "prompt": spec.prompt,
        "negative_prompt": spec.negative_prompt or None,
        "height": height,
        "width": width,
        "num_frames": frame_count(binding, spec.duration_s),
        "num_inference_steps": binding.steps,
        "guidance_scale": binding.guidance_scale,
        "output_type": "np",
    }
    if binding.pipeline.startswith("LTX"):
        kwargs["frame_rate"] = binding.fps
    family = binding.family
    if family.takes_image:
        start = spec.inputs.get("image_url") or spec.inputs.get("keyframes")
        if not start:
            raise ValueError(f"{binding.pipeline} needs image_url")
        kwargs["image"] = load_cover(start[0].path, width, height)
        end = spec.inputs.get("end_image_url")
        if end and family.takes_last_image:
            kwargs["last_image"] = load_cover(end[0].path, width, height)
    return kwargs


def generate(pipe: Any, binding: DiffusersBinding, spec: RenderSpec, device: str,
             progress: ProgressCallback) -> np.ndarray:
    """Run the pipeline: (frames, height, width, 3) uint8 RGB at the model's native rate."""
    import torch

    width, height = pipeline_size(binding, spec.width, spec.height)
    kwargs = call_arguments(binding, spec, width, height)
    generator = torch.Generator(device="cpu").manual_seed(seed_of(spec))
    steps = binding.steps

    def on_step_end(_pipe: Any, step: int, _timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        # Raises when the lease is lost: the exception leaves the denoising loop at this step.
        progress(DENOISE_SHARE * min(1.0, (step + 1) / steps))
        return callback_kwargs

    try:
        with torch.inference_mode():
            result = pipe(**kwargs, generator=generator, callback_on_step_end=on_step_end)
    except torch.cuda.OutOfMemoryError as exc:
        free_device_memory()
        raise OutOfDeviceMemory(f"{device} ran out of memory generating {kwargs['num_frames']} frames at "
                                f"{width}x{height}: {exc}") from None
    except BaseException:
        free_device_memory()
        raise
    video = np.asarray(result.frames[0])
    if video.dtype != np.uint8:
        video = (np.clip(video, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return video


def free_device_memory() -> None:
    """Give cached device memory back after a failed job, so the next one starts clean."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def silence(spec: RenderSpec) -> BufferAudio:
    """A model with audio, and no `audio_url`: a silent track of the video's length."""
    samples = round(spec.duration_s * AUDIO_RATE)
    return BufferAudio(np.zeros((2, samples), dtype=np.float32), samples)
