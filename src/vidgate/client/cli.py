"""The `vidgate` commands that talk to a server over HTTP (generate, quote, models, status, jobs, cancel,
download): each one a few lines over `VidgateClient`. `vidgate.cli` merges `commands` into its app."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from vidgate.client import Job, VidgateClient

PANEL = "Client (talks to a running server)"
commands = typer.Typer()

UrlOption = Annotated[str | None, typer.Option("--url", envvar="VIDGATE_URL", rich_help_panel="Connection",
                                               help="Server URL [default: http://127.0.0.1:8000]")]
KeyOption = Annotated[str | None, typer.Option("--api-key", envvar="VIDGATE_API_KEY", rich_help_panel="Connection",
                                               help="API key (vg_...)")]
ModelOption = Annotated[str, typer.Option("--model", "-m", help="Model id (see `vidgate models`)")]
DurationOption = Annotated[str | None, typer.Option(help="e.g. 5s")]
ResolutionOption = Annotated[str | None, typer.Option(help="e.g. 720p")]
AspectOption = Annotated[str | None, typer.Option("--aspect-ratio", help="e.g. 16:9")]
AudioOption = Annotated[bool | None, typer.Option("--audio/--no-audio", help="With sound, where the model lets "
                                                                            "you choose")]
SetOption = Annotated[list[str] | None, typer.Option("--set", metavar="FIELD=VALUE",
                                                     help="Any other request field (VALUE as JSON, else text); "
                                                          "repeatable")]


def _fail(message: str) -> NoReturn:
    from vidgate.cli import print_error  # the parent module imports this one: imported here, not at the top

    print_error(message)
    raise typer.Exit(1)


def _console(stderr: bool = False) -> Console:
    from vidgate import cli

    return cli.err_console if stderr else cli.console


@contextmanager
def _client(url: str | None, api_key: str | None) -> Iterator[VidgateClient]:
    """A client; any API or network error becomes one line on stderr and exit status 1."""
    import httpx

    from vidgate.client import VidgateClient, VidgateClientError

    client = VidgateClient(url, api_key)
    try:
        with client:
            yield client
    except VidgateClientError as exc:
        _fail(str(exc))
    except httpx.HTTPError as exc:
        _fail(f"{client.config.api_base}: {exc}")
    except FileNotFoundError as exc:  # a local --image that is not there
        _fail(str(exc))


def _request_body(model: str, duration: str | None, resolution: str | None, aspect_ratio: str | None,
                  audio: bool | None, fields: list[str] | None, **more: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "duration": duration, "resolution": resolution,
                            "aspect_ratio": aspect_ratio, "audio": audio, **more}
    for item in fields or ():
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{item!r} is not FIELD=VALUE", param_hint="--set")
        try:
            body[name] = json.loads(value)
        except ValueError:
            body[name] = value
    return {k: v for k, v in body.items() if v is not None}


@commands.command(rich_help_panel=PANEL)
def generate(
    model: ModelOption,
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="What the video shows")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to save the MP4 "
                                                                       "[default: QUEUE_ID.mp4]")] = None,
    duration: DurationOption = None,
    resolution: ResolutionOption = None,
    aspect_ratio: AspectOption = None,
    image: Annotated[str | None, typer.Option(help="Start image: a local file or an http(s) URL")] = None,
    negative_prompt: Annotated[str | None, typer.Option(help="What to avoid")] = None,
    audio: AudioOption = None,
    fields: SetOption = None,
    timeout: Annotated[float | None, typer.Option(help="Give up waiting after this many seconds (the job "
                                                       "goes on; `vidgate download` fetches it later)")] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Quote, queue and follow a video to the end, then save the MP4."""
    from vidgate.client._http import media_url

    out = _console()
    with _client(url, api_key) as client:
        body = _request_body(model, duration, resolution, aspect_ratio, audio, fields, prompt=prompt,
                             negative_prompt=negative_prompt, image_url=media_url(image) if image else None)
        out.print(f"quote: ${client.quote(**body):.2f}", highlight=False)
        # One key for this command: the SDK's retries after a 429/503 then return this job, never a second charge.
        queued = client.queue(idempotency_key=str(uuid.uuid4()), **body)
        out.print(f"queued: {queued.queue_id} ({queued.model})", highlight=False)
        target = output or Path(f"{queued.queue_id}.mp4")
        job = _follow(client, queued.queue_id, queued.model, target, timeout)
    out.print(f"saved {target} (${job.price_usd:.2f})", highlight=False)


