"""The ``callbridge`` command."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import callbridge
from callbridge import cli_connectors, cli_directory
from callbridge.config import Settings
from callbridge.domain.errors import CallbridgeError, InvalidInput
from callbridge.domain.pbx import PbxKind, PbxRecord
from callbridge.domain.users import parse_role
from callbridge.domain.versions import older_than
from callbridge.hub import Hub
from callbridge.services.pbxes import (
    AsteriskSettings,
    PbxChanges,
    YeastarSettings,
    add_pbx,
    edit_pbx,
    parse_queue_numbers,
    webhook_url,
)
from callbridge.store.db import display_url
from callbridge.store.repos import Repos

T = TypeVar("T")

console = Console()
err = Console(stderr=True)

app = typer.Typer(
    help="callbridge: a self-hosted telephony integration hub.",
    no_args_is_help=True,
    add_completion=False,
)
user_app = typer.Typer(help="Manage users: add, list, passwd, role, disable, enable.", no_args_is_help=True)
token_app = typer.Typer(help="Manage personal API tokens.", no_args_is_help=True)
pbx_app = typer.Typer(help="Connect phone systems: add, list.", no_args_is_help=True)
pbx_add_app = typer.Typer(help="Add a phone system (asterisk or yeastar).", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(pbx_app, name="pbx")
recordings_app = typer.Typer(
    help="Recordings: purge what the retention rules say; transcribe a call.", no_args_is_help=True
)
app.add_typer(recordings_app, name="recordings")
wallboard_app = typer.Typer(
    help="Read-only wallboard links for a TV: link, list, revoke.", no_args_is_help=True
)
app.add_typer(wallboard_app, name="wallboard")
team_app = typer.Typer(
    help="Teams that share callbacks round robin: add, members, list, remove.", no_args_is_help=True
)
app.add_typer(team_app, name="team")
analytics_app = typer.Typer(help="Analytics rollups: rebuild them from the call log.", no_args_is_help=True)
app.add_typer(analytics_app, name="analytics")
pbx_app.add_typer(pbx_add_app, name="add")


def _version(value: bool) -> None:
    if value:
        console.print(f"callbridge {callbridge.__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """callbridge: PBX call events into a call log, screen pops and click-to-call."""


def settings() -> Settings:
    try:
        return Settings()
    except ValueError as exc:
        err.print(f"[red]Invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc


def run(work: Callable[[Hub], Coroutine[Any, Any, T]]) -> T:
    """Build the hub, migrate, run ``work`` and close; domain errors become a clear message."""

    async def main() -> T:
        hub = Hub.build(settings())
        try:
            password = await hub.prepare()
            if password:
                _print_first_admin(password)
            return await work(hub)
        finally:
            await hub.close()

    try:
        return asyncio.run(main())
    except CallbridgeError as exc:
        err.print(f"[red]Error:[/red] {exc.message}")
        raise typer.Exit(1) from exc


def in_unit(work: Callable[[Hub, Repos], Awaitable[T]]) -> T:
    async def inner(hub: Hub) -> T:
        async with hub.db.unit() as repos:
            return await work(hub, repos)

    return run(inner)


def _print_first_admin(password: str) -> None:
    console.print(
        "[bold green]Created the first user[/bold green]: name [bold]admin[/bold], password "
        f"[bold]{password}[/bold]\nThis password is shown only once; change it after signing in."
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8000).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Start the hub: web UI, JSON API, dialplan API and PBX links."""
    import uvicorn

    from callbridge.web.server import serve_workers, uvicorn_options

    cfg = settings()
    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def prepare() -> str | None:
        hub = Hub.build(cfg)
        try:
            return await hub.prepare()
        finally:
            await hub.close()

    try:
        password = asyncio.run(prepare())
    except CallbridgeError as exc:
        err.print(f"[red]Error:[/red] {exc.message}")
        raise typer.Exit(1) from exc
    if password:
        _print_first_admin(password)
    bind_host = host or cfg.host
    bind_port = port or cfg.port
    console.print(
        f"callbridge {callbridge.__version__} on http://{bind_host}:{bind_port} "
        f"(database: {display_url(cfg.effective_database_url)}, data dir: {cfg.data_dir.resolve()})"
    )
    config = uvicorn.Config(
        "callbridge.web.asgi:app",
        host=bind_host,
        port=bind_port,
        workers=workers,
        factory=False,
        log_level=cfg.log_level.lower(),
        proxy_headers=False,
        # Live messages are small JSON: compressing each one costs more CPU than it saves bytes.
        ws_per_message_deflate=False,
        **uvicorn_options(cfg, workers=workers),
    )
    if workers > 1:
        try:
            serve_workers(config, bind_host, bind_port)
        except OSError as exc:
            err.print(f"[red]Error:[/red] cannot listen on {bind_host}:{bind_port}: {exc.strerror}")
            raise typer.Exit(1) from exc
    else:
        uvicorn.Server(config).run()


