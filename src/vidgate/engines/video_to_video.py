"""The `video` engine: video-to-video, the input re-rendered with the prompt's look.

The input (`video_url`) is decoded as a stream, one frame at a time, and resampled by timestamp to the
output's fixed rate: output frame i shows the input frame nearest to i / fps, so the output lasts as long as
the input (round(duration × fps) frames) and motion keeps its timing whatever the input's frame rate
(variable rates included).  A model with durations of its own (Grok Imagine v2v) makes the requested length
instead, looping a shorter source.  Each frame is cover-cropped and scaled to the output size, then graded with the
prompt's palette (split toning, a soft S-curve, a vignette): visibly restyled, its content plainly the
input's.

Audio: the input's own audio, over exactly the output's length, when the input has an audio track and the
job asks for audio.  An input without audio gives an output without audio (nothing is invented for it), and
`audio: false` drops the input's track.
"""

from __future__ import annotations

from pathlib import Path

import av

from vidgate.engines.base import ProgressCallback, RenderSpec
from vidgate.engines.encode import AUDIO_RATE, BufferAudio, Mp4Writer, decode_audio
from vidgate.engines.frames import EncodingEngine, PromptGrade, VideoSampler, clip_seconds, frame_cover, has_audio


def render_video_to_video(spec: RenderSpec, out_path: Path, progress: ProgressCallback,
                          engine: EncodingEngine) -> None:
    items = spec.inputs.get("video_url", ())
    if not items:
        raise ValueError("video-to-video needs video_url")
    source = items[0]
    source_seconds = clip_seconds(source) or float(spec.duration_s)
    # A requested length (models with their own durations) loops or cuts the source; else it is the source's.
    seconds = float(spec.duration_s) if spec.options.get("length_from_request") else source_seconds
    frame_count = max(1, round(seconds * spec.fps))
    out_seconds = frame_count / spec.fps
    audio = None
    if spec.audio and has_audio(source):
        audio = BufferAudio(decode_audio(source.path, out_seconds), round(out_seconds * AUDIO_RATE))
    grade = PromptGrade(spec.prompt, spec.width, spec.height)
    with (
        VideoSampler(source.path) as sampler,
        Mp4Writer(Path(out_path), spec.width, spec.height, spec.fps, frame_count=frame_count,
                  settings=engine.settings(spec), audio=audio, progress=progress) as mp4,
    ):
        for i in range(frame_count):
            picture = frame_cover(sampler.at((i / spec.fps) % source_seconds), spec.width, spec.height)
            mp4.write_frame(av.VideoFrame.from_image(grade.apply(picture)))


class VideoToVideoEngine(EncodingEngine):
    """The `video` engine: the input video, frame for frame, in the prompt's colours."""

    name = "video"

    def render(self, spec: RenderSpec, out_path: Path, progress: ProgressCallback) -> None:
        """Render `spec` into an MP4 at `out_path`, reporting progress as a fraction of frames."""
        render_video_to_video(spec, out_path, progress, self)
