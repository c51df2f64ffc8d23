"""Seedance's four workflows on the reference-to-video models (SPEC §4), routed by the prompt.

One R2V request names its inputs with case-sensitive tags, 1-based, in request order:

    <Image N>   reference_image_urls[N-1]
    <Video N>   reference_video_urls[N-1]
    <Audio N>   the N-th reference audio: reference_audio_urls first, then `audio_url` (G-SD: on Seedance R2V
                `audio_url` is a one-item reference_audio_urls, so alone it is <Audio 1>)

(`<Video1>`, without the space, is read the same; `<video 1>` is plain text.)  The canonical patterns:

    Reference   Refer to … in <Image 1> to generate …      (also "Reference …", and any prompt with no pattern)
    Edit        Strictly edit <Video 1>, changing its …    ("Edit <Video 2>, …" edits the second clip)
    Extend      Extend <Video 1>, generate …               ("Extend <Video 1> backward, …" / "Extend backward
                                                            <Video 1>" continues into its first frame instead;
                                                            "start with <Video 1>" (forward) or "end with
                                                            <Video 1>" (backward) keeps the source in the output)
    Stitch      <Video 1> + <transition> + followed by <Video 2> + … + followed by <Video 3>
                ("<Video 1> + <Video 2>", "<Video 1> followed by <Video 2>" too; the transition text decides
                 its kind: cut / hard cut / jump cut → cut; fade to black / dip to black → black;
                 crossfade / dissolve / fade / blend / anything else → crossfade)

When a prompt matches several patterns the one that starts first wins, so "Refer to <Image 1> and extend
<Video 1>" is a Reference.  On Seedance 2.5 an explicit `omni_reference_task_type` (`reference`, `edit`,
`extend`; aliases already normalised by validation) wins over the prompt; `auto` (or none) routes by prompt.
There is no task type for Stitch.

`check_tags` / `workflow_issues` are what queue validation reports (400, `path: ["prompt"]`, the tag in
`received`); `classify` is what the worker renders.  Both are pure functions of (prompt, task type, counts).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from vidgate.errors import Issue
from vidgate.media.types import Inputs, PreparedInput

# A crossfade or dip-to-black between two stitched clips lasts this long; its frames are generated between the
# clips (which both play in full), so a stitch lasts the sum of its clips plus this per non-cut join.
STITCH_TRANSITION_SECONDS = 0.5

KINDS = ("reference", "edit", "extend", "stitch")
TRANSITIONS = ("crossfade", "cut", "black")
_TAG_KINDS = ("Image", "Video", "Audio")
_FIELDS = {"Image": "reference_image_urls", "Video": "reference_video_urls", "Audio": "reference_audio_urls"}
_NOUNS = {"Image": ("reference image", "reference images"), "Video": ("reference video", "reference videos"),
          "Audio": ("reference audio clip", "reference audio clips")}

_TAG = re.compile(r"<(?P<kind>Image|Video|Audio) ?(?P<n>\d+)>")
_VIDEO = r"<Video ?(?P<n>\d+)>"
_THE = r"(?:(?i:the)\s+)?"
_REFER = re.compile(r"(?i:\b(?:refer(?:s|red|ring)?\s+to|referenc(?:e|es|ed|ing))\b)")
_EDIT = re.compile(r"(?i:\b(?:strictly\s+)?edit(?:s|ed|ing)?)\s+" + _THE + _VIDEO)
_EXTEND = re.compile(r"(?i:\bextend(?:s|ed|ing)?)\s+(?:(?i:(?P<dir>backwards?|forwards?))\s+)?" + _THE + _VIDEO)
# Right after the extended clip's tag: "Extend <Video 1> backward, …" / "Extend <Video 1>, backwards, …".
_DIRECTION_AFTER = re.compile(r"\s*,?\s*(?i:(?P<dir>backwards?|forwards?))\b")
_BACKWARD_ANYWHERE = re.compile(r"(?i:\bbackwards?\b)")
_START_WITH = re.compile(r"(?i:\bstart(?:s|ing)?\s+(?:off\s+)?with)\s+" + _THE + _VIDEO)
_END_WITH = re.compile(r"(?i:\bend(?:s|ing)?\s+with)\s+" + _THE + _VIDEO)
# One join of a stitch, right after a <Video N> tag: "+ crossfade + followed by <Video 2>", "+ dissolve +
# <Video 2>", "+ hard cut followed by <Video 2>", "+ <Video 2>", ", followed by <Video 2>".
_FOLLOWED_BY = r"(?i:followed\s+by)\s+"
_LINK = re.compile(
    r"\s*(?:\+\s*(?:(?P<t>[^+<>]{0,200}?)\s*(?:\+\s*(?:" + _FOLLOWED_BY + r")?|,?\s*" + _FOLLOWED_BY + r"))?"
    r"|,?\s*" + _FOLLOWED_BY + r")" + _VIDEO
)
_BLACK = re.compile(r"(?i:\b(?:fades?|fading|dips?|dipping)\s+(?:out\s+)?(?:to|through|via)\s+black\b)")
_CUT = re.compile(r"(?i:\bcuts?\b)")
_FADE = re.compile(r"(?i:cross-?\s?fade|dissolve|\bfad(?:e|es|ing)\b|\bblend|\bmix|\bmorph)")


@dataclass(frozen=True)
class Counts:
    """How many inputs of each tag kind a request has."""

    images: int = 0
    videos: int = 0
    audio: int = 0

    def of(self, kind: str) -> int:
        return {"Image": self.images, "Video": self.videos, "Audio": self.audio}[kind]

    @classmethod
    def of_body(cls, body: dict[str, Any]) -> Counts:
        """From a queue body's arrays (no fetching): audio_url counts as one more reference audio."""

        def n(name: str) -> int:
            value = body.get(name)
            return len(value) if isinstance(value, list) else 0

        return cls(images=n("reference_image_urls"), videos=n("reference_video_urls"),
                   audio=n("reference_audio_urls") + (1 if body.get("audio_url") is not None else 0))

    @classmethod
    def of_inputs(cls, inputs: Inputs) -> Counts:
        """From the fetched inputs (RenderSpec.inputs)."""
        return cls(images=len(inputs.get("reference_image_urls", ())),
                   videos=len(inputs.get("reference_video_urls", ())),
                   audio=len(audio_inputs(inputs)))