@app.command()
def demo(
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8000).")] = None,
) -> None:
    """Start the hub with seeded users and contacts and a simulated PBX that keeps calling
    (what `make demo` runs). Prints the demo users' passwords."""
    from callbridge.demo import run_demo

    cfg = settings()
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run_demo(cfg, host or cfg.host, port or cfg.port, announce=console.print))
    except CallbridgeError as exc:
        err.print(f"[red]Error:[/red] {exc.message}")
        raise typer.Exit(1) from exc


agent_app = typer.Typer(
    help="The agent beside Asterisk: run it (the default), enroll it, print its systemd unit.",
    invoke_without_command=True,
)
app.add_typer(agent_app, name="agent")

HubOption = Annotated[
    str | None, typer.Option(help="The hub's address, e.g. https://hub.example.com (dialed out to).")
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        envvar="CALLBRIDGE_AGENT_TOKEN",
        help="Agent token (written by `callbridge agent enroll`; or the env variable).",
    ),
]
AmiHostOption = Annotated[str | None, typer.Option(help="AMI host (default 127.0.0.1).")]
AmiPortOption = Annotated[int | None, typer.Option(help="AMI port (default 5038).")]
AmiUserOption = Annotated[str | None, typer.Option(help="AMI user (a manager.conf section).")]
AmiSecretOption = Annotated[
    str | None,
    typer.Option(envvar="CALLBRIDGE_AGENT_AMI_SECRET", help="AMI secret (or the env variable)."),
]
OutboxOption = Annotated[
    Path | None, typer.Option(help="Outbox file (default /var/lib/callbridge-agent/outbox.sqlite3).")
]
OutboxRowsOption = Annotated[
    int | None, typer.Option(help="Outbox bound; when full the oldest events are dropped, loudly.")
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="TOML file with the same settings (options override it).")
]
LogLevelOption = Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")]


@agent_app.callback()
def agent_command(
    ctx: typer.Context,
    hub: HubOption = None,
    token: TokenOption = None,
    ami_host: AmiHostOption = None,
    ami_port: AmiPortOption = None,
    ami_username: AmiUserOption = None,
    ami_secret: AmiSecretOption = None,
    outbox: OutboxOption = None,
    outbox_max_rows: OutboxRowsOption = None,
    config: ConfigOption = None,
    log_level: LogLevelOption = "INFO",
) -> None:
    """Run the agent beside Asterisk: AMI events into a local outbox, then over a WebSocket to the hub.

    The agent dials out (the PBX needs no open port), resends whatever the hub has not
    acknowledged after any outage, carries out click-to-call for the hub, and applies the
    settings (trunks, events map, guard) the hub pushes. `callbridge agent` with options runs
    it, like `callbridge agent run`. See docs/agent.md and docs/fleet.md.
    """
    if ctx.invoked_subcommand is None:
        agent_run(
            hub,
            token,
            ami_host,
            ami_port,
            ami_username,
            ami_secret,
            outbox,
            outbox_max_rows,
            config,
            log_level,
        )


@agent_app.command("run")
def agent_run(
    hub: HubOption = None,
    token: TokenOption = None,
    ami_host: AmiHostOption = None,
    ami_port: AmiPortOption = None,
    ami_username: AmiUserOption = None,
    ami_secret: AmiSecretOption = None,
    outbox: OutboxOption = None,
    outbox_max_rows: OutboxRowsOption = None,
    config: ConfigOption = None,
    log_level: LogLevelOption = "INFO",
) -> None:
    """Run the agent (what the systemd unit starts): AMI events → outbox → hub."""
    from callbridge.agent.config import AgentConfigError, build
    from callbridge.agent.runner import Agent

    try:
        cfg = build(
            config,
            hub=hub,
            token=token,
            ami_host=ami_host,
            ami_port=ami_port,
            ami_username=ami_username,
            ami_secret=ami_secret,
            outbox=outbox,
            outbox_max_rows=outbox_max_rows,
        )
    except AgentConfigError as exc:
        err.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(2) from exc
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The long-lived objects made so far (modules, phone number data) stay out of the
    # collector's full passes: they would stall the AMI reader each time.
    gc.freeze()
    try:
        asyncio.run(Agent(cfg).run())
    except OSError as exc:
        err.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(1) from exc


def _agent_executable() -> Path:
    """The `callbridge` script beside this interpreter (the venv's bin/), unresolved: a venv's
    python is a symlink to the base interpreter."""
    return Path(sys.executable).parent / "callbridge"


