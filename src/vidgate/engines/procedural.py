"""The `procedural` engine: a deterministic, CPU-only video synthesised from the prompt.

Every job gets a real H.264/AAC MP4 whose picture is visibly derived from its prompt: a palette taken
from the prompt's SHA-256, a plasma background that drifts across the frame, a few shapes gliding on
Lissajous paths, the prompt's words popping up one after another in the centre and the whole prompt
scrolling along the bottom.  The audio (when asked for) is a slowly breathing chord, also chosen by the
prompt's hash.

Speed is the main design constraint: the render should cost little more than libx264 itself.  So
everything expensive (the plasma texture, the text masks, the shape masks) is built once per job, and
each frame is assembled directly in YUV 4:2:0 planes with a handful of vectorised numpy operations (a
sliced copy of the pre-rendered background, small integer alpha blends for the overlays).  There is no
RGB→YUV conversion and no per-pixel Python.  The background only translates, which keeps libx264's
work close to what it spends on ffmpeg's own `testsrc2` (see bench/render_bench.py).

Determinism: the same `RenderSpec` always gives the same bytes.  Every random choice comes from a
generator seeded by a hash of the spec, the MP4 muxer gets no wall-clock metadata, and libx264 runs
with a fixed thread count (its output depends on the number of frame threads, so "auto" would make the
bytes depend on the machine's core count).
"""

from __future__ import annotations

import colorsys
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vidgate.engines.base import ProgressCallback, RenderSpec
from vidgate.engines.encode import (
    AUDIO_RATE,
    DEFAULT_X264_THREADS,
    AudioSource,
    EncoderSettings,
    Mp4Writer,
    file_audio,
)

# Cap on the number of distinct word masks pre-rendered for the centre caption (memory bound).
MAX_CAPTION_WORDS = 256
# Cap on the number of characters scrolled in the ticker (a Venice prompt can be a few thousand).
MAX_TICKER_CHARS = 1500

Yuv = tuple[int, int, int]


def _noop_progress(_fraction: float) -> None:
    """Default progress callback: ignore."""


# --------------------------------------------------------------------------------------------------
# Seeds, palette, colour conversion
# --------------------------------------------------------------------------------------------------


def spec_digest(spec: RenderSpec) -> bytes:
    """SHA-256 over every spec field that influences the output (the seed for all randomness)."""
    key = {
        "prompt": spec.prompt,
        "negative_prompt": spec.negative_prompt,
        "seed": spec.seed,
        "model": spec.model,
        "width": spec.width,
        "height": spec.height,
        "fps": spec.fps,
        "duration_s": spec.duration_s,
        "audio": spec.audio,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, ensure_ascii=True).encode()).digest()


def prompt_palette(prompt: str) -> list[tuple[float, float, float]]:
    """3–5 RGB colours (components in 0…1) derived only from the prompt's SHA-256.

    Only the prompt feeds the palette (not the seed) so that the same prompt keeps its colours across
    seeds, which makes the link between prompt and picture obvious.
    """
    h = hashlib.sha256(prompt.encode("utf-8")).digest()
    count = 3 + h[0] % 3
    base_hue = (h[1] << 8 | h[2]) / 65536.0
    # Harmonious hue steps (analogous / triadic / complementary …) keep palettes pleasant.
    step = (0.08, 0.14, 0.21, 0.33, 0.5)[h[3] % 5]
    colours = []
    for i in range(count):
        jitter = (h[4 + i] / 255.0 - 0.5) * 0.06
        hue = (base_hue + i * step + jitter) % 1.0
        sat = 0.55 + 0.4 * h[10 + i] / 255.0
        val = 0.35 + 0.6 * h[16 + i] / 255.0
        colours.append(colorsys.hsv_to_rgb(hue, sat, val))
    return colours


def rgb_to_yuv(rgb: tuple[float, float, float]) -> tuple[float, float, float]:
    """BT.601 limited-range Y'CbCr, the matrix decoders assume for untagged streams via swscale."""
    r, g, b = rgb
    y = 16.0 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128.0 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128.0 + 112.0 * r - 93.786 * g - 18.214 * b
    return y, u, v