@dataclass(frozen=True)
class Tag:
    kind: str  # "Image" | "Video" | "Audio"
    number: int  # as written, 1-based
    start: int

    @property
    def text(self) -> str:
        return f"<{self.kind} {self.number}>"


def find_tags(prompt: str) -> list[Tag]:
    """Every `<Image N>` / `<Video N>` / `<Audio N>` in the prompt, in order."""
    return [Tag(m.group("kind"), int(m.group("n")), m.start()) for m in _TAG.finditer(prompt or "")]


def audio_inputs(inputs: Inputs) -> list[PreparedInput]:
    """The reference audio in `<Audio N>` order: reference_audio_urls, then audio_url."""
    return [*inputs.get("reference_audio_urls", ()), *inputs.get("audio_url", ())]


@dataclass(frozen=True)
class Workflow:
    """What one R2V request asks for; the worker renders it (`RenderSpec.options["workflow"]`)."""

    kind: str = "reference"
    # 0-based reference_video_urls indices: the edited / extended clip, or the stitched clips in order.
    videos: tuple[int, ...] = ()
    direction: str = "forward"  # extend: "forward" (from the last frame) or "backward" (into the first)
    include_source: bool = False  # extend: the source plays too ("start with <Video 1>" / "end with <Video 1>")
    transitions: tuple[str, ...] = ()  # stitch: one per join, each in TRANSITIONS
    images: tuple[int, ...] = ()  # 0-based reference images the prompt names, in order of first mention
    audio: tuple[int, ...] = ()  # 0-based reference audio (see audio_inputs) the prompt names
    explicit: bool = False  # chosen by omni_reference_task_type rather than by the prompt

    @property
    def source(self) -> int | None:
        return self.videos[0] if self.videos else None

    @property
    def start_with_source(self) -> bool:
        return self.include_source and self.direction == "forward"

    @property
    def transition(self) -> str:
        return self.transitions[0] if self.transitions else "crossfade"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Workflow:
        if not data:
            return cls()
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for name in ("videos", "transitions", "images", "audio"):
            if name in known:
                known[name] = tuple(known[name])
        return cls(**known)


def transition_kind(text: str | None) -> str:
    """The transition a stitch join's text asks for: "cut", "black" or (the default) "crossfade"."""
    text = text or ""
    if _BLACK.search(text):
        return "black"
    if _CUT.search(text) and not _FADE.search(text):
        return "cut"
    return "crossfade"


@dataclass
class _Match:
    kind: str
    start: int
    videos: list[int] = field(default_factory=list)
    transitions: list[str] = field(default_factory=list)
    direction: str = "forward"


def _stitch(prompt: str) -> _Match | None:
    """The first chain `<Video A> + … + followed by <Video B> …` with at least one join."""
    for m in re.finditer(_VIDEO, prompt):
        videos, transitions, pos = [int(m.group("n")) - 1], [], m.end()
        while link := _LINK.match(prompt, pos):
            videos.append(int(link.group("n")) - 1)
            transitions.append(transition_kind(link.group("t")))
            pos = link.end()
        if transitions:
            return _Match("stitch", m.start(), videos, transitions)
    return None


