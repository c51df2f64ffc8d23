"""All of vidgate's settings, in one object read from the environment (prefix VIDGATE_) or `.env`.

Nothing else in the package reads the environment.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from vidgate.engines.diffusers_models import DiffusersBinding
from vidgate.gateway.config import UpstreamConfig


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VIDGATE_", env_file=".env", extra="ignore")

    data_dir: Path = Path("./vidgate-data")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; defaults to SQLite (WAL) in the data dir."
    )
    public_base_url: str | None = Field(
        default=None,
        description="Base URL put in download links; when unset, the scheme and host of the request are used.",
    )
    secret_key: str | None = Field(
        default=None,
        description="Signs download URLs and peppers API key hashes; generated into the data dir when unset.",
    )

    catalog_file: Path | None = Field(default=None, description="JSON file that adds or replaces models.")
    price_file: Path | None = Field(default=None, description="JSON file that overrides the price table.")

    rate_limit_queue_per_min: int = 40
    rate_limit_retrieve_per_min: int = 120
    # Where the per-key counters live (api/ratelimit.py): memory:// counts in this API process only, so with
    # several API nodes each would allow the whole limit; a Redis URL shares one count between them all.
    rate_limit_storage_url: str = Field(
        default="memory://", description="memory:// (one API process) or redis://host:port[/db] (shared by "
        "every API node); an unreachable Redis stops the start, and answers 503 while running",
    )

    bootstrap_balance_usd: float = Field(
        default=100.0, description="Balance of the account created on first start of an empty data dir."
    )
    max_body_bytes: int = 35 * 1024 * 1024

    # Where finished videos live (storage/__init__.py): unset is `data_dir/media` on local disk.
    storage_url: str | None = Field(
        default=None, description="s3://bucket[/prefix] (any S3-compatible service) or file:///path"
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="endpoint of an S3-compatible service other than AWS (MinIO, R2, ...); "
        "credentials come from the standard AWS_* variables",
    )

    workers: int = 2
    lease_seconds: float = 30.0
    max_attempts: int = 3
    idle_poll_seconds: float = Field(
        default=1.0, description="How often an idle worker re-checks for expired leases without a wake-up."
    )
    render_nice: int = 10
    x264_preset: str = "veryfast"
    x264_crf: int = 23
    upscale_method: str = Field(default="auto", description="auto | realesrgan | lanczos")

    # Real generation on local weights: model id -> binding (engines/diffusers_models.py). JSON in the env.
    diffusers_models: dict[str, DiffusersBinding] = Field(default_factory=dict)
    # Gateway mode: upstream name -> its settings (gateway/config.py). JSON in the env.
    upstreams: dict[str, UpstreamConfig] = Field(default_factory=dict)
    # What this node's workers take: engine names and model ids (None: every engine it can run).
    worker_engines: list[str] | None = None
    worker_models: list[str] | None = None
    worker_device: str | None = Field(default=None, description="device for diffusers pipelines (cuda:1, ...)")

    # The guarded fetcher for user media URLs.
    media_fetch_allow_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts (host or host:port) that may be fetched even though they resolve to private "
        "addresses, e.g. an internal media server. JSON list in the environment.",
    )
    media_fetch_connect_timeout: float = 5.0
    media_fetch_read_timeout: float = 30.0
    media_fetch_max_redirects: int = 3

    # Webhooks (webhooks/, README "Webhooks"): the waits between a failed delivery attempt and the next. A
    # delivery gets one attempt more than the list is long, then it is FAILED (a redelivery sends it again).
    webhook_retry_seconds: list[float] = Field(default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0,
                                                                        7200.0])
    webhook_timeout_seconds: float = Field(default=10.0, description="for one delivery attempt, connect to answer")
    webhook_poll_seconds: float = Field(
        default=1.0, description="How often an API node looks for due deliveries made by other processes.")

    history_retention_days: float = Field(
        default=30.0, ge=0, description="Job events (the live streams' log, replayed by Last-Event-ID) and finished "
        "webhook deliveries older than this are deleted by the API nodes, hourly; 0 keeps them for good.")

    default_average_execution_ms: int = 145_000
    download_url_ttl_seconds: int = 24 * 3600

    # Operations (README "Operating it"): logs, metrics, and what self-hosted messages tell users.
    log_format: Literal["json", "text"] = Field(
        default="json", description="json: one JSON object per line (request_id, job_id); text: for a terminal")
    access_log: bool = Field(default=True, description="one INFO line per HTTP request (method, path, status, "
                             "duration_ms, request_id)")
    access_log_polls: bool = Field(default=False, description="also log status polls answered 200 (POST "
                                   "/video/retrieve, GET /video/jobs/{id}): most of the traffic; /metrics counts them")
    metrics_enabled: bool = Field(default=True, description="GET /metrics (Prometheus) and the per-request counts")
    topup_url: str | None = Field(
        default=None, description="Where your users add credit; named in the INSUFFICIENT_BALANCE message")
    account_url: str | None = Field(
        default=None, description="Where your users get and manage API keys; the x402 discovery body's getKey")
    venice_texts: bool = Field(
        default=False, description="Send Venice's own texts (venice.ai links) instead of pointing to this server")

    # x402 discovery (the 402 body a request with no credentials gets).
    x402_pay_to: str = "0x0000000000000000000000000000000000000000"
    x402_solana_pay_to: str = "11111111111111111111111111111111"
    x402_solana_fee_payer: str = "11111111111111111111111111111111"
    x402_usdc_base: str = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
    x402_usdc_solana: str = "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"
    x402_network: str = "eip155:8453"
    x402_inference_amount_usd: float = 10.0
    siwx_domain: str = "api.venice.ai"

    # Sign-In-With-X (wallet auth) and x402 top-ups (X402.md).
    siwx_allowed_domains: list[str] = Field(default_factory=lambda: ["api.venice.ai", "venice.ai"])
    siwx_chain_id: int = 8453
    siwx_nonce_ttl_seconds: float = 330.0  # remembered at least 5.5 minutes
    eip1271_rpc_url: str | None = Field(default=None, description="JSON-RPC URL for EIP-1271 smart wallets")
    x402_minimum_balance_usd: float = 0.10
    x402_suggested_top_up_usd: float = 10.0
    x402_min_top_up_usd: float = 5.0
    x402_max_top_up_usd: float = 10_000.0
    x402_concurrency_limit: int = 5
    x402_facilitator_url: str = "https://x402.org/facilitator"
    x402_settle_timeout_seconds: float = 30.0

    # Seedance face-media consent (SPEC §5).
    consent_policy_version: str = "v2.0"
    consent_policy_text: str = (
        "The likeness in any media you upload is your own, or you have explicit, legal consent from any depicted "
        "individual(s). Note: an image may contain more than one face — your attestation covers all of them.\n"
        "You own or have permission to use all media you uploaded for content generation.\n"
        "You agree to the Venice.ai Terms of Service and Privacy Policy. Violations can lead to account suspension "
        "and legal liability.\nNo content is stored by Venice."
    )
    consent_docs_url: str = "https://docs.venice.ai/guides/media/seedance-face-consent"

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'vidgate.db').resolve()}"

    @property
    def media_dir(self) -> Path:
        return self.data_dir / "media"

    @property
    def wake_dir(self) -> Path:
        """Unix datagram sockets of idle workers live here; the API pokes them when it queues a job."""
        return self.data_dir / "wake"

    @cached_property
    def resolved_secret_key(self) -> str:
        """The configured secret, or one generated once and kept (mode 0600) in the data dir."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret.key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            # Write a private temp file, then hard-link it into place: the link either wins or finds the
            # file another process already made, so concurrent first starts agree on one secret.
            tmp = path.with_name(f".secret.{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(os.urandom(32).hex())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        return path.read_text().strip()


def node_description(settings: Settings, role: str) -> str:
    """One line a node logs at start: its role, vidgate's version and the backends it uses (never secrets)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("vidgate")
    except PackageNotFoundError:
        release = "unknown"
    database = settings.resolved_database_url.split("://", 1)[0].split("+", 1)[0]
    storage = settings.storage_url.split("://", 1)[0] if settings.storage_url else "local"
    extras = [f"diffusers models: {len(settings.diffusers_models)}"] if settings.diffusers_models else []
    extras += [f"upstreams: {', '.join(settings.upstreams)}"] if settings.upstreams else []
    return "; ".join([f"vidgate {release} {role}", f"database: {database}", f"storage: {storage}", *extras])


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (CLI flags, tests) on top."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)  # type: ignore[arg-type]