def _yuv_int(rgb: tuple[float, float, float]) -> Yuv:
    y, u, v = rgb_to_yuv(rgb)
    return round(y), round(u), round(v)


def _cyclic_luts(palette_yuv: list[tuple[float, float, float]]) -> np.ndarray:
    """A (3, 256) uint8 Y/U/V table that walks smoothly through the palette and back to its start.

    Being cyclic lets the background's plasma index wrap modulo 256 without seams, so the field can
    sweep through the palette more than once.
    """
    n = len(palette_yuv)
    pal = np.array(palette_yuv, dtype=np.float64)  # (n, 3)
    pos = np.arange(256, dtype=np.float64) * n / 256.0
    i0 = np.floor(pos).astype(np.int64) % n
    i1 = (i0 + 1) % n
    frac = pos - np.floor(pos)
    w = (0.5 - 0.5 * np.cos(np.pi * frac))[:, None]  # cosine ease between neighbouring colours
    lut = pal[i0] * (1.0 - w) + pal[i1] * w
    return np.clip(np.round(lut.T), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Overlays: pre-multiplied integer alpha sprites blended straight into the Y/U/V planes
# --------------------------------------------------------------------------------------------------


@dataclass
class _Plane:
    """Pre-computed blend terms for one plane: out = (dst * inv + premul) >> 8."""

    inv: np.ndarray  # uint16, 256 - alpha
    premul: np.ndarray  # uint16, colour * alpha


class Sprite:
    """An antialiased mask with a solid YUV colour, ready to blend into 4:2:0 planes.

    Alpha is stored on a 0…256 scale so the blend is a multiply, an add and a shift in uint16 (the sum
    255·(256-a) + 255·a never exceeds 65 280).  The chroma mask is the 2×2 average of the luma mask,
    which is why sprites are padded to even sizes and always placed at even coordinates.
    """

    def __init__(self, alpha8: np.ndarray, colour: Yuv) -> None:
        """Build from an 8-bit coverage mask (0…255) and a YUV colour."""
        h, w = alpha8.shape
        padded = np.zeros((h + h % 2, w + w % 2), dtype=np.uint32)  # uint32: 255·257 overflows uint16
        padded[:h, :w] = alpha8
        # 0…255 → 0…256 so that full coverage replaces the pixel exactly.
        a = (padded * 257 + 128) >> 8
        ac = (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2] + 2) >> 2
        self.height, self.width = a.shape
        self.planes = (
            self._terms(a, colour[0]),
            self._terms(ac, colour[1]),
            self._terms(ac, colour[2]),
        )

    @staticmethod
    def _terms(a: np.ndarray, value: int) -> _Plane:
        return _Plane(inv=(256 - a).astype(np.uint16), premul=(a * value).astype(np.uint16))

    def blend(self, planes: tuple[np.ndarray, np.ndarray, np.ndarray], x: int, y: int) -> None:
        """Blend with the sprite's top-left corner at (x, y) (rounded down to even), clipped."""
        x -= x & 1
        y -= y & 1
        for idx, (plane, terms) in enumerate(zip(planes, self.planes, strict=True)):
            scale = 1 if idx == 0 else 2
            px, py = x // scale, y // scale
            ph, pw = plane.shape
            sh, sw = terms.inv.shape
            x0, y0 = max(px, 0), max(py, 0)
            x1, y1 = min(px + sw, pw), min(py + sh, ph)
            if x0 >= x1 or y0 >= y1:
                return  # fully off-screen: the other planes are too
            region = plane[y0:y1, x0:x1]
            sl = (slice(y0 - py, y1 - py), slice(x0 - px, x1 - px))
            acc = np.multiply(region, terms.inv[sl], dtype=np.uint16)
            acc += terms.premul[sl]
            acc >>= 8
            region[...] = acc


def _text_mask(text: str, font: ImageFont.FreeTypeFont, stroke: int) -> tuple[np.ndarray, np.ndarray]:
    """Coverage masks (fill, fill+outline) of `text`, both the same size, tightly cropped."""
    left, top, right, bottom = font.getbbox(text, stroke_width=stroke)
    size = (max(1, right - left + 2), max(1, bottom - top + 2))
    origin = (1 - left, 1 - top)
    fill = Image.new("L", size, 0)
    ImageDraw.Draw(fill).text(origin, text, fill=255, font=font, stroke_width=0)
    outline = Image.new("L", size, 0)
    ImageDraw.Draw(outline).text(origin, text, fill=255, font=font, stroke_width=stroke, stroke_fill=255)
    return np.asarray(fill), np.asarray(outline)