@agent_app.command("enroll")
def agent_enroll(
    hub: Annotated[str, typer.Option(help="The hub's address, e.g. https://hub.example.com.")],
    code: Annotated[
        str,
        typer.Option(
            envvar="CALLBRIDGE_AGENT_ENROLL_CODE",
            help="The single-use code from `callbridge pbx enroll NAME` (or the env variable).",
        ),
    ],
    config: Annotated[Path, typer.Option("--config", help="The config file to write.")] = Path(
        "/etc/callbridge-agent/agent.toml"
    ),
    ami_host: AmiHostOption = None,
    ami_port: AmiPortOption = None,
    ami_username: AmiUserOption = None,
    ami_secret: AmiSecretOption = None,
    outbox: OutboxOption = None,
    recordings_dir: Annotated[
        Path | None, typer.Option(help="MixMonitor's directory (default /var/spool/asterisk/monitor).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing config file.")] = False,
) -> None:
    """Exchange a one-time enrollment code for this agent's token and write its config file
    (mode 600, owned by whoever runs this: run it as the agent's user)."""
    from callbridge.agent.config import DEFAULT_OUTBOX, AgentConfigError
    from callbridge.agent.enroll import EnrollmentFailed, config_text, exchange, write_private

    if config.exists() and not force:
        err.print(
            f"[red]Error:[/red] {config} exists already (this host is enrolled); "
            "give --force to enroll again and replace it.",
            highlight=False,
        )
        raise typer.Exit(2)
    try:
        enrolled = exchange(hub, code)
    except AgentConfigError as exc:
        err.print(f"[red]Error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from exc
    except EnrollmentFailed as exc:
        err.print(f"[red]Error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(1) from exc
    ami = {"host": ami_host, "port": ami_port, "username": ami_username, "secret": ami_secret}
    text = config_text(
        hub,
        enrolled.token,
        outbox=outbox or DEFAULT_OUTBOX,
        recordings_dir=recordings_dir,
        ami=ami,
        pbx=enrolled.pbx,
    )
    try:
        write_private(config, text)
    except OSError as exc:
        err.print(
            f"[red]Error:[/red] cannot write {config}: {exc.strerror or exc}. The code is spent: "
            f"ask for a new one (`callbridge pbx enroll {enrolled.pbx}`).",
            highlight=False,
        )
        raise typer.Exit(1) from exc
    console.print(
        f"Enrolled: this host's agent serves PBX [bold]{enrolled.pbx}[/bold] on {hub}"
        f" (hub {enrolled.hub_version}). Wrote {config} (mode 600; it holds the agent's token).",
        highlight=False,
    )
    steps = []
    if not ami_username or not ami_secret:
        steps.append(f"put the AMI user and secret in the [ami] section of {config} (see docs/agent.md)")
    steps += [
        f"{_agent_executable()} agent systemd-unit --config {config}"
        " > /etc/systemd/system/callbridge-agent.service",
        "systemctl daemon-reload && systemctl enable --now callbridge-agent",
        f"check the hub's Settings → Agents page: {enrolled.pbx} connected",
    ]
    console.print(
        "Next:\n" + "\n".join(f"  {n}. {step}" for n, step in enumerate(steps, 1)),
        highlight=False,
        markup=False,
    )


@agent_app.command("systemd-unit")
def agent_systemd_unit(
    config: Annotated[Path, typer.Option("--config", help="The agent's config file.")] = Path(
        "/etc/callbridge-agent/agent.toml"
    ),
    user: Annotated[str, typer.Option(help="The agent's (unprivileged) user.")] = "callbridge-agent",
    group: Annotated[
        list[str] | None,
        typer.Option(help="Supplementary group (repeatable; default asterisk, to read recordings)."),
    ] = None,
    firewall: Annotated[
        bool,
        typer.Option("--firewall/--no-firewall", help="Keep CAP_NET_ADMIN for the guard's nftables part."),
    ] = True,
) -> None:
    """Print a systemd unit that runs this installation's agent with the given config file
    (the outbox and recordings directories are read from it)."""
    from callbridge.agent.enroll import paths_from_config, systemd_unit

    state_dir, recordings_dir = paths_from_config(config)
    groups = tuple(g for g in (["asterisk"] if group is None else group) if g)
    print(
        systemd_unit(
            _agent_executable(),
            config,
            user=user,
            groups=groups,
            state_dir=state_dir,
            recordings_dir=recordings_dir,
            firewall=firewall,
        ),
        end="",
    )


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (also done on every start)."""

    async def nothing(hub: Hub) -> None:
        return None

    run(nothing)
    console.print(f"Database is up to date: {display_url(settings().effective_database_url)}")


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="Sign-in name.")],
    role: Annotated[str, typer.Option(help="admin, manager or agent.")] = "agent",
    password: Annotated[str | None, typer.Option(help="Omit to generate one (printed once).")] = None,
    display_name: Annotated[str, typer.Option(help="Name shown in the app.")] = "",
) -> None:
    """Add a user."""

    async def work(hub: Hub, repos: Repos) -> None:
        user, generated = await hub.accounts(repos).create_user(
            name, parse_role(role), password, display_name
        )
        console.print(f"User [bold]{user.name}[/bold] added with role {user.role.value}.")
        if generated:
            console.print(f"Password (shown once): [bold]{generated}[/bold]")

    in_unit(work)


async def _team_members(repos: Repos, names: list[str]) -> list[int]:
    ids = []
    for name in names:
        stored = await repos.users.get_by_name(name)
        if stored is None or not stored.user.active:
            raise InvalidInput(f"no active user named {name!r}")
        ids.append(stored.user.id)
    return ids


@team_app.command("add")
def team_add(
    name: Annotated[str, typer.Argument(help="The team's name.")],
    member: Annotated[list[str] | None, typer.Option(help="A member's user name (repeat it).")] = None,
) -> None:
    """Add a team; members take turns with callbacks nobody else is for (docs/follow-up.md)."""

    async def work(hub: Hub, repos: Repos) -> None:
        members = await _team_members(repos, member or [])
        team_id = await repos.teams.create(name.strip())
        await repos.teams.set_members(team_id, members)
        console.print(f"Team [bold]{name.strip()}[/bold] added with {len(members)} members.")

    in_unit(work)


@team_app.command("members")
def team_members(
    name: Annotated[str, typer.Argument(help="The team's name.")],
    member: Annotated[list[str] | None, typer.Option(help="A member's user name (repeat it).")] = None,
) -> None:
    """Set a team's members (replaces them)."""

    async def work(hub: Hub, repos: Repos) -> None:
        team_id = await repos.teams.find(name)
        if team_id is None:
            raise InvalidInput(f"no team named {name!r}")
        await repos.teams.set_members(team_id, await _team_members(repos, member or []))
        console.print(f"Team [bold]{name}[/bold]: {', '.join(member or []) or 'no members'}.")

    in_unit(work)


@team_app.command("list")
def team_list() -> None:
    """List teams and their members."""

    async def work(hub: Hub, repos: Repos) -> None:
        table = Table("team", "members")
        for team in await repos.teams.all():
            table.add_row(team.name, ", ".join(team.members) or "-")
        console.print(table)

    in_unit(work)


@team_app.command("remove")
def team_remove(name: Annotated[str, typer.Argument(help="The team's name.")]) -> None:
    """Remove a team (its tasks stay with their assignees)."""

    async def work(hub: Hub, repos: Repos) -> None:
        team_id = await repos.teams.find(name)
        if team_id is None or not await repos.teams.delete(team_id):
            raise InvalidInput(f"no team named {name!r}")
        console.print(f"Team [bold]{name}[/bold] removed.")

    in_unit(work)


@user_app.command("list")
def user_list() -> None:
    """List users."""

    async def work(hub: Hub, repos: Repos) -> None:
        table = Table("name", "role", "status", "last sign-in")
        for user in await repos.users.all():
            last = user.last_login_at.strftime("%Y-%m-%d %H:%M") if user.last_login_at else "-"
            table.add_row(user.name, user.role.value, "active" if user.active else "disabled", last)
        console.print(table)

    in_unit(work)


@user_app.command("passwd")
def user_passwd(
    name: str,
    password: Annotated[str | None, typer.Option(help="Omit to generate one (printed once).")] = None,
) -> None:
    """Set a user's password; signs them out everywhere."""

    async def work(hub: Hub, repos: Repos) -> None:
        generated = await hub.accounts(repos).set_password(name, password)
        console.print(f"Password of [bold]{name}[/bold] changed.")
        if generated:
            console.print(f"New password (shown once): [bold]{generated}[/bold]")

    in_unit(work)


@user_app.command("role")
def user_role(
    name: Annotated[str, typer.Argument(help="Sign-in name.")],
    role: Annotated[str, typer.Argument(help="admin, manager or agent.")],
) -> None:
    """Give a user another role (also the way back in when no admin can sign in)."""

    async def work(hub: Hub, repos: Repos) -> None:
        user = await hub.accounts(repos).set_role(name, parse_role(role))
        console.print(f"User [bold]{user.name}[/bold] now has role {user.role.value}.")

    in_unit(work)


@user_app.command("disable")
def user_disable(name: str) -> None:
    """Disable a user: they can no longer sign in, and their sessions and tokens stop working."""

    async def work(hub: Hub, repos: Repos) -> None:
        await hub.accounts(repos).set_active(name, False)
        console.print(f"User [bold]{name}[/bold] disabled.")

    in_unit(work)


@user_app.command("enable")
def user_enable(name: str) -> None:
    """Enable a disabled user again."""

    async def work(hub: Hub, repos: Repos) -> None:
        await hub.accounts(repos).set_active(name, True)
        console.print(f"User [bold]{name}[/bold] enabled.")

    in_unit(work)


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="The user the token acts for.")],
    label: Annotated[str, typer.Option(help="What the token is for.")] = "cli",
) -> None:
    """Print a new API token for a user (send it as 'Authorization: Bearer <token>')."""

    async def work(hub: Hub, repos: Repos) -> None:
        accounts = hub.accounts(repos)
        _, secret = await accounts.create_token(await accounts.get_user(name), label)
        print(secret)

    in_unit(work)


