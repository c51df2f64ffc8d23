"""The `diffusers` engine on tiny random-weight pipelines that the tests build and save themselves.

They are bound exactly as an operator binds real weights (`VIDGATE_DIFFUSERS_MODELS`, models of their own in
`VIDGATE_CATALOG_FILE`) and driven through the HTTP API on the CPU, with the loading path for real: saved with
`save_pretrained`, loaded with `from_pretrained(..., local_files_only=True)`.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

try:
    import diffusers  # noqa: F401
    import torch
except ImportError:
    if os.environ.get("VIDGATE_REQUIRE_DIFFUSERS"):
        raise
    pytest.skip("torch/diffusers not installed (pip install 'vidgate[diffusers]'; CI sets VIDGATE_REQUIRE_DIFFUSERS)",
                allow_module_level=True)

from tests.conftest import Api, api_for, data_url
from tests.engines.tiny_diffusers import build_ltx_i2v, build_ltx_t2v, build_wan_i2v, build_wan_t2v
from tests.media.factory import make_png, prepared_input
from tests.test_media_inputs import video_facts
from vidgate.engines import diffusers_engine
from vidgate.engines.base import RenderSpec
from vidgate.engines.diffusers_engine import DiffusersEngine, OutOfDeviceMemory, call_arguments, load_pipeline
from vidgate.engines.diffusers_models import DiffusersBinding, frame_count
from vidgate.settings import load_settings

PRICE = {"kind": "per_second", "rates": {"*": "0.01"}, "rounding": {"step": "0.01", "mode": "half_up"}}


def own_model(model_id: str, task: str, **fields: Any) -> dict[str, Any]:
    """A model of the operator's own, in their catalogue file, rendered by the diffusers engine."""
    record = {"id": model_id, "name": model_id, "task": task,
              "model_type": "text-to-video" if task == "t2v" else "image-to-video",
              "durations": ["1s", "2s"], "resolutions": ["256p"], "default_resolution": "256p", "audio": "none",
              "pricing": PRICE, "engine": "diffusers"}
    if task == "t2v":
        record |= {"aspect_ratios": ["1:1", "16:9"], "default_aspect_ratio": "1:1"}
    else:
        record["inputs"] = {"image_url": "required"}
    return record | fields


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("weights")
    return {"wan_t2v": build_wan_t2v(root / "wan-t2v"), "wan_i2v": build_wan_i2v(root / "wan-i2v"),
            "ltx_t2v": build_ltx_t2v(root / "ltx-t2v"), "ltx_i2v": build_ltx_i2v(root / "ltx-i2v")}


def binding(path: Path, pipeline: str, **options: Any) -> dict[str, Any]:
    return {"path": str(path), "pipeline": pipeline, "dtype": "float32", "device": "cpu", "steps": 2, **options}