def _direction(prompt: str, m: re.Match[str]) -> str:
    word = m.group("dir")
    if word is None:
        after = _DIRECTION_AFTER.match(prompt, m.end())
        word = after.group("dir") if after else None
    return "backward" if word and word.lower().startswith("backward") else "forward"


def _matches(prompt: str) -> list[_Match]:
    found: list[_Match] = []
    if m := _REFER.search(prompt):
        found.append(_Match("reference", m.start()))
    if m := _EDIT.search(prompt):
        found.append(_Match("edit", m.start(), [int(m.group("n")) - 1]))
    if m := _EXTEND.search(prompt):
        found.append(_Match("extend", m.start(), [int(m.group("n")) - 1], direction=_direction(prompt, m)))
    if stitch := _stitch(prompt):
        found.append(stitch)
    return sorted(found, key=lambda x: x.start)


def _first_mentions(tags: list[Tag], kind: str, count: int | None) -> tuple[int, ...]:
    out: list[int] = []
    for tag in tags:
        index = tag.number - 1
        if tag.kind == kind and index >= 0 and (count is None or index < count) and index not in out:
            out.append(index)
    return tuple(out)


def classify(prompt: str, task_type_hint: str | None = None, counts: Counts | None = None) -> Workflow:
    """The workflow a request asks for (see the module docstring).

    With `counts`, tags past the inputs are left out and a workflow whose clips are missing falls back to
    Reference (queue validation has already refused such requests; this keeps a render from failing).
    """
    prompt = prompt or ""
    tags = find_tags(prompt)
    images = _first_mentions(tags, "Image", counts.images if counts else None)
    audio = _first_mentions(tags, "Audio", counts.audio if counts else None)
    hint = {"editing": "edit", "extension": "extend"}.get(task_type_hint or "", task_type_hint)
    matches = _matches(prompt)
    explicit = hint in ("reference", "edit", "extend")
    if explicit:
        chosen = next((m for m in matches if m.kind == hint), None)
        if chosen is None:
            named = _first_mentions(tags, "Video", counts.videos if counts else None)
            direction = "backward" if hint == "extend" and _BACKWARD_ANYWHERE.search(prompt) else "forward"
            chosen = _Match(str(hint), 0, [named[0] if named else 0], direction=direction)
    else:
        chosen = matches[0] if matches else _Match("reference", 0)
    base = Workflow(images=images, audio=audio, explicit=explicit)
    if chosen.kind == "reference":
        return base
    if counts is not None and (counts.videos == 0 or any(not 0 <= v < counts.videos for v in chosen.videos)):
        return base
    if chosen.kind == "stitch":
        return Workflow("stitch", tuple(chosen.videos), transitions=tuple(chosen.transitions), images=images,
                        audio=audio, explicit=explicit)
    include = False
    if chosen.kind == "extend":
        keep = _START_WITH if chosen.direction == "forward" else _END_WITH
        include = any(int(m.group("n")) - 1 == chosen.videos[0] for m in keep.finditer(prompt))
    return Workflow(chosen.kind, (chosen.videos[0],), direction=chosen.direction, include_source=include,
                    images=images, audio=audio, explicit=explicit)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def check_tags(prompt: str, counts: Counts) -> list[Issue]:
    """One issue per distinct tag that names an input the request does not have (1-based numbering)."""
    issues: list[Issue] = []
    seen: set[str] = set()
    for tag in find_tags(prompt):
        have = counts.of(tag.kind)
        if 1 <= tag.number <= have or tag.text in seen:
            continue
        seen.add(tag.text)
        noun, nouns = _NOUNS[tag.kind]
        given = f"no {nouns} were given" if have == 0 else f"only {have} {noun if have == 1 else nouns} " \
                                                               f"{'was' if have == 1 else 'were'} given"
        if tag.number < 1:
            message = f"{tag.text} names no input: tags count from 1"
        elif tag.kind == "Audio":
            message = (f"{tag.text} names the {_ordinal(tag.number)} reference audio (reference_audio_urls, then "
                       f"audio_url), but {given}")
        else:
            message = f"{tag.text} names {_FIELDS[tag.kind]}[{tag.number - 1}], but {given}"
        issues.append(Issue(path=["prompt"], message=message, received=tag.text))
    return issues


def workflow_issues(prompt: str, task_type_hint: str | None, counts: Counts) -> list[Issue]:
    """Everything queue validation reports about a Seedance R2V request's routing."""
    issues = check_tags(prompt, counts)
    hint = {"editing": "edit", "extension": "extend"}.get(task_type_hint or "", task_type_hint)
    if hint in ("edit", "extend") and counts.videos == 0:
        issues.append(Issue(path=["omni_reference_task_type"], received=task_type_hint,
                            message=f"omni_reference_task_type '{task_type_hint}' needs a video to {hint}: send "
                                    "reference_video_urls and name the clip as <Video 1> in the prompt"))
    return issues