def _added(hub: Hub, record: PbxRecord) -> None:
    console.print(
        f"PBX [bold]{record.name}[/bold] ({record.kind.value}) added; its secrets are stored encrypted."
    )
    if record.kind is PbxKind.YEASTAR and record.config.get("events") == "webhook":
        console.print("Paste this webhook URL into the Yeastar portal (Integrations → API → Webhook):")
        print(webhook_url(hub.settings.public_url, record))
    elif record.config.get("agent"):
        console.print("This PBX is served by `callbridge agent` on the Asterisk host.")
    else:
        console.print("A running hub connects to it within seconds; `callbridge pbx list` shows the link.")


@pbx_add_app.command("asterisk")
def pbx_add_asterisk(
    name: Annotated[str, typer.Argument(help="A short name for this PBX, e.g. office.")],
    host: Annotated[str, typer.Option(help="AMI host.")] = "",
    port: Annotated[int, typer.Option(help="AMI port.")] = 5038,
    username: Annotated[str, typer.Option(help="AMI user (manager.conf section).")] = "",
    secret: Annotated[str, typer.Option(help="AMI secret; stored encrypted.")] = "",
    trunk: Annotated[
        list[str] | None, typer.Option(help="Trunk endpoint pattern (repeatable), e.g. 'trunk-*'.")
    ] = None,
    direction_variable: Annotated[
        str, typer.Option(help="Dialplan variable that marks a call inbound/outbound, when set.")
    ] = "CALLBRIDGE_DIRECTION",
    agent: Annotated[bool, typer.Option(help="Served by `callbridge agent` beside Asterisk.")] = False,
    recordings_dir: Annotated[
        str, typer.Option(help="MixMonitor's directory, when the hub runs on the PBX's host.")
    ] = "",
) -> None:
    """Add an Asterisk PBX: the hub connects to its AMI (or an agent forwards its events)."""
    settings_ = AsteriskSettings(
        host=host,
        port=port,
        username=username,
        secret=secret,
        trunks=tuple(trunk or ()),
        direction_variable=direction_variable,
        agent=agent,
        recordings_dir=recordings_dir,
    )

    async def work(hub: Hub, repos: Repos) -> None:
        record = await add_pbx(repos.pbxes, name, PbxKind.ASTERISK, settings_)
        _added(hub, record)
        if agent:
            from callbridge.services.agents import issue_token

            token = await issue_token(repos.agents, record.name)
            _print_agent_token(hub, record.name, token)

    in_unit(work)