@pytest.fixture
def bound(weights: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The environment an operator writes: a catalogue file with their models, and the bindings."""
    catalog = {"models": [own_model("tiny-wan", "t2v", audio="native"), own_model("tiny-wan-i2v", "i2v"),
                          own_model("tiny-ltx", "t2v", durations=["1s"])]}
    (tmp_path / "catalog.json").write_text(json.dumps(catalog))
    monkeypatch.setenv("VIDGATE_CATALOG_FILE", str(tmp_path / "catalog.json"))
    monkeypatch.setenv("VIDGATE_DIFFUSERS_MODELS", json.dumps({
        "tiny-wan": binding(weights["wan_t2v"], "WanPipeline"),
        "tiny-wan-i2v": binding(weights["wan_i2v"], "WanImageToVideoPipeline", size_multiple=32),
        "tiny-ltx": binding(weights["ltx_t2v"], "LTXPipeline"),
        "wan-2.5-preview-text-to-video": binding(weights["wan_t2v"], "WanPipeline", resolutions=["480p"]),
    }))
    yield tmp_path


@pytest.fixture
async def gpu_api(bound: Path) -> AsyncIterator[Api]:
    async with api_for(load_settings(data_dir=bound / "data", x264_preset="ultrafast", lease_seconds=30.0,
                                     idle_poll_seconds=0.2, max_attempts=2)) as api:
        yield api


async def generate(api: Api, key: str, body: dict[str, Any], jobs: int = 1) -> list[bytes]:
    queued = []
    for _ in range(jobs):
        response = await api.post("/video/queue", body, key)
        assert response.status_code == 200, response.text
        queued.append(response.json()["queue_id"])
    await api.run_worker(max_jobs=jobs, timeout=300)
    videos = []
    for queue_id in queued:
        got = await api.post("/video/retrieve", {"model": body["model"], "queue_id": queue_id}, key)
        assert got.headers["content-type"] == "video/mp4", got.text[:300]
        videos.append(got.content)
    return videos


def frames_of(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


# --- through the HTTP API ---------------------------------------------------------------------------------


async def test_text_to_video_job_has_the_requested_frames_size_fps_and_silence(gpu_api: Api) -> None:
    key = await gpu_api.new_key()
    [video] = await generate(gpu_api, key, {"model": "tiny-wan", "prompt": "the red fox runs through fresh snow",
                                            "duration": "1s", "resolution": "256p", "aspect_ratio": "1:1"})
    facts = video_facts(video)
    assert facts["size"] == (256, 256) and facts["fps"] == 24 and facts["frames"] == 24
    with av.open(io.BytesIO(video)) as container:
        sound = np.concatenate([f.to_ndarray().ravel() for f in container.decode(audio=0)])
    assert abs(facts["audio_duration"] - 1) < 0.05 and float(np.abs(sound).max()) < 1e-3, "silence, model has audio"


async def test_wide_frames_are_rounded_to_the_models_multiple(gpu_api: Api) -> None:
    key = await gpu_api.new_key()
    [video] = await generate(gpu_api, key, {"model": "tiny-wan", "prompt": "the fox", "duration": "1s",
                                            "resolution": "256p", "aspect_ratio": "16:9"})
    assert video_facts(video)["size"] == (448, 256)  # 16:9 at 256p is 456x256; Wan takes multiples of 16


async def test_the_same_seed_gives_the_same_frames_and_another_seed_others(gpu_api: Api) -> None:
    key = await gpu_api.new_key()
    body = {"model": "tiny-ltx", "prompt": "the red fox", "duration": "1s", "resolution": "256p",
            "aspect_ratio": "1:1"}
    first, again = await generate(gpu_api, key, {**body, "seed": 7}, jobs=2)
    [other] = await generate(gpu_api, key, {**body, "seed": 8})
    assert video_facts(first)["frames"] == 24
    assert np.array_equal(frames_of(first), frames_of(again))
    assert not np.array_equal(frames_of(first), frames_of(other))


async def test_image_to_video_job_through_the_api(gpu_api: Api, tmp_path: Path) -> None:
    key = await gpu_api.new_key()
    image = data_url(make_png(tmp_path / "start.png", 320, 320), "image/png")
    [video] = await generate(gpu_api, key, {"model": "tiny-wan-i2v", "prompt": "the fox", "duration": "1s",
                                            "resolution": "256p", "image_url": image})
    facts = video_facts(video)
    assert facts["size"] == (256, 256) and facts["frames"] == 24


async def test_a_worker_loads_each_model_once_and_keeps_it(gpu_api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[str] = []

    def counting_load(binding: DiffusersBinding, device: str) -> Any:
        loads.append(str(binding.path))
        return load_pipeline(binding, device)

    monkeypatch.setattr(diffusers_engine, "load_pipeline", counting_load)
    key = await gpu_api.new_key()
    await generate(gpu_api, key, {"model": "tiny-wan", "prompt": "the fox", "duration": "1s"}, jobs=3)
    assert len(loads) == 1


async def test_out_of_memory_fails_the_attempt_frees_memory_and_the_worker_goes_on(
        gpu_api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    freed: list[bool] = []
    real_load = diffusers_engine.load_pipeline

    class RunsOutOfMemory:
        """The real pipeline, except that prompts about elephants do not fit on the device."""

        def __init__(self, pipe: Any) -> None:
            self.pipe = pipe

        def __call__(self, **kwargs: Any) -> Any:
            if "elephant" in kwargs["prompt"]:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
            return self.pipe(**kwargs)

    monkeypatch.setattr(diffusers_engine, "load_pipeline", lambda b, d: RunsOutOfMemory(real_load(b, d)))
    monkeypatch.setattr(diffusers_engine, "free_device_memory", lambda: freed.append(True))
    key = await gpu_api.new_key(balance_usd=5)
    account = await gpu_api.account_of(key)
    big = await gpu_api.post("/video/queue", {"model": "tiny-wan", "prompt": "an elephant", "duration": "1s"}, key)
    small = await gpu_api.post("/video/queue", {"model": "tiny-wan", "prompt": "a fox", "duration": "1s"}, key)
    await gpu_api.run_worker(max_jobs=3, timeout=300)  # the elephant twice (max_attempts=2), then the fox
    failed = await gpu_api.post("/video/retrieve", {"model": "tiny-wan", "queue_id": big.json()["queue_id"]}, key)
    assert failed.status_code == 500
    done = await gpu_api.post("/video/retrieve", {"model": "tiny-wan", "queue_id": small.json()["queue_id"]}, key)
    assert done.headers["content-type"] == "video/mp4"
    assert len(freed) == 2
    balance, ledger_sum = gpu_api.balance_and_ledger(account)
    assert balance == ledger_sum == 5_000_000 - 10_000, "the failed job is refunded once, the other charged"


async def test_requests_the_binding_cannot_honour_are_400s_before_the_charge(gpu_api: Api) -> None:
    key = await gpu_api.new_key(balance_usd=5)
    body = {"model": "wan-2.5-preview-text-to-video", "prompt": "the fox", "duration": "5s", "resolution": "720p"}
    wrong_size = await gpu_api.post("/video/queue", body, key)
    assert wrong_size.status_code == 400
    issue = wrong_size.json()["issues"][0]
    assert issue["path"] == ["resolution"] and issue["expected"] == "'480p'"
    too_long = await gpu_api.post("/video/queue", {**body, "resolution": "480p", "duration": "10s"}, key)
    assert too_long.status_code == 400
    issue = too_long.json()["issues"][0]
    assert issue["path"] == ["duration"] and "at most 81 frames (5s)" in issue["message"]
    assert too_long.headers["x-venice-balance-usd"] == "5.000000"


# --- the engine, one job at a time ------------------------------------------------------------------------


def spec_for(model: str, *, seconds: int = 1, size: int = 256, **fields: Any) -> RenderSpec:
    return RenderSpec(model=model, prompt="the red fox", duration_s=seconds, width=size, height=size, fps=24,
                      seed=3, **fields)


def test_progress_follows_the_denoising_steps_then_the_encoding(weights: dict[str, Path], tmp_path: Path) -> None:
    engine = DiffusersEngine({"m": DiffusersBinding.model_validate(binding(weights["ltx_t2v"], "LTXPipeline",
                                                                          steps=4))})
    seen: list[float] = []
    engine.render(spec_for("m"), tmp_path / "out.mp4", seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert seen[:4] == pytest.approx([0.225, 0.45, 0.675, 0.9]), "steps done / total, on 90 % of the bar"


def test_a_lost_lease_stops_the_pipeline_at_the_next_step(weights: dict[str, Path], tmp_path: Path) -> None:
    engine = DiffusersEngine({"m": DiffusersBinding.model_validate(binding(weights["wan_t2v"], "WanPipeline",
                                                                          steps=6))})
    pipe = engine.pipeline("m")
    calls: list[int] = []
    hook = pipe.transformer.register_forward_hook(lambda *_: calls.append(1))

    class LeaseLost(Exception):
        pass

    def lose_lease(_fraction: float) -> None:
        raise LeaseLost

    try:
        with pytest.raises(LeaseLost):
            engine.render(spec_for("m"), tmp_path / "out.mp4", lose_lease)
        stopped = len(calls)
        calls.clear()
        engine.render(spec_for("m"), tmp_path / "full.mp4", lambda _f: None)
    finally:
        hook.remove()
    assert stopped * 6 == len(calls), "one step of six ran"
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize(("name", "pipeline"), [("wan_i2v", "WanImageToVideoPipeline"),
                                                ("ltx_i2v", "LTXImageToVideoPipeline")])
def test_image_to_video_conditions_the_first_frame_on_the_image(weights: dict[str, Path], tmp_path: Path,
                                                                name: str, pipeline: str) -> None:
    """With random weights the decoded pixels say little, so this looks where conditioning is exact: the first
    latent frame is the input image's encoding (Wan 2.2) or stays fixed by it (LTX) through denoising."""
    options = {"size_multiple": 32} if name == "wan_i2v" else {}
    bound_to = DiffusersBinding.model_validate(binding(weights[name], pipeline, **options))
    pipe = load_pipeline(bound_to, "cpu")
    first = []
    for colour in ((200, 40, 40), (30, 60, 220)):
        path = tmp_path / f"{colour[0]}.png"
        Image.new("RGB", (320, 200), colour).save(path)
        spec = spec_for("m", size=64, inputs={"image_url": (prepared_input(path, "image_url"),)})
        kwargs = call_arguments(bound_to, spec, 64, 64)
        assert kwargs["image"].size == (64, 64), "the image is cover-cropped to the output size"
        kwargs["output_type"] = "latent"
        latents = pipe(**kwargs, generator=torch.Generator().manual_seed(3)).frames
        if name == "ltx_i2v":
            latents = pipe._unpack_latents(latents, (kwargs["num_frames"] - 1) // 8 + 1, 2, 2, 1, 1)
        first.append(latents[:, :, 0])
        if name == "wan_i2v":
            pixels = pipe.video_processor.preprocess(kwargs["image"], height=64, width=64).unsqueeze(2)
            encoded = pipe.vae.encode(pixels).latent_dist.mode()[:, :, 0]
            assert torch.allclose(latents[:, :, 0], encoded, atol=1e-5)
    assert not torch.allclose(first[0], first[1]), "another image, another first frame"


def test_frame_counts_follow_each_familys_rule() -> None:
    wan = DiffusersBinding.model_validate(binding(Path("/x"), "WanPipeline"))
    ltx = DiffusersBinding.model_validate(binding(Path("/x"), "LTXPipeline"))
    assert [frame_count(wan, s) for s in (1, 5)] == [17, 81]  # 4k+1 at 16 fps
    assert [frame_count(ltx, s) for s in (1, 5)] == [25, 121]  # 8k+1 at 24 fps


def test_out_of_memory_is_a_clear_error(weights: dict[str, Path], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    engine = DiffusersEngine({"m": DiffusersBinding.model_validate(binding(weights["wan_t2v"], "WanPipeline"))})

    def oom(**_kwargs: Any) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    monkeypatch.setattr(engine, "_pipelines", {"m": oom})
    with pytest.raises(OutOfDeviceMemory, match="ran out of memory generating 17 frames at 256x256"):
        engine.render(spec_for("m"), tmp_path / "out.mp4", lambda _f: None)


# --- startup ----------------------------------------------------------------------------------------------


def serve_with(env: dict[str, str], data_dir: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VIDGATE_")}
    return subprocess.run([sys.executable, "-m", "vidgate", "serve", "--data-dir", str(data_dir), "--port", "1"],
                          capture_output=True, text=True, env={**clean, **env}, timeout=60)


@pytest.mark.parametrize(
    ("models", "named"),
    [
        ({"wan-2.5-preview-text-to-video": {"path": "/no/such/weights", "pipeline": "WanPipeline"}},
         ["wan-2.5-preview-text-to-video", "/no/such/weights", "does not exist"]),
        ({"no-such-model": {"path": "/tmp", "pipeline": "WanPipeline"}}, ["no-such-model", "not in the catalogue"]),
        ({"wan-2.5-preview-text-to-video": {"path": "/tmp", "pipeline": "WanPipeline"}},
         ["wan-2.5-preview-text-to-video", "model_index.json"]),
        ({"wan-2.5-preview-text-to-video": {"path": "/tmp", "pipeline": "MagicPipeline"}},
         ["VIDGATE_DIFFUSERS_MODELS", "pipeline"]),
    ],
)
def test_a_binding_that_cannot_load_stops_the_server_at_start(tmp_path: Path, models: dict[str, Any],
                                                              named: list[str]) -> None:
    done = serve_with({"VIDGATE_DIFFUSERS_MODELS": json.dumps(models)}, tmp_path / "data")
    assert done.returncode == 2, done.stdout + done.stderr
    for text in named:
        assert text in done.stderr


def test_a_truncated_weights_copy_stops_the_server_at_start(weights: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    copy = shutil.copytree(weights["wan_t2v"], tmp_path / "copy")
    for weights_file in (copy / "transformer").glob("*.safetensors"):
        weights_file.unlink()
    models = {"wan-2.5-preview-text-to-video": {"path": str(copy), "pipeline": "WanPipeline"}}
    done = serve_with({"VIDGATE_DIFFUSERS_MODELS": json.dumps(models)}, tmp_path / "data")
    assert done.returncode == 2
    assert "wan-2.5-preview-text-to-video" in done.stderr and "transformer" in done.stderr
