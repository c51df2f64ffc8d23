"""The one guarded fetcher for every URL a user gives us (image_url, reference_*_urls, ...).

A user-supplied URL is an attack surface: it can point the server at itself, at the cloud metadata service or at
the private network (SSRF), swap DNS answers between our check and our connect (rebinding), redirect somewhere
worse, send endless or oversized bodies, or hand us an MP3 where we expect an image. So every fetch here:

- accepts only `data:` (base64) and `http(s)` URLs, without credentials in them;
- vets the host on every hop: IP literals in every form inet_aton understands, and every address DNS returns,
  must be public unicast (unless the operator allow-listed the host);
- connects to the vetted IP itself (the Host header and TLS SNI/certificate keep the original name), so a second
  DNS answer can never be used;
- follows at most `max_redirects` redirects by hand, re-vetting each;
- streams to a temp file under a byte cap, hashing as it goes, and sniffs the magic numbers to check the kind;
- turns every refusal into a 400 (413 for size) naming the field, and leaves no partial file behind.

Webhook targets are user-supplied URLs too: `vet_url` checks one when it is given (a 400 naming the field), and
`post` delivers to it under the same guard (vetted and pinned again on every attempt, no redirects followed).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ipaddress
import os
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path

import httpx

from vidgate.errors import PayloadTooLarge, VidgateError, invalid
from vidgate.media.types import MediaFile

Resolver = Callable[[str, int], Awaitable[list[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

KINDS = ("image", "video", "audio", "document")
SNIFF_BYTES = 1024  # enough for every magic number below (EBML doctype included)
_MIB = 1024 * 1024
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_KIND_NOUN = {"image": "an image", "video": "a video", "audio": "audio", "document": "a document"}
# Containers that may hold audio only: for an audio field the same bytes are reported with an audio/* type.
_AUDIO_FORM = {"video/mp4": "audio/mp4", "video/webm": "audio/webm", "video/x-matroska": "audio/x-matroska"}
_AV_CONTAINERS = frozenset({*_AUDIO_FORM, *_AUDIO_FORM.values(), "audio/ogg"})
_GENERIC_MIMES = frozenset({"", "application/octet-stream", "binary/octet-stream"})

# Ranges refused beyond what ipaddress flags as private/reserved/non-global.
_BLOCKED_NETWORKS = tuple(
    ipaddress.ip_network(net)
    for net in (
        "100.64.0.0/10",  # carrier-grade NAT
        "169.254.169.254/32",  # cloud metadata (also covered by link-local; named for clarity)
        "192.0.0.0/24",  # IETF protocol assignments
        "fd00:ec2::254/128",  # AWS metadata over IPv6
        "64:ff9b:1::/48",  # local-use NAT64
    )
)
_IPV4_COMPAT = ipaddress.ip_network("::/96")
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve with the OS resolver, off the event loop thread."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def field_path(label: str) -> list[str | int]:
    """`elements[0].reference_image_urls[2]` -> ["elements", 0, "reference_image_urls", 2] (inverse of Issue.label)."""
    path: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", label):
        path.append(int(index) if index else name)
    return path or [label]


def sniff_mime(head: bytes) -> str | None:
    """The media type the magic numbers at the start of a file announce, or None when none is known."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head.startswith(b"BM") and head[6:10] == b"\0\0\0\0":
        return "image/bmp"
    if head[:4] in (b"II*\0", b"MM\0*"):
        return "image/tiff"
    if head.startswith(b"RIFF"):
        return {b"WEBP": "image/webp", b"WAVE": "audio/wav", b"AVI ": "video/x-msvideo"}.get(head[8:12])
    if head[4:8] == b"ftyp":
        return _iso_bmff_mime(head)
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"):
        return "video/quicktime"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in head[:64] else "video/x-matroska"
    if head.startswith(b"ID3"):
        return "audio/mpeg"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"FORM") and head[8:12] in (b"AIFF", b"AIFC"):
        return "audio/aiff"
    if len(head) >= 3 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return _frame_sync_mime(head)
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"PK\x03\x04"):
        return "application/zip"  # also docx/xlsx/pptx/odt
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "application/x-ole-storage"  # legacy doc/xls/ppt
    if head.startswith(b"{\\rtf"):
        return "application/rtf"
    return None