def _print_agent_token(hub: Hub, name: str, token: str) -> None:
    console.print(
        f"Agent token for [bold]{name}[/bold] (shown only once; stored hashed; rotate with "
        f"`callbridge pbx agent-token {name}`):"
    )
    print(token)
    hub_url = hub.settings.public_url or "https://<this hub>"
    console.print(
        "On the Asterisk host run:\n  callbridge agent --hub "
        f"{hub_url} --token <token> --ami-username <user> --ami-secret <secret>",
        highlight=False,
    )


@pbx_app.command("agent-token")
def pbx_agent_token(
    name: Annotated[str, typer.Argument(help="The PBX served by an agent.")],
    revoke: Annotated[bool, typer.Option(help="Revoke the token instead of issuing a new one.")] = False,
) -> None:
    """Issue a new agent token for a PBX (the old one stops working), or revoke it."""

    async def work(hub: Hub, repos: Repos) -> None:
        from callbridge.services.agents import issue_token, revoke_token

        record = await repos.pbxes.get(name)
        if not record.config.get("agent"):
            err.print(f"[red]Error:[/red] PBX {name} is not served by an agent (add it with --agent).")
            raise typer.Exit(1)
        if revoke:
            await revoke_token(repos.agents, name)
            console.print(f"The agent token of [bold]{name}[/bold] is revoked; its agent is now refused.")
            return
        _print_agent_token(hub, name, await issue_token(repos.agents, name))

    in_unit(work)


