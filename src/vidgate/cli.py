"""The `vidgate` command line: a thin shell over the library."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vidgate.client.cli import commands as client_commands
from vidgate.settings import Settings, load_settings, node_description

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from vidgate.db import Database
    from vidgate.gateway.client import UpstreamClient

app = typer.Typer(help="vidgate: a self-hostable, Venice-compatible video generation API server.",
                  no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
accounts_app = typer.Typer(help="Account administration.", no_args_is_help=True)
catalog_app = typer.Typer(help="The model catalogue: check an operator's file, sync from another server.",
                          no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(accounts_app, name="accounts")
app.add_typer(catalog_app, name="catalog")
upstreams_app = typer.Typer(help="Gateway mode: the upstream providers in VIDGATE_UPSTREAMS.", no_args_is_help=True)
app.add_typer(upstreams_app, name="upstreams")
db_app = typer.Typer(help="The database's schema: migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(client_commands)  # generate, quote, models, status, jobs, cancel, download: over HTTP (vidgate.client)

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")

DataDirOption = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Where the database, media and secret live "
                                    "[default: $VIDGATE_DATA_DIR or ./vidgate-data]"),
]


def print_error(message: str) -> None:
    """An error for the operator on stderr; the message is text, never rich markup (it may hold brackets)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _settings(data_dir: Path | None, **overrides: object) -> Settings:
    """The settings, or a clear error naming the setting that does not parse (and exit 2)."""
    from pydantic import ValidationError

    try:
        return load_settings(data_dir=data_dir, **overrides)
    except ValidationError as exc:
        for err in exc.errors()[:5]:
            name = "VIDGATE_" + str(err["loc"][0]).upper() if err["loc"] else "settings"
            where = ".".join(str(p) for p in err["loc"][1:])
            print_error(f"{name}{': ' + where if where else ''}: {err['msg']}")
        raise typer.Exit(2) from None


def _open_database(settings: Settings) -> Database:
    """The settings' database, created if new, at this vidgate's schema; otherwise say what to do and exit 2
    (see `vidgate.migrate.ensure_schema`)."""
    from vidgate.db import open_database
    from vidgate.migrate import SchemaError

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = open_database(settings.resolved_database_url)  # refuses an unsupported URL; connects lazily
    try:
        db.create_schema()
    except SchemaError as exc:
        db.dispose()
        print_error(str(exc))
        raise typer.Exit(2) from None
    return db


