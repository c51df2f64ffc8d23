"""Pictures from the user's media, shared by the engines that start from it (image, reference, video, ...).

Everything here works on Pillow images at the output size (RGB, or yuv420p planes as three "L" images):
Pillow's C resize, blend, point and paste keep an engine's per-frame cost near libx264's, with no per-pixel
Python.

- `load_image` / `cover_image` / `load_cover`: an input picture, upright and RGB, cover-cropped (centred).
- `Still`: one picture prepared once at a working size a little larger than the frame, so a slow Ken Burns
  pan/zoom (`at(amount)`, or `planes_at` for yuv420p) is a single sub-pixel crop-and-resize per frame, and
  `amount == 0` is the exact cover-cropped picture.  `crossfade` blends two frames.
- `VideoSampler`: a video's frames by timestamp (nearest frame), decoded forward and streamed: at most two
  decoded frames are held, whatever the clip's length.  `frame_cover` makes one upright and frame-sized;
  `clip_seconds` / `has_audio` read an input item's probe info.
- `PromptGrade`: a colour grade (split toning from the prompt's palette, a gentle S-curve) and a vignette.
- `PromptCaption`: the prompt as one line of text on a shaded band along the bottom.
- `EncodingEngine`: the constructor and encoder settings every engine shares.
- `read_clip_timing`: a clip's exact frame rate and frame count, from its headers.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFont, ImageOps

from vidgate.engines.base import RenderSpec
from vidgate.engines.encode import DEFAULT_X264_THREADS, EncoderSettings
from vidgate.engines.procedural import prompt_palette, spec_digest
from vidgate.media.types import AudioInfo, Info, PreparedInput, VideoInfo

Box = tuple[float, float, float, float]

# The working copy of a still is this much larger than the frame: the most a Ken Burns zoom can reach while
# still taking every output pixel from a real source pixel (no upscaling past 1:1).
WORK_SCALE = 1.2
# Zoom range of the Ken Burns move (the box shrinks to 1/zoom of the working picture at amount 1).
MIN_ZOOM, MAX_ZOOM = 1.08, WORK_SCALE
# The shortest time over which a still's move reaches its full depth: shorter videos or shots move less, so
# the motion stays slow whatever the length.
FULL_MOVE_SECONDS = 4.0


# --------------------------------------------------------------------------------------------------
# Geometry and loading
# --------------------------------------------------------------------------------------------------


def cover_box(src_w: float, src_h: float, dst_w: float, dst_h: float) -> Box:
    """The centred (left, top, right, bottom) box of a src_w×src_h picture with the dst aspect ratio: what
    remains when the picture is scaled to cover the destination and the overflow is cut off equally."""
    if src_w * dst_h > dst_w * src_h:  # wider than the target: cut the sides
        w = src_h * dst_w / dst_h
        x0 = (src_w - w) / 2
        return (x0, 0.0, x0 + w, float(src_h))
    h = src_w * dst_h / dst_w
    y0 = (src_h - h) / 2
    return (0.0, y0, float(src_w), y0 + h)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB: transparency over black, 16-bit and float greyscale scaled, not clipped."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        grey = np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return img.convert("RGB")


def load_image(path: Path | str, min_size: tuple[int, int] | None = None) -> Image.Image:
    """An image file as an upright (EXIF orientation applied) RGB picture; the first frame of an animation.

    With `min_size`, JPEGs are decoded at the smallest DCT scale that still covers it in both directions
    (the size is treated as square because the EXIF rotation is only known after decoding).
    """
    with Image.open(path) as img:
        if min_size is not None and img.format == "JPEG":
            side = max(min_size)
            img.draft("RGB", (side, side))
        img.load()
        upright = ImageOps.exif_transpose(img)
        return to_rgb(upright if upright is not None else img)


def cover_image(img: Image.Image, width: int, height: int,
                resample: Image.Resampling = Image.Resampling.LANCZOS) -> Image.Image:
    """`img` cover-cropped (centred) to width×height and resized to exactly that size."""
    box = cover_box(img.width, img.height, width, height)
    return img.resize((width, height), resample, box=box, reducing_gap=3.0)


def load_cover(path: Path | str, width: int, height: int) -> Image.Image:
    """An image file cover-cropped and resized to width×height."""
    return cover_image(load_image(path, (width, height)), width, height)


def even(value: float) -> int:
    """The nearest even integer ≥ 2 (yuv420p sizes)."""
    return max(2, round(value / 2) * 2)


# --------------------------------------------------------------------------------------------------
# Ken Burns stills
# --------------------------------------------------------------------------------------------------


def motion_rng(spec: RenderSpec, salt: str) -> np.random.Generator:
    """A generator for motion choices: deterministic per spec (prompt, seed, size, ...) and per `salt`."""
    digest = hashlib.sha256(spec_digest(spec) + b"motion:" + salt.encode()).digest()
    return np.random.default_rng(np.frombuffer(digest, dtype=np.uint64))


def yuv_planes(img: Image.Image) -> tuple[Image.Image, Image.Image, Image.Image]:
    """An RGB picture of even size as its yuv420p planes (Y full size, U and V half), as "L" images.

    The conversion is swscale's, the same one Mp4Writer applies to RGB frames, so both paths look alike.
    """
    w, h = img.size
    flat = av.VideoFrame.from_image(img).reformat(format="yuv420p").to_ndarray().ravel()
    cw, ch = w // 2, h // 2
    y = flat[: w * h].reshape(h, w)
    u = flat[w * h : w * h + cw * ch].reshape(ch, cw)
    v = flat[w * h + cw * ch :].reshape(ch, cw)
    return Image.fromarray(y, "L"), Image.fromarray(u, "L"), Image.fromarray(v, "L")


def planes_array(planes: tuple[Image.Image, Image.Image, Image.Image]) -> np.ndarray:
    """yuv420p planes as the (H·3/2, W) array that `Mp4Writer.write_yuv420p` takes."""
    width = planes[0].width
    return np.concatenate([np.asarray(p).ravel() for p in planes]).reshape(-1, width)


class Still:
    """One picture ready for a slow pan/zoom at a fixed output size.

    `at(0.0)` is the picture exactly cover-cropped to the frame; as `amount` grows to 1.0 the view zooms in
    towards `zoom` and drifts along `pan` (a direction in [-1, 1]²), never leaving the picture.  With
    `yuv=True` the still is kept as yuv420p planes and `planes_at` gives the frame ready for the encoder
    (half the bytes to resample and no colour conversion per frame); otherwise `at` gives RGB.  Returned
    images may be shared between calls: treat them as read-only.
    """

    def __init__(self, img: Image.Image, width: int, height: int, *, zoom: float = 1.12,
                 pan: tuple[float, float] = (0.0, 0.0), yuv: bool = False) -> None:
        self.width, self.height = width, height
        full = cover_image(img, width, height)
        work = cover_image(img, even(width * WORK_SCALE), even(height * WORK_SCALE))
        self.work_size = work.size
        self.zoom = min(max(zoom, 1.0), WORK_SCALE)
        self.pan = pan
        self.yuv = yuv
        # (exact frame, working picture, subsampling) per plane: one RGB layer, or Y, U and V.
        if yuv:
            self._layers = [(f, w, 1 if n == 0 else 2)
                            for n, (f, w) in enumerate(zip(yuv_planes(full), yuv_planes(work), strict=True))]
        else:
            self._layers = [(full, work, 1)]

    @classmethod
    def from_file(cls, path: Path | str, width: int, height: int, rng: np.random.Generator, *,
                  yuv: bool = False) -> Still:
        """Load `path` and pick its zoom and pan direction from `rng`."""
        img = load_image(path, (math.ceil(width * WORK_SCALE), math.ceil(height * WORK_SCALE)))
        angle = float(rng.uniform(0, 2 * math.pi))
        reach = float(rng.uniform(0.4, 1.0))
        return cls(img, width, height, zoom=float(rng.uniform(MIN_ZOOM, MAX_ZOOM)),
                   pan=(reach * math.cos(angle), reach * math.sin(angle)), yuv=yuv)

    def box(self, amount: float) -> Box:
        """The part of the working picture shown at `amount` (0 … 1)."""
        return self.box_for(1.0 + (self.zoom - 1.0) * min(max(amount, 0.0), 1.0), self.pan)

    def box_for(self, zoom: float, pan: tuple[float, float]) -> Box:
        """The part of the working picture a camera at `zoom` (1 … WORK_SCALE), aimed at `pan` ([-1, 1]²), sees."""
        ww, wh = self.work_size
        zoom = min(max(zoom, 1.0), WORK_SCALE)
        # The zoom is relative to the frame's own cover crop, which is the whole working picture.
        bw, bh = ww / zoom, wh / zoom
        cx = ww / 2 + min(max(pan[0], -1.0), 1.0) * (ww - bw) / 2
        cy = wh / 2 + min(max(pan[1], -1.0), 1.0) * (wh - bh) / 2
        return (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)

    def _render(self, amount: float, box: Box | None = None) -> list[Image.Image]:
        if box is None and amount <= 0.0:
            return [full for full, _, _ in self._layers]
        box = box or self.box(amount)
        return [work.resize((self.width // sub, self.height // sub), Image.Resampling.BILINEAR,
                            box=tuple(c / sub for c in box))
                for _, work, sub in self._layers]

    def at(self, amount: float) -> Image.Image:
        """The RGB frame at `amount` of the move: the exact cover crop at 0, zoomed and panned towards 1."""
        if self.yuv:
            raise ValueError("this still holds yuv420p planes: use planes_at")
        return self._render(amount)[0]

    def planes_at(self, amount: float) -> tuple[Image.Image, Image.Image, Image.Image]:
        """The frame at `amount` as yuv420p planes (a still made with `yuv=True`)."""
        if not self.yuv:
            raise ValueError("this still holds RGB: use at")
        y, u, v = self._render(amount)
        return y, u, v

    def planes_for(self, zoom: float, pan: tuple[float, float]) -> tuple[Image.Image, Image.Image, Image.Image]:
        """The yuv420p frame a camera at `zoom`, aimed at `pan`, sees (see box_for)."""
        y, u, v = self._render(1.0, self.box_for(zoom, pan))
        return y, u, v


def crossfade(a: Image.Image, b: Image.Image, weight: float) -> Image.Image:
    """`a` blended towards `b` by `weight` (0 → a, 1 → b). Blending Y, U and V planes one by one is the
    same as blending the RGB pictures: the colour conversion is affine."""
    if weight <= 0.0:
        return a
    if weight >= 1.0:
        return b
    return Image.blend(a, b, weight)


def smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


# --------------------------------------------------------------------------------------------------
# Video frames by timestamp
# --------------------------------------------------------------------------------------------------


def frame_image(frame: av.VideoFrame) -> Image.Image:
    """A decoded frame as an upright RGB picture (the stream's display rotation applied)."""
    img = frame.to_image()
    turns = round((frame.rotation or 0) / 90) % 4  # counter-clockwise degrees, as FFmpeg's display matrix
    if turns:
        img = img.transpose((Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
                             Image.Transpose.ROTATE_270)[turns - 1])
    return img


def frame_cover(frame: av.VideoFrame, width: int, height: int) -> Image.Image:
    """A decoded frame, upright, cover-cropped and scaled to width×height."""
    if not frame.rotation and frame.width * height == frame.height * width:
        # Same aspect: swscale converts and scales in one pass.
        return frame.reformat(width=width, height=height, format="rgb24").to_image()
    return cover_image(frame_image(frame), width, height, Image.Resampling.BILINEAR)


class VideoSampler:
    """A video's frames by time: `at(t)` is the frame nearest to `t` seconds after the first frame.

    Decoding only moves forward and keeps two frames, so memory does not grow with the clip.  Asking for an
    earlier time than the last one reopens the file (that is how a clip loops); asking past the end gives the
    last frame.  A decode error after the first frame counts as the end of the clip (a damaged tail freezes
    on the last good frame rather than failing the job).
    """

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._container: av.container.InputContainer | None = None
        self._last_t = math.inf  # forces the first `at` to open the file

    def __enter__(self) -> VideoSampler:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def _open(self) -> None:
        self.close()
        self._container = av.open(self.path)
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or 24
        self._step = 1.0 / float(rate)
        self._decoded = self._container.decode(stream)
        self._index = 0
        self._t0: float | None = None
        self._cur = self._read()
        if self._cur is None:
            raise ValueError(f"{self.path}: no video frames could be decoded")
        self._next = self._read()

    def _read(self) -> tuple[float, av.VideoFrame] | None:
        try:
            frame = next(self._decoded)
        except StopIteration:
            return None
        except av.error.InvalidDataError:
            if self._index == 0:
                raise
            return None
        time = frame.time if frame.time is not None else self._index * self._step
        if self._t0 is None:
            self._t0 = time
        self._index += 1
        return time - self._t0, frame

    def at(self, t: float) -> av.VideoFrame:
        """The frame nearest to `t` seconds from the start (ties go to the earlier frame)."""
        if t < self._last_t:
            self._open()
        self._last_t = t
        assert self._cur is not None
        while self._next is not None and self._next[0] <= t:
            self._cur, self._next = self._next, self._read()
        if self._next is not None and self._next[0] - t < t - self._cur[0]:
            return self._next[1]
        return self._cur[1]


def clip_seconds(item: PreparedInput) -> float:
    """A video or audio input's duration from its probe info, or from the file when the info lacks it."""
    if isinstance(item.info, (VideoInfo, AudioInfo)) and item.info.duration > 0:
        return float(item.info.duration)
    with av.open(item.path) as container:
        return max(0.0, (container.duration or 0) / 1_000_000)


def has_audio(item: PreparedInput) -> bool:
    """Whether a video input has an audio stream (from its probe info, else from the file)."""
    if isinstance(item.info, VideoInfo):
        return item.info.audio_codec is not None
    with av.open(item.path) as container:
        return bool(container.streams.audio)


# --------------------------------------------------------------------------------------------------
# The prompt's look
# --------------------------------------------------------------------------------------------------


class PromptGrade:
    """A colour grade chosen by the prompt: shadows toned towards a dark shade of the prompt's palette,
    highlights towards a light one, a gentle S-curve, and a vignette.

    `strength` (0 … 1) is how far the tones move towards the palette; at 0.3 the picture is clearly
    tinted while whites stay bright, blacks dark and saturated colours keep their hue.  `vignette` is how
    much the corners darken.  One `Image.point` (per-channel table) and one multiply per frame.
    """

    def __init__(self, prompt: str, width: int, height: int, *, strength: float = 0.3,
                 vignette: float = 0.25) -> None:
        palette = prompt_palette(prompt)
        shadow = [0.35 * c for c in palette[0]]
        highlight = [0.6 + 0.4 * c for c in palette[-1]]
        x = np.arange(256, dtype=np.float64) / 255.0
        curved = 0.7 * x + 0.3 * x * x * (3.0 - 2.0 * x)
        table: list[int] = []
        for ch in range(3):
            toned = shadow[ch] * (1.0 - curved) + highlight[ch] * curved
            out = (1.0 - strength) * curved + strength * toned
            table.extend(np.clip(np.round(out * 255.0), 0, 255).astype(int).tolist())
        self.table = table
        self.mask: Image.Image | None = None
        if vignette > 0:
            ys = (np.arange(height, dtype=np.float32) + 0.5) / height * 2 - 1
            xs = (np.arange(width, dtype=np.float32) + 0.5) / width * 2 - 1
            r2 = (xs[None, :] ** 2 + ys[:, None] ** 2) / 2.0  # 0 at the centre, 1 in the corners
            gain = 1.0 - vignette * r2 ** 1.5
            grey = Image.fromarray(np.clip(np.round(gain * 255.0), 0, 255).astype(np.uint8), "L")
            self.mask = Image.merge("RGB", (grey, grey, grey))

    def apply(self, img: Image.Image) -> Image.Image:
        """A graded copy of `img` (which must be the grade's frame size)."""
        out = img.point(self.table)
        if self.mask is not None:
            out = ImageChops.multiply(out, self.mask)
        return out


class PromptCaption:
    """The prompt as one line of text (cut with an ellipsis when too long) on a shaded band at the bottom."""

    def __init__(self, prompt: str, width: int, height: int) -> None:
        text = re.sub(r"\s+", " ", prompt).strip() or "…"
        short = min(width, height)
        size = max(10, int(short * 0.045))
        font = ImageFont.load_default(size=size)
        room = width * 0.92
        if font.getlength(text) > room:
            lo, hi = 0, len(text)  # the longest prefix that fits with its ellipsis
            while lo < hi:
                mid = (lo + hi + 1) // 2
                lo, hi = (mid, hi) if font.getlength(text[:mid] + "…") <= room else (lo, mid - 1)
            text = text[:lo].rstrip() + "…"
        pad = max(2, size // 3)
        band_h = size + 2 * pad
        self.box = (0, height - band_h, width, height)
        self.shade = Image.new("L", (width, band_h), 120)
        self.text = Image.new("L", (width, band_h), 0)
        x = (width - font.getlength(text)) / 2
        ImageDraw.Draw(self.text).text((x, band_h / 2), text, fill=255, font=font, anchor="lm")
        r, g, b = prompt_palette(prompt)[0]
        self.colour = tuple(round(255 * (0.85 + 0.15 * c)) for c in (r, g, b))

    def apply(self, img: Image.Image) -> None:
        """Draw onto `img` in place."""
        img.paste((0, 0, 0), self.box, self.shade)
        img.paste(self.colour, self.box, self.text)


# --------------------------------------------------------------------------------------------------
# Engines
# --------------------------------------------------------------------------------------------------


class EncodingEngine:
    """What every MP4-writing engine shares: encoder settings fixed per instance, bitrate mode per job."""

    name = "base"

    def __init__(self, *, preset: str = "veryfast", crf: int = 23, threads: int = DEFAULT_X264_THREADS) -> None:
        self.preset = preset
        self.crf = crf
        self.threads = threads

    def settings(self, spec: RenderSpec) -> EncoderSettings:
        """The encoder settings for `spec` (Seedance's `bitrate_mode: "high"` lowers the CRF)."""
        return EncoderSettings(preset=self.preset, crf=self.crf, threads=self.threads,
                               high_bitrate=spec.options.get("bitrate_mode") == "high")


# --------------------------------------------------------------------------------------------------
# Clip timing
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipTiming:
    """A clip's exact frame rate and frame count, read from its own headers."""

    width: int
    height: int
    fps: Fraction
    frames: int
    has_audio: bool

    @property
    def seconds(self) -> float:
        return float(self.frames / self.fps)


def stream_rate(stream: av.video.stream.VideoStream, probed: float | None,
                fallback: Fraction | None = None) -> Fraction:
    """The stream's frame rate as a Fraction (30000/1001 stays exact); the probe's fps, then `fallback`."""
    for rate in (stream.average_rate, stream.base_rate, stream.guessed_rate):
        if rate and rate > 0:
            rate = Fraction(rate)
            return rate if rate.denominator <= 1001 else rate.limit_denominator(1001)
    if isinstance(probed, (int, float)) and probed > 0:
        return Fraction(probed).limit_denominator(1001)
    if fallback is not None:
        return fallback
    raise ValueError("the video has no frame rate")


# Stands in for a clip without a video probe: all zero, so the file's headers decide alone.
_UNPROBED = VideoInfo(container="", video_codec="", width=0, height=0, fps=0.0, duration=0.0, frames=None,
                      audio_codec=None)


def read_clip_timing(path: str | Path, info: Info | None = None, *, label: str = "the input",
                     fallback_fps: Fraction | None = None) -> ClipTiming:
    """Size, frame rate and frame count from the file's headers; the probe's `info` fills what they lack
    (only a video's info has anything to give)."""
    video = info if isinstance(info, VideoInfo) else _UNPROBED
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{label} has no video stream")
        stream = container.streams.video[0]
        width = stream.codec_context.width or video.width
        height = stream.codec_context.height or video.height
        fps = stream_rate(stream, video.fps, fallback_fps)
        frames = stream.frames or video.frames or 0
        if not frames:
            if stream.duration and stream.time_base:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration:
                seconds = container.duration / av.time_base
            else:
                seconds = float(video.duration)
            frames = round(seconds * fps)
        has_sound = bool(container.streams.audio)
    if width <= 0 or height <= 0 or frames <= 0:
        raise ValueError(f"{label} is empty ({width}x{height}, {frames} frames)")
    return ClipTiming(width, height, fps, frames, has_sound)