@pbx_app.command("enroll")
def pbx_enroll(
    name: Annotated[str, typer.Argument(help="The PBX served by an agent.")],
    expires_hours: Annotated[int, typer.Option(min=1, max=720, help="How long the code is good for.")] = 24,
) -> None:
    """Print a single-use enrollment code for a PBX's agent (stored hashed; good for 24 hours by
    default). On the Asterisk host, `callbridge agent enroll --hub URL --code CODE` exchanges it
    for the agent's own token; the PBX's previous agent token then stops working."""

    async def work(hub: Hub, repos: Repos) -> None:
        from callbridge.services.agents import issue_enrollment

        record = await repos.pbxes.get(name)
        if not record.config.get("agent"):
            err.print(f"[red]Error:[/red] PBX {name} is not served by an agent (add it with --agent).")
            raise typer.Exit(1)
        code, enrollment = await issue_enrollment(repos.agents, record.name, expires_hours)
        console.print(
            f"Enrollment code for [bold]{record.name}[/bold] (works once, until "
            f"{enrollment.expires_at:%Y-%m-%d %H:%M} UTC; shown only once, stored hashed):"
        )
        print(code)
        hub_url = hub.settings.public_url or "https://<this hub>"
        console.print(
            "On the Asterisk host, as the agent's user:\n"
            f"  callbridge agent enroll --hub {hub_url} --code <code>",
            highlight=False,
        )

    in_unit(work)


@pbx_add_app.command("yeastar")
def pbx_add_yeastar(
    name: Annotated[str, typer.Argument(help="A short name for this PBX, e.g. cloud.")],
    base_url: Annotated[
        str, typer.Option(help="The PBX address, e.g. https://yourpbx.ras.yeastar.com.")
    ] = "",
    client_id: Annotated[str, typer.Option(help="OpenAPI client id.")] = "",
    client_secret: Annotated[str, typer.Option(help="OpenAPI client secret; stored encrypted.")] = "",
    webhook_secret: Annotated[str, typer.Option(help="Webhook signing secret; stored encrypted.")] = "",
    events: Annotated[str, typer.Option(help="webhook (PBX reaches the hub) or websocket.")] = "webhook",
    timezone: Annotated[str, typer.Option(help="The PBX's time zone (IANA name); its CDRs use it.")] = "UTC",
    queue: Annotated[
        list[str] | None,
        typer.Option(help="A queue's number on the PBX, or NUMBER=NAME (repeatable)."),
    ] = None,
) -> None:
    """Add a Yeastar P-Series PBX and print the webhook URL to paste into its portal."""
    settings_ = YeastarSettings(
        base_url=base_url,
        client_id=client_id,
        client_secret=client_secret,
        webhook_secret=webhook_secret,
        events=events,
        timezone=timezone,
        queues=parse_queue_numbers(queue or ()),
    )

    async def work(hub: Hub, repos: Repos) -> None:
        _added(hub, await add_pbx(repos.pbxes, name, PbxKind.YEASTAR, settings_))

    in_unit(work)


@pbx_app.command("edit")
def pbx_edit(
    name: Annotated[str, typer.Argument(help="The PBX to change.")],
    host: Annotated[str | None, typer.Option(help="AMI host.")] = None,
    port: Annotated[int | None, typer.Option(help="AMI port.")] = None,
    username: Annotated[str | None, typer.Option(help="AMI user.")] = None,
    secret: Annotated[str | None, typer.Option(help="New AMI secret; stored encrypted.")] = None,
    trunk: Annotated[
        list[str] | None, typer.Option(help="Trunk endpoint pattern (repeatable); replaces the list.")
    ] = None,
    direction_variable: Annotated[str | None, typer.Option(help="Direction dialplan variable.")] = None,
    agent: Annotated[
        bool | None, typer.Option("--agent/--no-agent", help="Served by `callbridge agent` or not.")
    ] = None,
    recordings_dir: Annotated[
        str | None, typer.Option(help="MixMonitor's directory on the hub's host ('' to unset).")
    ] = None,
    base_url: Annotated[str | None, typer.Option(help="Yeastar: the PBX address.")] = None,
    client_id: Annotated[str | None, typer.Option(help="Yeastar: OpenAPI client id.")] = None,
    client_secret: Annotated[str | None, typer.Option(help="Yeastar: new client secret.")] = None,
    webhook_secret: Annotated[str | None, typer.Option(help="Yeastar: new webhook secret.")] = None,
    events: Annotated[str | None, typer.Option(help="Yeastar: webhook or websocket.")] = None,
    timezone: Annotated[str | None, typer.Option(help="Yeastar: the PBX's time zone.")] = None,
    queue: Annotated[
        list[str] | None,
        typer.Option(help="Yeastar: a queue's number, or NUMBER=NAME (repeatable); replaces the list."),
    ] = None,
    no_queues: Annotated[bool, typer.Option("--no-queues", help="Yeastar: clear the queue numbers.")] = False,
) -> None:
    """Change a PBX's settings (only those given); a running hub restarts its link within seconds."""
    changes = PbxChanges(
        host=host,
        port=port,
        username=username,
        secret=secret,
        trunks=None if trunk is None else tuple(trunk),
        direction_variable=direction_variable,
        agent=agent,
        recordings_dir=recordings_dir,
        base_url=base_url,
        client_id=client_id,
        client_secret=client_secret,
        webhook_secret=webhook_secret,
        events=events,
        timezone=timezone,
        queues={} if no_queues else None if queue is None else parse_queue_numbers(queue),
    )
    if not changes.given():
        err.print("[red]Error:[/red] nothing to change: give at least one option (see --help).")
        raise typer.Exit(2)

    async def work(hub: Hub, repos: Repos) -> None:
        record = await edit_pbx(repos.pbxes, name, changes)
        console.print(
            f"PBX [bold]{record.name}[/bold] saved; a running hub restarts its link within seconds."
        )

    in_unit(work)