def _transaction(settings: Settings, action: Callable[[Connection], T]) -> T:
    """Run `action` in one write transaction against the settings' database."""
    db = _open_database(settings)
    try:
        return db.write_now(action)
    finally:
        db.dispose()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
    data_dir: DataDirOption = None,
    workers: Annotated[int | None, typer.Option(help="Render worker processes [default: 2]")] = None,
    no_workers: Annotated[bool, typer.Option("--no-workers", help="API only; run `vidgate worker` elsewhere")] = False,
) -> None:
    """Start the API server and its render workers (one process tree)."""
    import uvicorn

    from vidgate.api.app import create_app
    from vidgate.bootstrap import ensure_first_account
    from vidgate.supervisor import WorkerSupervisor

    settings = _settings(data_dir, workers=workers)
    _setup_logging(settings)
    _check_catalog(settings)
    _check_storage(settings)
    _check_rate_limits(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    first_key = _bootstrap(settings, ensure_first_account)
    if first_key is not None:
        console.print("[bold green]Created the first account.[/] Its API key (shown only once):")
        console.print(first_key, soft_wrap=True, highlight=False)
    supervisor = WorkerSupervisor(settings, 0 if no_workers else settings.workers)
    supervisor.start()
    console.print(f"vidgate listening on http://{host}:{port}/api/v1 "
                  f"(data: {settings.data_dir.resolve()}, workers: {supervisor.count})", soft_wrap=True)
    count = supervisor.count
    role = "API node" + (f" with {count} worker{'s' if count != 1 else ''}" if count else " (no workers)")
    console.print(node_description(settings, role), highlight=False)
    _announce_upscaler(settings)
    try:
        # log_config=None: uvicorn's own records go through vidgate's log handler (JSON by default) instead of a
        # text format of uvicorn's; its access log stays off (api/observe.py writes one line per request).
        api = create_app(settings)
        _freeze_startup_heap()
        uvicorn.run(api, host=host, port=port, log_level="warning", access_log=False, log_config=None)
    finally:
        supervisor.stop()


def _freeze_startup_heap() -> None:
    """Keep what start-up made (modules, the catalogue, the app: ~150,000 objects) out of the cycle collector's
    full passes. Requests promote a few of their objects to the oldest generation, so under load Python ran a
    full collection about once a second, ~100 ms with the event loop stopped: the poll latency's p99 on
    PostgreSQL (bench/RESULTS.md). Frozen, a full pass walks only what was made since."""
    import gc

    gc.collect()
    gc.freeze()


def _setup_logging(settings: Settings) -> None:
    """Log records as VIDGATE_LOG_FORMAT says (vidgate.logs), from the start of `serve` and `worker` on. What the
    operator reads once at the start (the first key, where it listens, the upscaler) stays plain text on stdout."""
    from vidgate.logs import setup_logging

    setup_logging(settings.log_format)


def _check_catalog(settings: Settings) -> int:
    """Load the catalogue and price overrides the way the server will; a bad record stops the start here."""
    from vidgate.served_catalog import STARTUP_ERRORS, served_catalog

    try:
        served = served_catalog(settings)
    except STARTUP_ERRORS as exc:
        print_error(str(exc))
        raise typer.Exit(2) from None
    return len(served.catalog)


def _check_storage(settings: Settings) -> None:
    """A bucket that is missing or unreachable stops the start here, naming the setting."""
    from vidgate.storage import storage_from_settings
    from vidgate.storage.base import StorageConfigError

    _refuse_on(StorageConfigError, lambda: storage_from_settings(settings))


def _check_rate_limits(settings: Settings) -> None:
    """So does a rate-limit Redis that is unreachable (before the first account is made)."""
    from vidgate.api.ratelimit import RateLimitConfigError, rate_limiter_from_settings

    _refuse_on(RateLimitConfigError, lambda: rate_limiter_from_settings(settings))


def _refuse_on(error: type[Exception], check: Callable[[], object]) -> None:
    """Run a start-up check; its configuration error is printed as one line and the start stops (exit 2)."""
    try:
        check()
    except error as exc:
        print_error(str(exc))
        raise typer.Exit(2) from None


def _announce_upscaler(settings: Settings) -> None:
    """Say once, at start, which upscaler topaz-video-upscale will use (checking takes a second: off the way)."""
    import threading

    from vidgate.engines.upscale import upscaler_notice

    def announce() -> None:
        console.print(upscaler_notice(settings.upscale_method), highlight=False, soft_wrap=True)

    threading.Thread(target=announce, name="upscaler-check", daemon=True).start()


def _bootstrap(settings: Settings, action: Callable[[Database, Settings], T]) -> T:
    db = _open_database(settings)
    try:
        return action(db, settings)
    finally:
        db.dispose()


@app.command()
def worker(
    data_dir: DataDirOption = None,
    device: Annotated[str | None, typer.Option(help="Device for diffusers pipelines, e.g. cuda:1 (one worker "
                                                    "per GPU; CUDA_VISIBLE_DEVICES is honoured)")] = None,
    engines: Annotated[str | None, typer.Option(help="Only jobs of these engines, comma-separated "
                                                     "(procedural,image,reference,video,upscale,diffusers)")] = None,
    models: Annotated[str | None, typer.Option(help="Only jobs of these model ids, comma-separated")] = None,
) -> None:
    """Run one render worker process (`vidgate serve` starts these itself)."""
    from vidgate.worker import run_worker_process

    settings = _settings(data_dir, worker_device=device,
                         worker_engines=engines.split(",") if engines else None,
                         worker_models=models.split(",") if models else None)
    _setup_logging(settings)
    _check_catalog(settings)
    _check_storage(settings)
    _open_database(settings).dispose()  # a new database is created here; one at another revision stops here
    run_worker_process(settings)


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDirOption = None) -> None:
    """Migrate the database to this vidgate's schema (run it after upgrading vidgate; back up the data dir first).

    A new database is created; one from before migrations is checked and adopted; at the newest revision already,
    nothing happens."""
    from vidgate.migrate import SchemaError, current_revision, upgrade

    settings = _settings(data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    try:
        before = current_revision(url)
        console.print(f"schema revision before: {before or 'none'}", highlight=False)
        after = upgrade(url)
    except SchemaError as exc:
        print_error(str(exc))
        raise typer.Exit(2) from None
    console.print(f"schema revision after: {after}" + (" (already up to date)" if before == after else ""),
                  highlight=False)


@catalog_app.command("check")
def catalog_check(
    file: Annotated[Path | None, typer.Argument(help="An operator catalogue file [default: VIDGATE_CATALOG_FILE]")]
    = None,
    data_dir: DataDirOption = None,
) -> None:
    """Load the shipped catalogue with an operator's file (and VIDGATE_PRICE_FILE) applied; report problems."""
    settings = _settings(data_dir, **({"catalog_file": file} if file else {}))
    count = _check_catalog(settings)
    with_file = f" (with {settings.catalog_file})" if settings.catalog_file else ""
    console.print(f"catalogue OK: {count} models{with_file}")


@catalog_app.command("sync")
def catalog_sync(
    source: Annotated[str, typer.Option("--from", help="Base URL of a Venice-compatible API, e.g. "
                                                       "https://api.venice.ai/api/v1")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the catalogue file")] = Path("catalog-sync.json"),
    api_key_env: Annotated[str | None, typer.Option(help="Environment variable holding an API key to send")] = None,
    quotes: Annotated[bool, typer.Option(help="Ask /video/quote for sample prices of the models it adds")] = True,
) -> None:
    """Read a server's `/models?type=video` (and sample quotes) into a catalogue file to review and load."""
    import httpx

    from vidgate.catalog.models import load_catalog
    from vidgate.catalog.sync import SyncError, sync_catalog

    key = os.environ.get(api_key_env) if api_key_env else None
    if api_key_env and not key:
        print_error(f"the variable {api_key_env} is not set")
        raise typer.Exit(2)
    try:
        with httpx.Client(base_url=source.rstrip("/"), timeout=30,
                          headers={"Authorization": f"Bearer {key}"} if key else {}) as client:
            result = sync_catalog(client, load_catalog(), quotes=quotes)
    except (SyncError, httpx.HTTPError) as exc:
        print_error(f"{source}: {exc}")
        raise typer.Exit(1) from None
    out.write_text(json.dumps(result.data, indent=1) + "\n")
    # soft_wrap: one line each whatever the terminal's width (a path is never cut; scripts read these lines).
    console.print(f"wrote {out}: {len(result.data['models'])} new, {len(result.data['update'])} changed, "
                  f"{len(result.unchanged)} unchanged; {len(result.missing)} local models the server does not list",
                  soft_wrap=True, highlight=False)
    console.print(f"review it, then start with VIDGATE_CATALOG_FILE={out}", soft_wrap=True, highlight=False)


@keys_app.command("create")
def keys_create(
    data_dir: DataDirOption = None,
    balance_usd: Annotated[float, typer.Option("--balance-usd", help="Starting balance of the new account")] = 0.0,
    account: Annotated[str | None, typer.Option(help="Add the key to this existing account instead")] = None,
    label: Annotated[str, typer.Option(help="A note to recognise the key by")] = "",
) -> None:
    """Create an account (or use --account) and a new API key; the key is the last line printed."""
    from vidgate.accounts.keys import create_api_key
    from vidgate.accounts.ledger import balance_micros, create_account, credit, find_account, format_usd, usd_to_micros

    settings = _settings(data_dir)

    pepper = settings.resolved_secret_key

    def action(conn: Connection) -> tuple[str, str, str, int]:
        account_id = find_account(conn, account) if account else create_account(conn, label)
        if account_id is None:
            raise typer.BadParameter(f"no account {account!r}", param_hint="--account")
        if balance_usd:
            credit(conn, account_id, usd_to_micros(balance_usd), note="keys create --balance-usd")
        key_id, key = create_api_key(conn, account_id, pepper, label)
        return account_id, key_id, key, balance_micros(conn, account_id) or 0

    account_id, key_id, key, balance = _transaction(settings, action)
    # The account's whole balance (an --account may already hold credit), so nobody is surprised by a 402.
    err_console.print(f"account {account_id}, key id {key_id}, balance: ${format_usd(balance)}", highlight=False)
    print(key)


@keys_app.command("list")
def keys_list(data_dir: DataDirOption = None) -> None:
    """List API keys (never the secrets) with their accounts and balances."""
    from sqlalchemy import select

    from vidgate.accounts.keys import ApiKeyRecord, list_api_keys
    from vidgate.accounts.ledger import format_usd
    from vidgate.db import accounts

    settings = _settings(data_dir)

    def action(conn: Connection) -> tuple[list[ApiKeyRecord], dict[str, int]]:
        return list_api_keys(conn), {r.id: r.balance_micros for r in conn.execute(select(accounts))}

    keys, balances = _transaction(settings, action)
    table = Table("key id", "account", "balance (USD)", "label", "status")
    for k in keys:
        table.add_row(k.id, k.account_id, format_usd(balances.get(k.account_id, 0)), k.label,
                      "revoked" if k.revoked_at else "active")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDirOption = None) -> None:
    """Revoke an API key by its id (see `vidgate keys list`)."""
    from vidgate.accounts.keys import revoke_api_key

    settings = _settings(data_dir)

    if not _transaction(settings, lambda conn: revoke_api_key(conn, key_id)):
        err_console.print(f"no active key with id {key_id}")
        raise typer.Exit(1)
    console.print(f"revoked key {key_id}")


@accounts_app.command("credit")
def accounts_credit(
    account: Annotated[str, typer.Argument(help="Account id or wallet address")],
    usd: Annotated[float, typer.Option("--usd", help="Amount to add (negative to debit)")],
    data_dir: DataDirOption = None,
    note: Annotated[str, typer.Option(help="Ledger note")] = "admin credit",
) -> None:
    """Add funds to an account (an entry in its ledger)."""
    from vidgate.accounts.ledger import balance_micros, credit, find_account, format_usd, usd_to_micros

    settings = _settings(data_dir)

    def action(conn: Connection) -> tuple[str | None, int]:
        account_id = find_account(conn, account)
        if account_id is None:
            return None, 0
        credit(conn, account_id, usd_to_micros(usd), note=note)
        return account_id, balance_micros(conn, account_id) or 0

    account_id, balance = _transaction(settings, action)
    if account_id is None:
        err_console.print(f"no account {account!r}")
        raise typer.Exit(1)
    console.print(f"{account_id}: balance ${format_usd(balance)}")


@upstreams_app.command("check")
def upstreams_check(data_dir: DataDirOption = None) -> None:
    """Call each upstream's /models?type=video: reachable, key accepted, and which routed models it lacks."""
    from vidgate.gateway.client import UpstreamClient, UpstreamError
    from vidgate.served_catalog import STARTUP_ERRORS, served_catalog

    settings = _settings(data_dir)
    try:
        served = served_catalog(settings)
    except STARTUP_ERRORS as exc:
        print_error(str(exc))
        raise typer.Exit(2) from None
    if not settings.upstreams:
        console.print("no upstreams configured (VIDGATE_UPSTREAMS)")
        return
    table = Table("upstream", "reachable", "key", "routed", "not offered upstream")
    ok = True
    for name, config in settings.upstreams.items():
        routed = sorted(m for m, r in served.routes.items() if r.upstream == name)
        key = os.environ.get(config.api_key_env, "")
        with UpstreamClient(config.client_spec(name, key)) as client:
            try:
                offered = {m.get("id") for m in client.list_models()}
                # /models answers anonymous callers too: a queue status call is what proves the key.
                reachable, key_state = "yes", _key_state(client, routed[0] if routed else "")
            except UpstreamError as exc:
                offered, reachable, key_state = set(), f"no: {exc}", "?"
        missing = [m for m in routed if m not in offered]
        ok = ok and reachable == "yes" and key_state == "accepted" and not missing
        table.add_row(name, reachable, key_state, str(len(routed)), ", ".join(missing) or "—")
    console.print(table)
    if not ok:
        raise typer.Exit(1)


def _key_state(client: UpstreamClient, model: str) -> str:
    """Whether the upstream accepts the key: retrieve of a queue id that cannot exist is 401 for a bad key."""
    from vidgate.gateway.client import UpstreamAuthFailed, UpstreamError

    try:
        client.poll(model, "00000000-0000-0000-0000-000000000000")
    except UpstreamAuthFailed:
        return "refused"
    except UpstreamError:
        return "accepted"  # not found (or invalid) means the key got past authentication
    return "accepted"


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":
    main()