def _iso_bmff_mime(head: bytes) -> str:
    """MP4-family files say what they are in the ftyp box's major (and compatible) brands."""
    brand, compatible = head[8:12], head[16:64]
    if brand in (b"mif1", b"msf1") and b"avif" in compatible:
        return "image/avif"
    images = {
        b"heic": "image/heic",
        b"heix": "image/heic",
        b"hevc": "image/heic-sequence",
        b"hevx": "image/heic-sequence",
        b"mif1": "image/heif",
        b"msf1": "image/heif-sequence",
        b"avif": "image/avif",
        b"avis": "image/avif",
    }
    if brand in images:
        return images[brand]
    if brand in (b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "):
        return "audio/mp4"
    return "video/quicktime" if brand == b"qt  " else "video/mp4"


def _frame_sync_mime(head: bytes) -> str | None:
    """An 11/12-bit frame sync: ADTS AAC (layer bits 00) or an MPEG audio frame with a valid header."""
    if head[1] & 0xF6 == 0xF0:
        return "audio/aac"
    version, layer = (head[1] >> 3) & 3, (head[1] >> 1) & 3
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 3
    if version != 1 and layer != 0 and bitrate != 15 and rate != 3:
        return "audio/mpeg"
    return None


def address_refused(ip: IPAddress) -> bool:
    """True for anything but public unicast: loopback, private, link-local, multicast, CGNAT, metadata, ...

    IPv6 forms that carry an IPv4 address (mapped, compatible, well-known NAT64, 6to4) are judged by that address
    too, so `::ffff:127.0.0.1` or `2002:7f00:1::` cannot smuggle loopback in.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped
        if embedded is None and (ip in _IPV4_COMPAT or ip in _NAT64_WELL_KNOWN):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return address_refused(embedded)
        if ip.sixtofour is not None and address_refused(ip.sixtofour):
            return True
        if ip.is_site_local:
            return True
    if any(ip in net for net in _BLOCKED_NETWORKS):
        return True
    return (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
    )


_NUMERIC_LABEL = re.compile(r"0[xX][0-9a-fA-F]*|[0-9]+")


def _ip_literal(host: str) -> IPAddress | None:
    """The address a host names literally, or None for a DNS name.

    IPv4 is parsed the way inet_aton (and so getaddrinfo, curl, browsers) does: 1 to 4 parts, each decimal, octal
    (leading 0) or hex (0x), the last part filling the remaining bytes. `2130706433`, `0x7f.1`, `0177.0.0.1` and
    `127.1` all mean 127.0.0.1. A host whose last label is numeric but is no valid address is refused, as in URL
    parsers, rather than handed to DNS.
    """
    text = host[:-1] if host.endswith(".") else host
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            raise _Refused(f"the host {host} is not a valid IP address") from None
    parts = text.split(".")
    if not _NUMERIC_LABEL.fullmatch(parts[-1]):
        return None
    try:
        numbers = [_inet_aton_part(part) for part in parts]
        *front, last = numbers
        if len(numbers) > 4 or any(n > 255 for n in front) or last >= 256 ** (4 - len(front)):
            raise ValueError(host)
        value = last
        for i, n in enumerate(front):
            value += n << (8 * (3 - i))
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise _Refused(f"the host {host} is not a valid IP address") from None


def _inet_aton_part(part: str) -> int:
    if part[:2].lower() == "0x":
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)
    return int(part, 10)


class _Refused(Exception):
    """Internal: why a URL was refused; fetch() turns it into the public 400/413 naming the field."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.too_large = too_large

    def public(self, field: str, max_bytes: int) -> VidgateError:
        if self.too_large:
            return PayloadTooLarge(f"{field}: file exceeds the maximum allowed size of {_mb(max_bytes)} MB")
        return invalid(field_path(field), self.message)


def _too_large() -> _Refused:
    return _Refused("too large", too_large=True)


def _mb(n: int) -> str:
    text = f"{n / _MIB:.2f}".rstrip("0").rstrip(".")
    return text if text != "0" else f"{n / _MIB:.2g}"


def _classify(head: bytes, kind: str, declared: str) -> str:
    """The sniffed mime, checked against the kind the field expects (documents take anything)."""
    sniffed = sniff_mime(head)
    if kind == "document":
        return sniffed or declared or "application/octet-stream"
    if sniffed is None:
        raise _Refused(f"the data is not in a recognised {kind} format, expected {_KIND_NOUN[kind]}")
    if kind == "audio" and sniffed in _AUDIO_FORM:
        return _AUDIO_FORM[sniffed]
    if not sniffed.startswith(kind + "/"):
        raise _Refused(f"the data is {sniffed}, expected {_KIND_NOUN[kind]}")
    return sniffed


def _declared_agrees(declared: str, sniffed: str) -> bool:
    """A data URL's declared type agrees with the bytes when the families match (image/jpg ~ image/jpeg).

    Audio and video are interchangeable for containers that can hold either (mp4, webm, matroska, ogg).
    """
    if declared in _GENERIC_MIMES:
        return True
    top_declared, top_sniffed = declared.split("/")[0], sniffed.split("/")[0]
    if top_declared == top_sniffed:
        return True
    return {top_declared, top_sniffed} == {"audio", "video"} and sniffed in _AV_CONTAINERS


@dataclass(frozen=True)
class PostOutcome:
    """What a guarded POST got: the response's status code, or why there was none."""

    status_code: int | None
    error: str | None


@dataclass(frozen=True)
class _Target:
    """Where one hop really goes: the vetted IP in the URL, the original name in Host and SNI."""

    url: httpx.URL
    host_header: str
    extensions: dict[str, str]


class GuardedFetcher:
    """Fetches user-supplied media URLs into local files, refusing anything unsafe (see the module docstring)."""

    def __init__(
        self,
        *,
        allow_hosts: Iterable[str] = (),
        resolver: Resolver | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 20.0,
        max_redirects: int = 3,
        user_agent: str = "vidgate-fetcher/0.1",
        total_timeout: float = 120.0,
    ) -> None:
        self._allow = {h.strip().lower().rstrip(".") for h in allow_hosts if h.strip()}
        self._resolver = resolver or system_resolver
        self._connect_timeout = connect_timeout
        self._max_redirects = max_redirects
        self._total_timeout = total_timeout  # bounds slow-drip servers that never trip the read timeout
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            follow_redirects=False,  # every hop is vetted by hand
            trust_env=False,  # no proxies from the environment: we connect to the vetted IP ourselves
            # No keep-alive: a pooled connection to an IP could otherwise serve a different host name.
            limits=httpx.Limits(max_keepalive_connections=0),
            # Never keep cookies: the client is shared by every user's fetches.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def fetch(self, url: str, *, field: str, kind: str, max_bytes: int, dest: Path) -> MediaFile:
        """Fetch `url` (data: or http(s)) into `dest`; raise a 400/413 naming `field` on any refusal."""
        if kind not in KINDS:
            raise ValueError(f"unknown media kind {kind!r}")
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.part")
        try:
            if not isinstance(url, str) or not url.strip():
                raise _Refused("must be a non-empty URL")
            url = url.strip()
            if url[:5].lower() == "data:":
                mime, size, digest = _save_data_url(url, kind, max_bytes, tmp)
            else:
                mime, size, digest = await self._save_http(url, kind, max_bytes, tmp)
            os.replace(tmp, dest)
        except _Refused as exc:
            raise exc.public(field, max_bytes) from None
        finally:
            tmp.unlink(missing_ok=True)
        return MediaFile(field=field, path=dest, kind=kind, mime=mime, size=size, sha256=digest)

    async def vet_url(self, url: str, *, field: str, https_only: bool = False) -> None:
        """Refuse, with a 400 naming `field`, a URL `post` would refuse (shape, scheme, addresses), without
        connecting to it. `https_only`: plain http only for allow-listed hosts."""
        try:
            await self._vet(self._target_url(url, https_only))
        except _Refused as exc:
            raise exc.public(field, 0) from None

    async def post(self, url: str, *, content: bytes, headers: dict[str, str], timeout: float,
                   https_only: bool = False) -> PostOutcome:
        """POST `content` to the vetted, pinned address of `url`, all within `timeout` seconds. A redirect is
        the answer, not followed (its target would escape the vetting). Never raises for the URL or the network:
        the outcome says what happened. The response body is not read: only its status matters."""
        try:
            async with asyncio.timeout(timeout):
                target = await self._vet(self._target_url(url, https_only))
                request = self._client.build_request(
                    "POST", target.url, content=content, headers={**headers, "Host": target.host_header},
                    extensions=target.extensions, timeout=httpx.Timeout(timeout),
                )
                response = await self._client.send(request, stream=True)
                await response.aclose()
                return PostOutcome(response.status_code, None)
        except _Refused as exc:
            return PostOutcome(None, f"refused: {exc.message}")
        except (TimeoutError, httpx.TimeoutException):
            return PostOutcome(None, f"timed out after {timeout:g} s")
        except httpx.ConnectError:
            return PostOutcome(None, "could not connect to the URL's host")
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return PostOutcome(None, f"the request failed ({type(exc).__name__})")

    def _target_url(self, url: str, https_only: bool) -> httpx.URL:
        parsed = _parse_url(url)
        if https_only and parsed.scheme != "https":
            port = parsed.port or 80
            if not self._allowed(parsed.raw_host.decode("ascii"), port):
                raise _Refused("must be an https URL (plain http only to hosts the operator allow-listed)")
        return parsed

    async def _save_http(self, url: str, kind: str, max_bytes: int, tmp: Path) -> tuple[str, int, str]:
        try:
            async with asyncio.timeout(self._total_timeout):
                return await self._follow(url, kind, max_bytes, tmp)
        except (TimeoutError, httpx.TimeoutException):
            raise _Refused("fetching the URL timed out") from None
        except httpx.ConnectError:
            raise _Refused("could not connect to the URL's host") from None
        except (httpx.HTTPError, httpx.InvalidURL):
            raise _Refused("fetching the URL failed: the server's response was broken off or invalid") from None

    async def _follow(self, url: str, kind: str, max_bytes: int, tmp: Path) -> tuple[str, int, str]:
        """GET the URL, following redirects by hand; every hop is parsed and vetted afresh.

        `url` is the text of the current hop: the user's URL, then each Location (relative ones resolved against
        the previous hop's URL by name, never by the pinned IP).
        """
        current: httpx.URL | None = None
        for hop in range(self._max_redirects + 1):
            try:
                current = _parse_url(url, base=current)
                target = await self._vet(current)
            except _Refused as exc:
                if hop:
                    raise _Refused(f"redirected to {url}, which is refused: {exc.message}") from None
                raise
            request = self._client.build_request(
                "GET", target.url, headers={"Host": target.host_header}, extensions=target.extensions
            )
            response = await self._client.send(request, stream=True)
            try:
                status = response.status_code
                if status in _REDIRECT_CODES:
                    url = response.headers.get("location", "")
                    if not url:
                        raise _Refused(f"the URL answered HTTP {status} without a Location")
                    continue
                if not 200 <= status < 300:
                    raise _Refused(f"fetching the URL failed with HTTP status {status}")
                return await _stream_body(response, kind, max_bytes, tmp)
            finally:
                await response.aclose()
        raise _Refused(f"too many redirects (more than {self._max_redirects})")

    async def _vet(self, url: httpx.URL) -> _Target:
        """Resolve the host and refuse unless every address is public (or the host is allow-listed); pin the IP."""
        host = url.raw_host.decode("ascii")  # IDNA-encoded; IPv6 without brackets
        port = url.port or (443 if url.scheme == "https" else 80)
        literal = _ip_literal(host)
        addresses = [literal] if literal is not None else await self._resolve(host, port)
        if not self._allowed(host, port):
            if literal is not None and address_refused(literal):
                raise _Refused(f"the host {host} is a private, loopback or reserved address")
            if any(address_refused(ip) for ip in addresses):
                raise _Refused(f"the host {host} resolves to a private, loopback or reserved address")
        extensions = {"sni_hostname": host} if url.scheme == "https" and literal is None else {}
        return _Target(
            url=url.copy_with(host=str(addresses[0])),
            host_header=url.netloc.decode("ascii"),
            extensions=extensions,
        )

    async def _resolve(self, host: str, port: int) -> list[IPAddress]:
        try:
            async with asyncio.timeout(self._connect_timeout):
                answers = await self._resolver(host, port)
            addresses = [ipaddress.ip_address(a) for a in answers]
        except TimeoutError:
            raise _Refused(f"resolving the host {host} timed out") from None
        except (OSError, ValueError):
            raise _Refused(f"the host {host} could not be resolved") from None
        if not addresses:
            raise _Refused(f"the host {host} could not be resolved")
        return addresses

    def _allowed(self, host: str, port: int) -> bool:
        name = host.lower().rstrip(".")
        shown = f"[{name}]" if ":" in name else name
        return bool(self._allow & {name, shown, f"{shown}:{port}"})


def _parse_url(text: str, *, base: httpx.URL | None = None) -> httpx.URL:
    """Parse (or resolve against the previous hop) and check what the URL's shape alone can tell."""
    try:
        url = httpx.URL(text) if base is None else base.join(text)
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
        raise _Refused(f"not a valid URL ({exc})") from None
    if url.scheme not in ("http", "https"):
        raise _Refused("only http, https and data: URLs are accepted")
    if url.userinfo:
        raise _Refused("URLs with credentials (user:password@) are not accepted")
    if not url.raw_host:
        raise _Refused("the URL has no host")
    return url


async def _stream_body(response: httpx.Response, kind: str, max_bytes: int, tmp: Path) -> tuple[str, int, str]:
    """Write the body to `tmp` under the byte cap, hashing it, and refuse the wrong kind as soon as it shows."""
    length = response.headers.get("content-length", "").strip()
    if length.isdigit() and int(length) > max_bytes:
        raise _too_large()
    encoding = response.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        # We ask for identity; decoding would let a small compressed body expand past the cap in memory.
        raise _Refused(f"the URL sent {encoding}-encoded content; only uncompressed content is accepted")
    declared = response.headers.get("content-type", "").split(";")[0].strip().lower()
    digest, size, head, mime = hashlib.sha256(), 0, bytearray(), None
    with tmp.open("wb") as fh:
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > max_bytes:
                raise _too_large()
            digest.update(chunk)
            fh.write(chunk)
            if len(head) < SNIFF_BYTES:
                head += chunk[: SNIFF_BYTES - len(head)]
                if len(head) == SNIFF_BYTES:
                    mime = _classify(bytes(head), kind, declared)
    if size == 0:
        raise _Refused("the URL returned no data")
    if mime is None:
        mime = _classify(bytes(head), kind, declared)
    return mime, size, digest.hexdigest()


def _save_data_url(url: str, kind: str, max_bytes: int, tmp: Path) -> tuple[str, int, str]:
    """Decode `data:<mime>[;params];base64,<data>` strictly into `tmp`."""
    header, comma, payload = url[5:].partition(",")
    if not comma:
        raise _Refused("not a valid data URL (expected data:<mime>;base64,<data>)")
    params = [p.strip().lower() for p in header.split(";")]
    if len(params) < 2 or params[-1] != "base64":
        raise _Refused("data URLs must be base64-encoded (data:<mime>;base64,<data>)")
    declared = params[0]
    if not payload:
        raise _Refused("the data URL is empty")
    # Check the size before decoding, so an oversized payload is never decoded into memory.
    if len(payload) * 3 // 4 - payload[-2:].count("=") > max_bytes:
        raise _too_large()
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _Refused("the data URL is not valid base64") from None
    if len(data) > max_bytes:
        raise _too_large()
    if not data:
        raise _Refused("the data URL is empty")
    sniffed = sniff_mime(data[:SNIFF_BYTES])
    if sniffed is not None and not _declared_agrees(declared, sniffed):
        raise _Refused(f"the data URL declares {declared} but the data is {sniffed}")
    mime = _classify(data[:SNIFF_BYTES], kind, "" if declared in _GENERIC_MIMES else declared)
    tmp.write_bytes(data)
    return mime, len(data), hashlib.sha256(data).hexdigest()