def _follow(client: VidgateClient, queue_id: str, model: str | None, target: Path, timeout: float | None) -> Job:
    """wait() with a progress bar on stderr: status, queue position, percent and ETA."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    try:
        with Progress(TextColumn("{task.description:<9}"), BarColumn(), TaskProgressColumn(),
                      TextColumn("{task.fields[detail]}"), console=_console(stderr=True), transient=True) as bar:
            task = bar.add_task("queued", total=100, detail="")
            return client.wait(queue_id, model, to=target, timeout=timeout,
                               on_update=lambda job: _show(bar, task, job))
    except KeyboardInterrupt:
        # Ctrl-C stops following, not the job: say how to pick it up again.
        _console(stderr=True).print(f"stopped following {queue_id}; it goes on on the server. "
                                    f"`vidgate download {queue_id}` saves it later, `vidgate cancel {queue_id}` "
                                    "stops it.", highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None


def _show(bar: Progress, task: TaskID, job: Job) -> None:
    if job.status == "queued":
        detail = f"position {job.queue_position}" if job.queue_position else ""
    elif job.eta_seconds is not None:
        detail = f"ETA {job.eta_seconds:.0f}s"
    else:
        detail = ""
    bar.update(task, description=job.status, completed=job.progress, detail=detail)


@commands.command(rich_help_panel=PANEL)
def quote(
    model: ModelOption,
    duration: DurationOption = None,
    resolution: ResolutionOption = None,
    aspect_ratio: AspectOption = None,
    audio: AudioOption = None,
    fields: SetOption = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """What a video would cost (USD)."""
    with _client(url, api_key) as client:
        price = client.quote(**_request_body(model, duration, resolution, aspect_ratio, audio, fields))
    _console().print(f"${price:.2f}", highlight=False)


@commands.command(rich_help_panel=PANEL)
def models(url: UrlOption = None, api_key: KeyOption = None) -> None:
    """The video models the server offers."""
    from rich.table import Column, Table

    with _client(url, api_key) as client:
        listed = client.models()
    table = Table("type", "durations", "resolutions", "aspect ratios")
    # Ids are what people copy into the next command: never cut or wrapped, the other columns give way.
    table.columns.insert(0, Column("model", no_wrap=True, min_width=max((len(m.id) for m in listed), default=5)))
    for m in listed:
        table.add_row(m.id, m.model_type, " ".join(m.durations), " ".join(m.resolutions), " ".join(m.aspect_ratios))
    _console().print(table)


@commands.command(rich_help_panel=PANEL)
def status(queue_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """One job's state."""
    with _client(url, api_key) as client:
        job = client.job(queue_id)
    lines = [("job", job.queue_id), ("model", job.model), ("status", job.status), ("progress", f"{job.progress:.0f}%")]
    if job.queue_position is not None:
        lines.append(("queue position", str(job.queue_position)))
    if job.eta_seconds is not None:
        lines.append(("eta", f"{job.eta_seconds:.0f}s"))
    lines.append(("price", f"${job.price_usd:.2f}" + (f" (refunded ${job.refunded_usd:.2f})" if job.refunded_usd
                                                       else "")))
    if job.error is not None:
        lines.append(("error", f"{job.error.code}: {job.error.message}"))
    if job.status == "completed":
        lines.append(("video", "available" if job.media_available else "deleted"))
    for name, value in lines:
        _console().print(f"{name + ':':<16}{value}", highlight=False, soft_wrap=True)


@commands.command(rich_help_panel=PANEL)
def jobs(
    status: Annotated[str | None, typer.Option(help="Only these statuses, e.g. queued,running")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model")] = None,
    limit: Annotated[int, typer.Option(help="How many (newest first)")] = 20,
    cursor: Annotated[str | None, typer.Option(help="The next page's cursor, as printed below the table")] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Your jobs, newest first."""
    from rich.table import Column, Table

    with _client(url, api_key) as client:
        page = client.jobs(status=status, model=model, limit=limit, cursor=cursor)
    table = Table(Column("queue id", no_wrap=True, min_width=36), Column("status", no_wrap=True, min_width=9),
                  Column("progress", no_wrap=True), Column("model", overflow="fold"), Column("price", no_wrap=True),
                  "created")
    for job in page.data:
        table.add_row(job.queue_id, job.status, f"{job.progress:.0f}%", job.model, f"${job.price_usd:.2f}",
                      job.created_at.strftime("%Y-%m-%d %H:%M") if job.created_at else "")
    _console().print(table)
    if page.has_more and page.next_cursor:
        _console().print(f"more: --cursor {page.next_cursor}", highlight=False, soft_wrap=True)


@commands.command(rich_help_panel=PANEL)
def cancel(queue_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
    """Cancel a queued or running job (its charge is refunded)."""
    with _client(url, api_key) as client:
        job = client.cancel(queue_id)
    state = "cancel requested" if job.cancel_requested and not job.is_final else job.status
    _console().print(f"{job.queue_id}: {state}", highlight=False)


@commands.command(rich_help_panel=PANEL)
def download(
    queue_id: str,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Where to save the MP4 "
                                                                       "[default: QUEUE_ID.mp4]")] = None,
    timeout: Annotated[float | None, typer.Option(help="Give up waiting after this many seconds")] = None,
    url: UrlOption = None,
    api_key: KeyOption = None,
) -> None:
    """Save a job's MP4, following it to the end first if it is still running."""
    target = output or Path(f"{queue_id}.mp4")
    with _client(url, api_key) as client:
        _follow(client, queue_id, None, target, timeout)
    _console().print(f"saved {target}", highlight=False)
