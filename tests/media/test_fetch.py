"""The guarded fetcher: data: URLs, the SSRF guard, pinning, redirects, caps, timeouts and kind checks.

No test touches the network beyond loopback: DNS is a stub resolver, and every TCP connect goes through a spy
that records it and refuses (without sending anything) any address other than 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from vidgate.errors import InvalidRequest, PayloadTooLarge
from vidgate.media.fetch import GuardedFetcher, field_path, sniff_mime

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 8
MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x64" + bytes(2000)
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(64)


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


# --- loopback-only plumbing -------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def connects(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every TCP connect httpx makes, recorded; anything but 127.0.0.1 is refused before a socket exists."""
    seen: list[tuple[str, int]] = []
    real = anyio.connect_tcp

    async def spy(remote_host: str, remote_port: int, **kwargs: object) -> object:
        seen.append((str(remote_host), int(remote_port)))
        if remote_host != "127.0.0.1":
            raise OSError(f"test refuses to connect to {remote_host}")
        return await real(remote_host, remote_port, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(anyio, "connect_tcp", spy)
    return seen


class StubResolver:
    """DNS from a dict; records every question."""

    def __init__(self, answers: dict[str, list[str]] | None = None) -> None:
        self.answers = answers or {}
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers[host]


Handler = Callable[[asyncio.StreamWriter], Awaitable[None]]


def respond(status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None) -> Handler:
    async def handler(writer: asyncio.StreamWriter) -> None:
        head = {"Content-Length": str(len(body)), "Connection": "close", **(headers or {})}
        lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in head.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()

    return handler


class MiniServer:
    """A tiny HTTP/1.1 responder on 127.0.0.1: `routes` maps a request path to a handler; requests are recorded."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = raw.decode("latin-1").split("\r\n")
            path = request_line.split(" ")[1]
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ln)}
            self.requests.append((path, headers))
            await self.routes.get(path, respond(404, b"not found"))(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self.tasks.discard(task)


@pytest.fixture
async def server() -> AsyncIterator[MiniServer]:
    srv = MiniServer()
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture
async def make_fetcher() -> AsyncIterator[Callable[..., GuardedFetcher]]:
    made: list[GuardedFetcher] = []

    def make(**kwargs: object) -> GuardedFetcher:
        kwargs.setdefault("resolver", StubResolver())
        fetcher = GuardedFetcher(**kwargs)  # type: ignore[arg-type]
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        await fetcher.aclose()


def local(make_fetcher: Callable[..., GuardedFetcher], server: MiniServer, **kwargs: object) -> GuardedFetcher:
    return make_fetcher(allow_hosts=[f"127.0.0.1:{server.port}"], **kwargs)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --- helpers -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "path"),
    [
        ("image_url", ["image_url"]),
        ("reference_image_urls[1]", ["reference_image_urls", 1]),
        ("elements[0].reference_image_urls[2]", ["elements", 0, "reference_image_urls", 2]),
        ("keyframes[3].image_url", ["keyframes", 3, "image_url"]),
    ],
)
def test_field_path(label: str, path: list[str | int]) -> None:
    assert field_path(label) == path


@pytest.mark.parametrize(
    ("head", "mime"),
    [
        (PNG, "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"GIF89a\x01\x00", "image/gif"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "image/heic"),
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00", "video/mp4"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00", "video/quicktime"),
        (b"\x00\x00\x00\x18ftypM4A \x00\x00\x02\x00", "audio/mp4"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm", "video/webm"),
        (MP3, "audio/mpeg"),
        (b"\xff\xfb\x90\x64" + bytes(8), "audio/mpeg"),
        (b"\xff\xf1\x50\x80" + bytes(8), "audio/aac"),
        (WAV, "audio/wav"),
        (b"OggS\x00\x02", "audio/ogg"),
        (b"fLaC\x00\x00\x00\x22", "audio/flac"),
        (b"%PDF-1.7\n", "application/pdf"),
        (b"hello world", None),
    ],
)
def test_sniff_mime(head: bytes, mime: str | None) -> None:
    assert sniff_mime(head) == mime


# --- data: URLs --------------------------------------------------------------------------------------------------


async def test_data_url_png(make_fetcher: Callable[..., GuardedFetcher], tmp_path: Path) -> None:
    dest = tmp_path / "deep" / "dir" / "ref1.png"
    media = await make_fetcher().fetch(
        data_url("image/png", PNG), field="reference_image_urls[1]", kind="image", max_bytes=1 << 20, dest=dest
    )
    assert media.path == dest and dest.read_bytes() == PNG
    assert (media.field, media.kind, media.mime, media.size) == (
        "reference_image_urls[1]",
        "image",
        "image/png",
        len(PNG),
    )
    assert media.sha256 == hashlib.sha256(PNG).hexdigest()
    assert leftovers(dest.parent) == ["ref1.png"]


async def test_data_url_declared_type_must_match_bytes(
    make_fetcher: Callable[..., GuardedFetcher], tmp_path: Path
) -> None:
    with pytest.raises(InvalidRequest) as err:
        await make_fetcher().fetch(
            data_url("audio/mpeg", PNG),
            field="reference_image_urls[1]",
            kind="image",
            max_bytes=1 << 20,
            dest=tmp_path / "x",
        )
    assert err.value.status_code == 400
    assert err.value.issues[0].path == ["reference_image_urls", 1]
    assert err.value.message.startswith("reference_image_urls[1]: ")
    assert "audio/mpeg" in err.value.message and "image/png" in err.value.message
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("data:image/png;base64,iVBORw0K!!GgoAAAA", "not valid base64"),
        ("data:image/png;base64,iVBO Rw0KGgo=", "not valid base64"),
        ("data:image/png;base64,iVBORw0KGgo", "not valid base64"),  # bad padding
        ("data:image/png,%89PNG%0D%0A%1A%0A", "must be base64"),
        ("data:image/png;charset=x,abcd", "must be base64"),
        ("data:image/png;base64", "not a valid data URL"),
        ("data:image/png;base64,", "empty"),
    ],
)
async def test_data_url_malformed(
    make_fetcher: Callable[..., GuardedFetcher], tmp_path: Path, url: str, reason: str
) -> None:
    with pytest.raises(InvalidRequest) as err:
        await make_fetcher().fetch(url, field="image_url", kind="image", max_bytes=1 << 20, dest=tmp_path / "x")
    assert err.value.message.startswith("image_url: ") and reason in err.value.message
    assert leftovers(tmp_path) == []


async def test_data_url_over_cap_is_413(make_fetcher: Callable[..., GuardedFetcher], tmp_path: Path) -> None:
    big = PNG + bytes(3 * 1024 * 1024)
    with pytest.raises(PayloadTooLarge) as err:
        await make_fetcher().fetch(
            data_url("image/png", big),
            field="end_image_url",
            kind="image",
            max_bytes=2 * 1024 * 1024,
            dest=tmp_path / "x",
        )
    assert err.value.status_code == 413
    assert err.value.message == "end_image_url: file exceeds the maximum allowed size of 2 MB"
    assert err.value.body()["code"] == "PAYLOAD_TOO_LARGE"
    assert leftovers(tmp_path) == []


async def test_data_url_wrong_kind(make_fetcher: Callable[..., GuardedFetcher], tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest) as err:
        await make_fetcher().fetch(
            data_url("audio/mpeg", MP3), field="image_url", kind="image", max_bytes=1 << 20, dest=tmp_path / "x"
        )
    assert err.value.message == "image_url: the data is audio/mpeg, expected an image"


async def test_data_url_audio_kinds(make_fetcher: Callable[..., GuardedFetcher], tmp_path: Path) -> None:
    fetcher = make_fetcher()
    wav = await fetcher.fetch(
        data_url("audio/wav", WAV), field="audio_url", kind="audio", max_bytes=1 << 20, dest=tmp_path / "a.wav"
    )
    assert wav.mime == "audio/wav"
    m4a = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00" + bytes(64)  # an mp4 container, reported as audio here
    media = await fetcher.fetch(
        data_url("audio/mp4", m4a), field="audio_url", kind="audio", max_bytes=1 << 20, dest=tmp_path / "a.m4a"
    )
    assert media.mime == "audio/mp4"
    with pytest.raises(InvalidRequest, match="the data is audio/wav, expected a video"):
        await fetcher.fetch(
            data_url("audio/wav", WAV), field="video_url", kind="video", max_bytes=1 << 20, dest=tmp_path / "v"
        )


# --- the SSRF guard (no connection may happen) ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://10.0.0.5/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0x7f.1/",
        "http://127.1/",
        "http://0177.0.0.1/",
        "http://017700000001/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:a9fe:a9fe]/",  # mapped metadata address
        "http://[2002:7f00:1::]/",  # 6to4 of loopback
        "http://[64:ff9b::a00:5]/",  # NAT64 of 10.0.0.5
        "http://[fd00:ec2::254]/",
        "http://[fe80::1]/",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://192.168.1.1:8080/",
        "https://172.16.0.1/",
        "http://1.2.3.999/",
        "ftp://example.com/a.png",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "http://user:pw@media.example.com/a.png",
        "not a url at all",
    ],
)
async def test_refused_without_connecting(
    make_fetcher: Callable[..., GuardedFetcher], connects: list[tuple[str, int]], tmp_path: Path, url: str
) -> None:
    resolver = StubResolver({"media.example.com": ["93.184.216.34"]})
    with pytest.raises(InvalidRequest) as err:
        await make_fetcher(resolver=resolver).fetch(
            url, field="image_url", kind="image", max_bytes=1 << 20, dest=tmp_path / "x"
        )
    assert err.value.status_code == 400 and err.value.message.startswith("image_url: ")
    assert resolver.calls == [] and connects == []
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("answers", "reason"),
    [
        (["127.0.0.1"], "resolves to a private"),
        (["93.184.216.34", "10.0.0.1"], "resolves to a private"),  # any bad address refuses the host
        (["::ffff:169.254.169.254"], "resolves to a private"),
        (["not-an-ip"], "could not be resolved"),
        ([], "could not be resolved"),
    ],
)
async def test_dns_answers_are_vetted(
    make_fetcher: Callable[..., GuardedFetcher],
    connects: list[tuple[str, int]],
    tmp_path: Path,
    answers: list[str],
    reason: str,
) -> None:
    resolver = StubResolver({"evil.test": answers})
    with pytest.raises(InvalidRequest) as err:
        await make_fetcher(resolver=resolver).fetch(
            "http://evil.test:8080/a.png", field="image_url", kind="image", max_bytes=1 << 20, dest=tmp_path / "x"
        )
    assert reason in err.value.message
    assert resolver.calls == [("evil.test", 8080)] and connects == []


async def test_unknown_host_is_400(make_fetcher: Callable[..., GuardedFetcher], tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="could not be resolved"):
        await make_fetcher().fetch(
            "https://nowhere.test/a.png", field="image_url", kind="image", max_bytes=1 << 20, dest=tmp_path / "x"
        )


async def test_slow_resolver_times_out(make_fetcher: Callable[..., GuardedFetcher], tmp_path: Path) -> None:
    async def hang(host: str, port: int) -> list[str]:
        await asyncio.sleep(30)
        return []

    with pytest.raises(InvalidRequest, match="timed out"):
        await make_fetcher(resolver=hang, connect_timeout=0.2).fetch(
            "http://slow.test/a.png", field="image_url", kind="image", max_bytes=1 << 20, dest=tmp_path / "x"
        )


# --- against a local server --------------------------------------------------------------------------------------


async def test_allow_listed_local_server(
    make_fetcher: Callable[..., GuardedFetcher], server: MiniServer, tmp_path: Path
) -> None:
    server.routes["/img.png"] = respond(200, PNG, {"Content-Type": "application/octet-stream"})
    dest = tmp_path / "in" / "img.png"
    media = await local(make_fetcher, server).fetch(
        server.url("/img.png"), field="image_url", kind="image", max_bytes=1 << 20, dest=dest
    )
    assert (media.mime, media.size, media.sha256) == ("image/png", len(PNG), hashlib.sha256(PNG).hexdigest())
    assert dest.read_bytes() == PNG and leftovers(dest.parent) == ["img.png"]
    assert server.requests[0][1]["user-agent"] == "vidgate-fetcher/0.1"


async def test_local_server_not_allow_listed_is_refused(
    make_fetcher: Callable[..., GuardedFetcher], server: MiniServer, connects: list[tuple[str, int]], tmp_path: Path
) -> None:
    server.routes["/img.png"] = respond(200, PNG)
    with pytest.raises(InvalidRequest, match="private, loopback or reserved"):
        await make_fetcher(allow_hosts=["127.0.0.1:1"]).fetch(  # another port is not this host
            server.url("/img.png"), field="image_url", kind="image", max_bytes=1 << 20, dest=tmp_path / "x"
        )
    assert connects == [] and server.requests == []


async def test_connection_is_pinned_to_the_vetted_ip(
    make_fetcher: Callable[..., GuardedFetcher], server: MiniServer, connects: list[tuple[str, int]], tmp_path: Path
) -> None:
    server.routes["/img.png"] = respond(200, PNG)
    resolver = StubResolver({"media.test": ["127.0.0.1"]})
    fetcher = make_fetcher(allow_hosts=["MEDIA.test"], resolver=resolver)
    media = await fetcher.fetch(
        server.url("/img.png", host="media.test"),
        field="image_url",
        kind="image",
        max_bytes=1 << 20,
        dest=tmp_path / "x",
    )
    assert media.mime == "image/png"
    assert resolver.calls == [("media.test", server.port)]  # resolved once, by us
    assert connects == [("127.0.0.1", server.port)]  # and the socket went to that answer, not to the name
    assert server.requests[0][1]["host"] == f"media.test:{server.port}"


async def test_redirect_to_private_address_is_refused_before_connecting(
    make_fetcher: Callable[..., GuardedFetcher], server: MiniServer, connects: list[tuple[str, int]], tmp_path: Path
) -> None:
    server.routes["/go"] = respond(302, b"", {"Location": "http://10.1.2.3/x"})
    resolver = StubResolver()
    with pytest.raises(InvalidRequest) as err:
        await local(make_fetcher, server, resolver=resolver).fetch(
            server.url("/go"), field="video_url", kind="video", max_bytes=1 << 20, dest=tmp_path / "x"
        )
    assert "redirected to http://10.1.2.3/x" in err.value.message and "private" in err.value.message
    assert connects == [("127.0.0.1", server.port)] and resolver.calls == []
    assert leftovers(tmp_path) == []


async def test_redirect_to_name_resolving_private_is_refused(
    make_fetcher: Callable[..., GuardedFetcher], server: MiniServer, connects: list[tuple[str, int]], tmp_path: Path
) -> None:
    server.routes["/go"] = respond(301, b"", {"Location": "http://internal.test/x"})
    resolver = StubResolver({"internal.test": ["192.168.0.7"]})
    with pytest.raises(InvalidRequest, match="resolves to a private"):
        await local(make_fetcher, server, resolver=resolver).fetch(
            server.url("/go"), field="image_url", kind="image", max_bytes=1 << 20, dest=tmp_path / "x"
        )
    assert resolver.calls == [("internal.test", 80)] and connects == [("127.0.0.1", server.port)]


async def test_relative_redirect_is_followed(
    make_fetcher: Callable[..., GuardedFetcher], server: MiniServer, tmp_path: Path
) -> None:
    server.routes["/a/start"] = respond(307, b"", {"Location": "../img.png"})
    server.routes["/img.png"] = respond(200, PNG)
    media = await local(make_fetcher, server).fetch(
        server.url("/a/start"), field="image_url", kind="image", max_bytes=1 << 20, dest=tmp_path / "x"
    )
    assert media.size == len(PNG)
    assert [path for path, _ in server.requests] == ["/a/start", "/img.png"]


async def test_too_many_redirects(
    make_fetcher: Callable[..., GuardedFetcher], server: MiniServer, tmp_path: Path
) -> None:
    for i in range(10):
        server.routes[f"/r{i}"] = respond(302, b"", {"Location": f"/r{i + 1}"})
    with pytest.raises(InvalidRequest, match=r"too many redirects \(more than 3\)"):
        await local(make_fetcher, server, max_redirects=3).fetch(
            server.url("/r0"), field="image_url", kind="image", max_bytes=1 << 20, dest=tmp_path / "x"
        )
    assert [path for path, _ in server.requests] == ["/r0", "/r1", "/r2", "/r3"]


async def test_content_length_over_cap_is_413_before_reading(
    make_fetcher: Callable[..., GuardedFetcher], server: MiniServer, tmp_path: Path
) -> None:
    async def huge(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50000000\r\n\r\n" + PNG)
        await writer.drain()
        await asyncio.sleep(30)  # never sends the rest: the fetcher must not wait for it

    server.routes["/big"] = huge
    started = time.monotonic()
    with pytest.raises(PayloadTooLarge, match=r"^image_url: file exceeds the maximum allowed size of 1 MB$"):
        await local(make_fetcher, server).fetch(
            server.url("/big"), field="image_url", kind="image", max_bytes=1 << 20, dest=tmp_path / "x"
        )
    assert time.monotonic() - started < 5
    assert leftovers(tmp_path) == []


async def test_chunked_body_over_cap_is_413_and_leaves_no_file(
    make_fetcher: Callable[..., GuardedFetcher], server: MiniServer, tmp_path: Path
) -> None:
    async def endless(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = PNG + bytes(64 * 1024 - len(PNG))
        for _ in range(200):  # 12.5 MiB, far past the cap
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    server.routes["/stream"] = endless
    dest = tmp_path / "media" / "x.png"
    with pytest.raises(PayloadTooLarge):
        await local(make_fetcher, server).fetch(
            server.url("/stream"), field="image_url", kind="image", max_bytes=1 << 20, dest=dest
        )
    assert leftovers(dest.parent) == []


async def test_slow_server_times_out(
    make_fetcher: Callable[..., GuardedFetcher], server: MiniServer, tmp_path: Path
) -> None:
    async def slow(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    server.routes["/slow"] = slow
    started = time.monotonic()
    with pytest.raises(InvalidRequest) as err:
        await local(make_fetcher, server, read_timeout=0.5).fetch(
            server.url("/slow"), field="image_url", kind="image", max_bytes=1 << 20, dest=tmp_path / "x"
        )
    assert err.value.message == "image_url: fetching the URL timed out"
    assert time.monotonic() - started < 5
    assert leftovers(tmp_path) == []


async def test_slow_drip_is_bounded_by_total_timeout(
    make_fetcher: Callable[..., GuardedFetcher], server: MiniServer, tmp_path: Path
) -> None:
    async def drip(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + PNG)
        for _ in range(100):  # each byte well inside the read timeout, the whole far past the total
            await asyncio.sleep(0.1)
            writer.write(b"x")
            await writer.drain()

    server.routes["/drip"] = drip
    with pytest.raises(InvalidRequest, match="timed out"):
        await local(make_fetcher, server, read_timeout=1.0, total_timeout=0.7).fetch(
            server.url("/drip"), field="image_url", kind="image", max_bytes=1 << 20, dest=tmp_path / "x"
        )
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (respond(404, b"nope"), "failed with HTTP status 404"),
        (respond(500, b"oops"), "failed with HTTP status 500"),
        (respond(302, b""), "HTTP 302 without a Location"),
        (respond(200, b""), "returned no data"),
        (respond(200, MP3, {"Content-Type": "image/png"}), "the data is audio/mpeg, expected an image"),
        (respond(200, b"<html>hi</html>"), "not in a recognised image format"),
        (respond(200, PNG, {"Content-Encoding": "gzip"}), "gzip-encoded"),
    ],
)
async def test_bad_responses_are_400(
    make_fetcher: Callable[..., GuardedFetcher], server: MiniServer, tmp_path: Path, handler: Handler, reason: str
) -> None:
    server.routes["/x"] = handler
    with pytest.raises(InvalidRequest) as err:
        await local(make_fetcher, server).fetch(
            server.url("/x"), field="scene_image_urls[0]", kind="image", max_bytes=1 << 20, dest=tmp_path / "x"
        )
    assert err.value.status_code == 400
    assert err.value.message.startswith("scene_image_urls[0]: ") and reason in err.value.message
    assert leftovers(tmp_path) == []


async def test_connection_refused_is_400(make_fetcher: Callable[..., GuardedFetcher], tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(InvalidRequest, match="could not connect"):
        await make_fetcher(allow_hosts=["127.0.0.1"]).fetch(
            f"http://127.0.0.1:{port}/x", field="image_url", kind="image", max_bytes=1 << 20, dest=tmp_path / "x"
        )


async def test_garbage_response_is_400(
    make_fetcher: Callable[..., GuardedFetcher], server: MiniServer, tmp_path: Path
) -> None:
    async def garbage(writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()

    server.routes["/x"] = garbage
    with pytest.raises(InvalidRequest, match="broken off or invalid"):
        await local(make_fetcher, server).fetch(
            server.url("/x"), field="image_url", kind="image", max_bytes=1 << 20, dest=tmp_path / "x"
        )


async def test_document_kind_takes_anything(
    make_fetcher: Callable[..., GuardedFetcher], server: MiniServer, tmp_path: Path
) -> None:
    server.routes["/doc"] = respond(200, b"plain notes", {"Content-Type": "text/plain; charset=utf-8"})
    server.routes["/pdf"] = respond(200, b"%PDF-1.7\n...", {"Content-Type": "application/octet-stream"})
    fetcher = local(make_fetcher, server)
    text = await fetcher.fetch(
        server.url("/doc"), field="reference_document_urls[0]", kind="document", max_bytes=1 << 20, dest=tmp_path / "d1"
    )
    pdf = await fetcher.fetch(
        server.url("/pdf"), field="reference_document_urls[0]", kind="document", max_bytes=1 << 20, dest=tmp_path / "d2"
    )
    assert (text.mime, pdf.mime) == ("text/plain", "application/pdf")


async def test_public_name_passes_the_guard_and_is_pinned(
    make_fetcher: Callable[..., GuardedFetcher], connects: list[tuple[str, int]], tmp_path: Path
) -> None:
    # The connect spy refuses 93.184.216.34 before any socket exists: this shows where the fetcher would go.
    resolver = StubResolver({"media.example.com": ["93.184.216.34"]})
    with pytest.raises(InvalidRequest, match="could not connect"):
        await make_fetcher(resolver=resolver).fetch(
            "http://media.example.com/a.png", field="image_url", kind="image", max_bytes=1 << 20, dest=tmp_path / "x"
        )
    assert connects == [("93.184.216.34", 80)]


async def test_https_target_keeps_the_name_for_sni_and_host(make_fetcher: Callable[..., GuardedFetcher]) -> None:
    import httpx

    resolver = StubResolver({"cdn.example.com": ["2606:2800:220:1:248:1893:25c8:1946"]})
    target = await make_fetcher(resolver=resolver)._vet(httpx.URL("https://cdn.example.com:8443/v.mp4?x=1"))
    assert str(target.url) == "https://[2606:2800:220:1:248:1893:25c8:1946]:8443/v.mp4?x=1"
    assert target.host_header == "cdn.example.com:8443"
    assert target.extensions == {"sni_hostname": "cdn.example.com"}
