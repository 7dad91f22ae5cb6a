"""`callbridge connector …`: connect ERPNext or Odoo, test, sync, list, remove."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from callbridge.connectors import add_connector, connector_settings
from callbridge.domain.connectors import ConnectorKind
from callbridge.domain.errors import InvalidInput
from callbridge.hub import Hub

T = TypeVar("T")
Runner = Callable[[Callable[[Hub], Coroutine[Any, Any, T]]], T]

console = Console()
err = Console(stderr=True)

connector_app = typer.Typer(
    help="Connect ERPNext or Odoo: add, list, test, sync, remove.", no_args_is_help=True
)
add_app = typer.Typer(help="Add a connector (erpnext or odoo).", no_args_is_help=True)
connector_app.add_typer(add_app, name="add")


def register(app: typer.Typer, run: Runner[Any]) -> None:
    app.add_typer(connector_app, name="connector")

    def added(
        kind: ConnectorKind, name: str, url: str, config: dict[str, Any], secrets: dict[str, str]
    ) -> None:
        async def work(hub: Hub) -> str:
            async with hub.db.unit() as repos:
                record = await add_connector(repos.connectors, kind, name, url, config, secrets)
            return record.name

        added_name = run(work)
        console.print(
            f"Connector [bold]{added_name}[/bold] ({kind.label}) added; its credentials are stored "
            f"encrypted.\nCheck it with `callbridge connector test {added_name}`, then "
            f"`callbridge connector sync {added_name}`."
        )

    @add_app.command("erpnext")
    def add_erpnext(
        name: Annotated[str, typer.Argument(help="A short name for this site, e.g. erp.")],
        url: Annotated[str, typer.Option(help="The site's address, e.g. https://erp.example.com.")],
        api_key: Annotated[str, typer.Option(help="The integration user's API key.")],
        api_secret: Annotated[str, typer.Option(help="Its API secret; stored encrypted.")],
        time_zone: Annotated[
            str, typer.Option(help="The site's time zone (System Settings); default UTC.")
        ] = "",
        sync_seconds: Annotated[float | None, typer.Option(help="Seconds between incremental syncs.")] = None,
    ) -> None:
        """Add an ERPNext/Frappe site (token auth: API key and secret of an integration user)."""
        config, secrets = _checked(
            ConnectorKind.ERPNEXT,
            api_key=api_key,
            api_secret=api_secret,
            time_zone=time_zone,
            sync_seconds=sync_seconds,
        )
        added(ConnectorKind.ERPNEXT, name, url, config, secrets)

    @add_app.command("odoo")
    def add_odoo(
        name: Annotated[str, typer.Argument(help="A short name for this database, e.g. odoo.")],
        url: Annotated[str, typer.Option(help="The server's address, e.g. https://odoo.example.com.")],
        database: Annotated[str, typer.Option(help="The database name.")],
        username: Annotated[str, typer.Option(help="The login of the API key's user.")],
        api_key: Annotated[str, typer.Option(help="The user's API key (Preferences → Account Security).")],
        api: Annotated[
            str, typer.Option(help="jsonrpc (16-18) or json2 (19+); default: ask the server.")
        ] = "",
        sync_seconds: Annotated[float | None, typer.Option(help="Seconds between incremental syncs.")] = None,
    ) -> None:
        """Add an Odoo database (16, 17, 18 over JSON-RPC; 19 over JSON-2)."""
        config, secrets = _checked(
            ConnectorKind.ODOO,
            api_key=api_key,
            database=database,
            username=username,
            api=api,
            sync_seconds=sync_seconds,
        )
        added(ConnectorKind.ODOO, name, url, config, secrets)

    @connector_app.command("list")
    def connector_list() -> None:
        """List connectors with their state, contacts synced, calls written and waiting, last error."""

        async def work(hub: Hub) -> None:
            async with hub.db.unit() as repos:
                statuses = await repos.connectors.statuses()
            table = Table(
                "name",
                "kind",
                "url",
                "state",
                "last sync",
                "contacts",
                "calls pushed",
                "waiting",
                "last error",
            )
            for s in statuses:
                r = s.record
                table.add_row(
                    r.name,
                    r.kind.value,
                    r.url,
                    r.state.value,
                    r.last_sync_at.strftime("%Y-%m-%d %H:%M:%S") if r.last_sync_at else "-",
                    str(s.contacts),
                    str(s.calls_pushed),
                    str(s.calls_waiting),
                    r.last_error or "-",
                )
            console.print(table)

        run(work)

    @connector_app.command("test")
    def connector_test(name: Annotated[str, typer.Argument(help="The connector to test.")]) -> None:
        """Try the connection: reach the ERP, sign in, read each record type; says what is wrong."""

        async def work(hub: Hub) -> bool:
            assert hub.connectors is not None
            checks = await hub.connectors.test(name)
            for check in checks:
                mark = "[green]ok[/green]" if check.ok else "[red]FAILED[/red]"
                console.print(
                    f"{mark} {check.what}" + (f": {check.detail}" if check.detail else ""), highlight=False
                )
            return all(c.ok for c in checks)

        if not run(work):
            raise typer.Exit(1)

    @connector_app.command("sync")
    def connector_sync(
        name: Annotated[str, typer.Argument(help="The connector to sync.")],
        full: Annotated[
            bool, typer.Option("--full", help="Read every record again (finds deletions).")
        ] = False,
    ) -> None:
        """Sync the directory from the ERP now (a full sync the first time), with progress."""

        async def work(hub: Hub) -> str:
            assert hub.connectors is not None
            with Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=False,
            ) as bar:
                tasks: dict[str, Any] = {}

                def progress(stream: str, done: int, total: int) -> None:
                    if stream not in tasks:
                        tasks[stream] = bar.add_task(stream, total=total or None)
                    bar.update(tasks[stream], completed=done, total=max(total, done) or None)

                report = await hub.connectors.sync(name, full=full, progress=progress)
            return report.summary()

        console.print(run(work), highlight=False)

    @connector_app.command("remove")
    def connector_remove(name: Annotated[str, typer.Argument(help="The connector to remove.")]) -> None:
        """Remove a connector, the contacts it synced and its waiting calls (calls stay in the log)."""

        async def work(hub: Hub) -> None:
            async with hub.db.unit() as repos:
                await repos.connectors.remove(name)

        run(work)
        console.print(f"Connector [bold]{name}[/bold] removed.")


def _checked(kind: ConnectorKind, **values: Any) -> tuple[dict[str, Any], dict[str, str]]:
    try:
        return connector_settings(kind, **values)
    except InvalidInput as exc:
        err.print(f"[red]Error:[/red] {exc}")
        raise typer.Exit(2) from exc