def _fit_font(text: str, size: int, max_width: int) -> ImageFont.FreeTypeFont:
    """The default font at `size`, shrunk so that `text` fits in `max_width` pixels (min 10 px)."""
    font = ImageFont.load_default(size=size)
    width = font.getlength(text)
    if width > max_width and size > 10:
        font = ImageFont.load_default(size=max(10, int(size * max_width / width)))
    assert isinstance(font, ImageFont.FreeTypeFont)
    return font


@dataclass
class _Caption:
    """One centre-caption word: its dark outline and its light fill."""

    outline: Sprite
    fill: Sprite


@dataclass
class _Shape:
    sprite: Sprite
    centre: tuple[float, float]
    amplitude: tuple[float, float]
    freq: tuple[float, float]  # cycles per second
    phase: tuple[float, float]


# --------------------------------------------------------------------------------------------------
# The scene
# --------------------------------------------------------------------------------------------------


class _Scene:
    """Everything pre-computed for one spec; `frame(i)` assembles frame i as a (H·3/2, W) yuv420p array."""

    def __init__(self, spec: RenderSpec) -> None:
        w, h, fps = spec.width, spec.height, spec.fps
        self.width, self.height, self.fps = w, h, fps
        # One generator for all layout/motion choices, seeded by the whole spec (the palette, by contrast,
        # depends on the prompt alone).  Construction order below is fixed, so draws are reproducible.
        rng = np.random.default_rng(np.frombuffer(spec_digest(spec), dtype=np.uint64))
        short = min(w, h)
        palette = prompt_palette(spec.prompt)
        self.palette_yuv = [rgb_to_yuv(c) for c in palette]
        self.luts = _cyclic_luts(self.palette_yuv)

        self._build_background(rng)
        self._build_shapes(rng, palette, short)
        self._build_text(spec.prompt, palette, short)

    # -- background --------------------------------------------------------------------------------

    def _build_background(self, rng: np.random.Generator) -> None:
        """A plasma picture, periodic over (W, H) and stored 2W×2H, so any drift offset is just a slice.

        Why not colour-cycle or warp it per frame?  Both change every pixel of every frame, which (a)
        costs a full-frame gather per frame and (b) defeats libx264's skip/motion prediction: measured,
        that made the encode ~40 % slower than a pure translation.  A translating texture is one memcpy
        per plane for us and trivially motion-compensated for the encoder.
        """
        w, h = self.width, self.height
        # Periods are the frame size itself so a drift offset wraps modulo (W, H) seamlessly.
        self.period = (w, h)
        ys = np.arange(2 * h, dtype=np.float32)[:, None] * np.float32(2 * math.pi / h)
        xs = np.arange(2 * w, dtype=np.float32)[None, :] * np.float32(2 * math.pi / w)
        field = np.zeros((2 * h, 2 * w), dtype=np.float32)
        for _ in range(3):
            # Integer wave numbers keep each term periodic over the frame; a few low ones look organic.
            kx, ky = (int(k) for k in rng.integers(-2, 3, size=2))
            if kx == 0 and ky == 0:
                kx = 1
            phase = np.float32(rng.uniform(0, 2 * math.pi))
            field += np.sin(xs * kx + ys * ky + phase)
        # A separable product term (cheap: two 1-D sines) breaks up the straight bands into blobs.
        kx2, ky2 = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        field += np.sin(xs * kx2) * np.cos(ys * ky2)
        lo, hi = float(field.min()), float(field.max())
        bands = float(rng.uniform(1.0, 2.0))  # how many trips through the palette across the range
        idx = ((field - lo) * np.float32(255.0 * bands / max(hi - lo, 1e-6))).astype(np.int32)
        idx_y = idx.astype(np.uint8)  # wraps modulo 256, seamless because the LUT is cyclic
        self.bg_y = np.ascontiguousarray(self.luts[0][idx_y])
        idx_c = idx_y[0::2, 0::2]
        self.bg_u = np.ascontiguousarray(self.luts[1][idx_c])
        self.bg_v = np.ascontiguousarray(self.luts[2][idx_c])
        # Drift velocity in pixels per second, proportional to the frame size: a gentle ~5 % of the
        # short side per second.  Offsets are floored to even pixels (chroma alignment), so at this speed
        # the picture steps every other frame or so, which also leaves the encoder frames to skip.
        speed = min(w, h) * float(rng.uniform(0.03, 0.06))
        angle = float(rng.uniform(0, 2 * math.pi))
        self.drift = (speed * math.cos(angle), speed * math.sin(angle))

    # -- shapes ------------------------------------------------------------------------------------

    def _build_shapes(self, rng: np.random.Generator, palette: list[tuple[float, float, float]], short: int) -> None:
        w, h = self.width, self.height
        self.shapes: list[_Shape] = []
        for i in range(int(rng.integers(3, 6))):
            radius = float(short * rng.uniform(0.05, 0.12))
            kind = int(rng.integers(0, 3))
            size = math.ceil(radius) * 2 + 4
            c = (size - 1) / 2.0
            yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
            if kind == 2:  # rounded square: signed distance to a box with rounded corners
                corner = radius * 0.3
                qx = np.abs(xx - c) - (radius * 0.85 - corner)
                qy = np.abs(yy - c) - (radius * 0.85 - corner)
                outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
                d = outside + np.minimum(np.maximum(qx, qy), 0.0) - corner
                cover = np.clip(0.5 - d, 0.0, 1.0)
            else:
                dist = np.hypot(xx - c, yy - c)
                cover = np.clip(radius + 0.5 - dist, 0.0, 1.0)
                if kind == 1:  # ring
                    cover *= np.clip(dist - radius * 0.55 + 0.5, 0.0, 1.0)
            # Shapes use lightened palette colours so they stand out from the background bands.
            r, g, b = palette[(i + 1) % len(palette)]
            lighten = 0.45
            colour = _yuv_int((r + (1 - r) * lighten, g + (1 - g) * lighten, b + (1 - b) * lighten))
            sprite = Sprite(np.round(cover * 255).astype(np.uint8), colour)
            self.shapes.append(
                _Shape(
                    sprite=sprite,
                    centre=(float(rng.uniform(0.3, 0.7) * w), float(rng.uniform(0.3, 0.7) * h)),
                    amplitude=(float(rng.uniform(0.2, 0.4) * w), float(rng.uniform(0.2, 0.4) * h)),
                    freq=(float(rng.uniform(0.05, 0.25)), float(rng.uniform(0.05, 0.25))),
                    phase=(float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi))),
                )
            )

    # -- text --------------------------------------------------------------------------------------

    def _build_text(self, prompt: str, palette: list[tuple[float, float, float]], short: int) -> None:
        w, h = self.width, self.height
        words = prompt.split() or ["…"]
        self.words = words
        # A new word every ~0.6 s: long enough to read, short enough that the picture keeps changing.
        self.frames_per_word = max(4, round(self.fps * 0.6))

        # Near-white text tinted by the palette, outlined in a near-black shade of it: readable on any band.
        r, g, b = palette[0]
        fill_colour = _yuv_int((0.85 + 0.15 * r, 0.85 + 0.15 * g, 0.85 + 0.15 * b))
        r, g, b = palette[-1]
        dark = _yuv_int((0.1 * r, 0.1 * g, 0.1 * b))
        caption_size = max(12, int(short * 0.12))
        stroke = max(1, caption_size // 14)
        self.captions: dict[str, _Caption] = {}
        for word in words:
            if word in self.captions or len(self.captions) >= MAX_CAPTION_WORDS:
                continue
            font = _fit_font(word, caption_size, int(w * 0.9))
            fill, outline = _text_mask(word, font, stroke)
            fill, outline = fill[:h, : w - 2], outline[:h, : w - 2]  # a single huge glyph run: crop
            self.captions[word] = _Caption(outline=Sprite(outline, dark), fill=Sprite(fill, fill_colour))

        # Ticker: the whole prompt on one line, scrolling right-to-left over a darkened band.
        ticker_text = " ".join(words)[:MAX_TICKER_CHARS] + "   ·   "
        ticker_font = ImageFont.load_default(size=max(10, int(short * 0.05)))
        fill, outline = _text_mask(ticker_text, ticker_font, max(1, int(short * 0.05) // 12))
        ticker_fill = _yuv_int((0.95, 0.95, 0.95))
        self.ticker_fill = Sprite(fill, ticker_fill)
        self.ticker_outline = Sprite(outline, (16, 128, 128))
        band_h = self.ticker_fill.height + 2 * max(2, short // 60)
        band_h += band_h % 2
        self.band_y0 = h - band_h - max(2, short // 30)
        self.band_y0 -= self.band_y0 % 2
        self.band_h = band_h
        self.ticker_y = self.band_y0 + (band_h - self.ticker_fill.height) // 2
        self.ticker_speed = short / 160.0 * 24.0 / self.fps  # pixels per frame
        self.ticker_loop = self.ticker_fill.width + w

    # -- per frame ---------------------------------------------------------------------------------

    def frame(self, i: int) -> np.ndarray:
        """Frame `i` as a contiguous (H·3/2, W) uint8 array in PyAV's yuv420p layout."""
        w, h = self.width, self.height
        t = i / self.fps
        buf = np.empty((h * 3 // 2, w), dtype=np.uint8)
        y_plane = buf[:h]
        u_plane = buf[h : h + h // 4].reshape(h // 2, w // 2)
        v_plane = buf[h + h // 4 :].reshape(h // 2, w // 2)
        planes = (y_plane, u_plane, v_plane)

        # Background: a window onto the drifting, periodic plasma.
        px, py = self.period
        ox = math.floor(t * self.drift[0]) % px
        oy = math.floor(t * self.drift[1]) % py
        ox -= ox & 1  # even offsets keep luma and chroma textures aligned
        oy -= oy & 1
        y_plane[...] = self.bg_y[oy : oy + h, ox : ox + w]
        cx, cy = ox // 2, oy // 2
        u_plane[...] = self.bg_u[cy : cy + h // 2, cx : cx + w // 2]
        v_plane[...] = self.bg_v[cy : cy + h // 2, cx : cx + w // 2]

        # Shapes on Lissajous paths.
        for s in self.shapes:
            x = s.centre[0] + s.amplitude[0] * math.sin(2 * math.pi * s.freq[0] * t + s.phase[0])
            y = s.centre[1] + s.amplitude[1] * math.sin(2 * math.pi * s.freq[1] * t + s.phase[1])
            s.sprite.blend(planes, int(x) - s.sprite.width // 2, int(y) - s.sprite.height // 2)

        # Centre caption: the prompt's words one after another, each sliding up as it appears.
        k = i // self.frames_per_word
        word = self.words[k % len(self.words)]
        cap = self.captions.get(word)
        if cap is not None:
            into = (i % self.frames_per_word) / self.frames_per_word
            rise = int(max(0.0, 1.0 - into * 4.0) * h * 0.04)
            x = (w - cap.fill.width) // 2
            y = (h - cap.fill.height) // 2 - h // 10 + rise
            cap.outline.blend(planes, x, y)
            cap.fill.blend(planes, x, y)

        # Ticker band: darken luma and pull chroma halfway to grey, then scroll the prompt through it.
        b0, b1 = self.band_y0, self.band_y0 + self.band_h
        band = y_plane[b0:b1]
        band >>= 1
        band += 8
        for cplane in (u_plane, v_plane):
            cband = cplane[b0 // 2 : b1 // 2]
            cband >>= 1
            cband += 64
        tx = w - int(i * self.ticker_speed) % self.ticker_loop
        self.ticker_outline.blend(planes, tx, self.ticker_y)
        self.ticker_fill.blend(planes, tx, self.ticker_y)
        return buf


# --------------------------------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------------------------------


class _Chord:
    """A slowly breathing three- or four-note chord chosen by the prompt's hash."""

    # A minor pentatonic degrees (semitones above the root) keep any combination consonant.
    _SCALE = (0, 3, 5, 7, 10, 12, 15, 17, 19)

    def __init__(self, spec: RenderSpec) -> None:
        ph = hashlib.sha256(b"audio:" + spec.prompt.encode("utf-8")).digest()
        rng = np.random.default_rng(np.frombuffer(spec_digest(spec), dtype=np.uint64) ^ np.uint64(0xA0D10))
        root = 110.0 * 2 ** ((ph[0] % 12) / 12.0)  # A2 … G#3
        n = 3 + ph[1] % 2
        degrees = sorted({self._SCALE[b % len(self._SCALE)] for b in ph[2 : 2 + n]})
        self.freqs = np.array([root * 2 ** (d / 12.0) for d in degrees], dtype=np.float64)
        m = len(self.freqs)
        self.env_freq = rng.uniform(0.08, 0.35, size=m)
        self.env_phase = rng.uniform(0, 2 * math.pi, size=(2, m))  # per channel: slow stereo motion
        self.gain = 0.5 / m
        self.total_samples = spec.duration_s * AUDIO_RATE
        self.fade = min(AUDIO_RATE // 4, self.total_samples // 8)

    def samples(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) as a (2, n) float32 planar array."""
        n_idx = np.arange(start, stop, dtype=np.float64)
        t = n_idx / AUDIO_RATE
        tones = np.sin(2 * math.pi * self.freqs[:, None] * t[None, :])  # (m, n)
        out = np.empty((2, stop - start), dtype=np.float64)
        for ch in range(2):
            env = 0.55 + 0.45 * np.sin(2 * math.pi * self.env_freq[:, None] * t[None, :] + self.env_phase[ch][:, None])
            out[ch] = (tones * env).sum(axis=0) * self.gain
        # Short fades at both ends avoid clicks.
        if self.fade > 0:
            ramp = np.minimum(1.0, np.minimum(n_idx, self.total_samples - n_idx) / self.fade)
            out *= np.clip(ramp, 0.0, 1.0)
        return out.astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------


def soundtrack(spec: RenderSpec,
               fallback: Callable[[RenderSpec], AudioSource] | None = None) -> AudioSource | None:
    """When the job asks for audio: the user's background music (`audio_url`) when given, else `fallback`'s
    (the prompt's chord by default); else none."""
    if not spec.audio:
        return None
    music = spec.input_paths("audio_url")
    if music:
        return file_audio(music[0], spec.duration_s)
    return (fallback or _Chord)(spec)


def render_procedural(
    spec: RenderSpec,
    out_path: Path,
    progress: ProgressCallback = _noop_progress,
    *,
    preset: str = "veryfast",
    crf: int = 23,
    threads: int = DEFAULT_X264_THREADS,
) -> None:
    """Render `spec` as an H.264 (+ AAC when `spec.audio`) MP4 at `out_path`.

    The file appears at `out_path` only once complete. `progress` receives the fraction of frames encoded,
    non-decreasing, ending with exactly 1.0.
    """
    if spec.duration_s <= 0 or spec.fps <= 0:
        raise ValueError("duration_s and fps must be positive")
    settings = EncoderSettings(preset=preset, crf=crf, threads=threads,
                               high_bitrate=spec.options.get("bitrate_mode") == "high")
    n_frames = spec.duration_s * spec.fps
    with Mp4Writer(Path(out_path), spec.width, spec.height, spec.fps, frame_count=n_frames, settings=settings,
                   audio=soundtrack(spec), progress=progress) as mp4:
        scene = _Scene(spec)
        for i in range(n_frames):
            mp4.write_yuv420p(scene.frame(i))


class ProceduralEngine:
    """The `procedural` engine: prompt-derived synthetic video, rendered on the CPU with PyAV."""

    name = "procedural"

    def __init__(self, *, preset: str = "veryfast", crf: int = 23, threads: int = DEFAULT_X264_THREADS) -> None:
        """Encoder settings shared by every render of this engine instance."""
        self.preset = preset
        self.crf = crf
        self.threads = threads

    def render(self, spec: RenderSpec, out_path: Path, progress: ProgressCallback) -> None:
        """Render `spec` into an MP4 at `out_path`, reporting progress as a fraction of frames."""
        render_procedural(spec, out_path, progress, preset=self.preset, crf=self.crf, threads=self.threads)