def _set_enabled(name: str, enabled: bool) -> None:
    async def work(hub: Hub, repos: Repos) -> None:
        await edit_pbx(repos.pbxes, name, PbxChanges(enabled=enabled))
        if enabled:
            console.print(f"PBX [bold]{name}[/bold] enabled; a running hub connects to it within seconds.")
        else:
            console.print(
                f"PBX [bold]{name}[/bold] disabled: no link, no webhooks, its agent is refused. "
                "Its calls stay in the log."
            )

    in_unit(work)


@pbx_app.command("disable")
def pbx_disable(name: Annotated[str, typer.Argument(help="The PBX to disable.")]) -> None:
    """Stop a PBX's link, webhooks and agent until it is enabled again (nothing is deleted)."""
    _set_enabled(name, False)


@pbx_app.command("enable")
def pbx_enable(name: Annotated[str, typer.Argument(help="The PBX to enable.")]) -> None:
    """Enable a disabled PBX again."""
    _set_enabled(name, True)


@pbx_app.command("remove")
def pbx_remove(
    name: Annotated[str, typer.Argument(help="The PBX to delete.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a PBX: its settings, secrets, extension map, agent token and bans. Its calls stay in
    the call log under its name."""

    async def work(hub: Hub, repos: Repos) -> None:
        await repos.pbxes.get(name)
        calls = await repos.calls.count_for_pbx(name)
        question = (
            f"Delete PBX {name}? Its link stops and its settings, secrets, extension map, agent token "
            f"and bans go; its {calls} call{'' if calls == 1 else 's'} stay in the log under {name}."
        )
        if not yes:
            if not sys.stdin.isatty():
                err.print(f"[red]Error:[/red] {question} Confirm with --yes.")
                raise typer.Exit(2)
            if not typer.confirm(question):
                raise typer.Exit(1)
        await repos.pbxes.remove(name)
        console.print(f"PBX [bold]{name}[/bold] removed; its calls stay in the log.")

    in_unit(work)


@pbx_app.command("list")
def pbx_list() -> None:
    """List phone systems, whether their link is up (as the running hub last saw it) and their last event."""

    async def work(hub: Hub, repos: Repos) -> None:
        table = Table("name", "kind", "link", "detail", "last event", "checked")
        agents = {a.pbx: a for a in await repos.agents.all()}
        for record in await repos.pbxes.all():
            served_by_agent = not hub.runs_embedded_link(record)
            link = (
                "agent"
                if served_by_agent and not record.link_checked_at
                else ("up" if record.link_up else "down")
            )
            detail = record.link_detail or (
                "no hub has run this link yet" if not record.link_checked_at else ""
            )
            agent = agents.get(record.name)
            if served_by_agent and agent is not None:
                link = "agent up" if agent.connected else "agent down"
                detail = (
                    f"agent {agent.version or '?'}"
                    + (" (older than the hub)" if older_than(agent.version, callbridge.__version__) else "")
                    + f", AMI {'up' if agent.ami_up else 'down'}, "
                    f"outbox {agent.outbox_depth} (oldest {agent.outbox_age_seconds:.0f} s)"
                    + (f", {agent.outbox_dropped} DROPPED" if agent.outbox_dropped else "")
                    + ("" if not agent.revoked else ", no token")
                )
            table.add_row(
                record.name,
                record.kind.value,
                link,
                detail,
                _when(record.last_event_at),
                _when(record.link_checked_at),
            )
        console.print(table)

    in_unit(work)


@recordings_app.command("purge")
def recordings_purge(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print what would be purged.")] = False,
) -> None:
    """Delete the stored audio of the recordings the retention rules say to purge (a legal hold
    wins); each becomes `purged` with the rule as its reason. The hub also runs this daily."""

    async def work(hub: Hub) -> None:
        found = await hub.purge_recordings(dry_run=dry_run)
        verb = "would purge" if dry_run else "purged"
        for c in sorted(found, key=lambda c: c.recording_id):
            console.print(
                f"{verb} recording {c.recording_id} (call {c.call_id}, {c.pbx},"
                f" {c.started_at:%Y-%m-%d}): {c.reason}"
                + ("; the PBX's copy: asked of its agent" if c.via_agent else ""),
                highlight=False,
                soft_wrap=True,
            )
        count = len(found)
        total = "would be purged" if dry_run else "purged"
        console.print(f"{count} recording{'' if count == 1 else 's'} {total}.", highlight=False)

    run(work)


@recordings_app.command("transcribe")
def recordings_transcribe(
    call_id: Annotated[int, typer.Argument(help="The call's id (as in the call log).", min=1)],
) -> None:
    """Transcribe a call's stored recording now, on this machine (whatever the transcription
    rules), store the transcript and print its text."""

    async def work(hub: Hub) -> str:
        _status, reason, heard = await hub.transcribe_call(call_id)
        if heard is None:
            return f"failed: {reason}"
        return " ".join(s.text for s in heard.segments)

    out = run(work)
    if out.startswith("failed: "):
        err.print(f"[red]Error:[/red] the transcript of call {call_id} {out}", highlight=False)
        raise typer.Exit(1)
    console.print(out, highlight=False, soft_wrap=True, markup=False)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


# The directory and call log: `contacts`, `extension`, `pbx token`.
cli_directory.register(app, pbx_app, run)
# ERP connectors: `connector add|list|test|sync|remove`.
cli_connectors.register(app, run)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


@wallboard_app.command("link")
def wallboard_link(
    name: Annotated[str, typer.Option("--name", help="Where the screen hangs (shown in the list).")] = "",
) -> None:
    """Make a read-only wallboard link: opened on a TV, it shows the wallboard with nobody
    signed in. The URL is printed once (only its hash is kept)."""
    from callbridge.services.queues import new_wallboard_token, wallboard_url

    async def work(hub: Hub, repos: Repos) -> tuple[int, str]:
        token, digest = new_wallboard_token()
        link_id = await repos.queues.add_wallboard_link(digest, name.strip())
        await repos.commit()
        return link_id, wallboard_url(hub.settings.public_url, token)

    link_id, url = in_unit(work)
    print(url)
    console.print(
        f"Wallboard link {link_id} made. Revoke it with: callbridge wallboard revoke {link_id}",
        highlight=False,
    )


@wallboard_app.command("list")
def wallboard_list() -> None:
    """The wallboard links, revoked ones too (their tokens are never shown again)."""

    async def work(hub: Hub, repos: Repos) -> None:
        table = Table("id", "name", "created", "revoked")
        for link in await repos.queues.wallboard_links():
            revoked = f"{link.revoked_at:%Y-%m-%d %H:%M}" if link.revoked_at else ""
            table.add_row(str(link.id), link.name, f"{link.created_at:%Y-%m-%d %H:%M}", revoked)
        console.print(table)

    in_unit(work)


@wallboard_app.command("revoke")
def wallboard_revoke(
    link_id: Annotated[int, typer.Argument(help="The link's id (see list).", min=1)],
) -> None:
    """Revoke a wallboard link: screens showing it go dark within seconds."""

    async def work(hub: Hub, repos: Repos) -> bool:
        done = await repos.queues.revoke_wallboard_link(link_id)
        await repos.commit()
        return done

    if not in_unit(work):
        err.print(f"[red]Error:[/red] no wallboard link {link_id}, or it is revoked already")
        raise typer.Exit(1)
    console.print(f"Wallboard link {link_id} revoked.", highlight=False)


@analytics_app.command("rebuild")
def analytics_rebuild(
    since: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"],
            help="Rebuild the days from this UTC date on (YYYY-MM-DD); omit for the whole log.",
        ),
    ] = None,
) -> None:
    """Recount the analytics rollups (and callbacks of missed calls) from the call log, one UTC
    day per transaction. Safe while the hub runs: ingest waits for the day being rebuilt."""
    import time
    from datetime import UTC, timedelta

    from callbridge.store.analytics import SqlRollups

    start = since.replace(tzinfo=UTC) if since is not None else None

    async def work(hub: Hub) -> None:
        began = time.monotonic()
        async with hub.db.unit() as repos:
            span = await SqlRollups(repos.session).log_span(start)
        if span is None:
            console.print("Nothing to rebuild: no calls and no rollup rows in that range.", highlight=False)
            return
        day, end = span
        days = counted = rows = 0
        while day < end:
            async with hub.db.unit() as repos:
                calls, written = await SqlRollups(repos.session).rebuild_days(day, day + timedelta(days=1))
            days, counted, rows = days + 1, counted + calls, rows + written
            day += timedelta(days=1)
        stray = 0
        if start is None:
            async with hub.db.unit() as repos:
                stray = await SqlRollups(repos.session).drop_stray_callbacks()
        console.print(
            f"Rebuilt {days} day(s) from {span[0]:%Y-%m-%d} to {end - timedelta(days=1):%Y-%m-%d} (UTC): "
            f"{counted} call(s) counted, {rows} rollup row(s) written"
            + (f", {stray} stray callback(s) dropped" if stray else "")
            + f", in {time.monotonic() - began:.1f} s.",
            highlight=False,
        )

    run(work)
