"""CLI commands of the directory and call log: ``contacts``, ``extension``, ``pbx token``.

Registered on the main ``callbridge`` command by :func:`register` (see ``cli.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from callbridge.domain.errors import InvalidInput, NotFound
from callbridge.domain.numbers import is_known_region
from callbridge.hub import Hub
from callbridge.services.contacts_import import read_contacts_file
from callbridge.services.directory import ImportReport, apply_import, relink_numbers
from callbridge.store.directory import SqlImportTarget, renormalize_numbers

T = TypeVar("T")
Runner = Callable[[Callable[[Hub], Coroutine[Any, Any, T]]], T]

IMPORT_BATCH = 1000
MAX_ERRORS_SHOWN = 50

console = Console()
err = Console(stderr=True)

contacts_app = typer.Typer(
    help="The directory: import contacts from CSV, re-normalize numbers.", no_args_is_help=True
)
extension_app = typer.Typer(help="Map PBX extensions to users: map, unmap, list.", no_args_is_help=True)


def register(app: typer.Typer, pbx_app: typer.Typer, run: Runner[Any]) -> None:
    """Add the commands to ``callbridge``; ``run`` builds the hub and turns errors into messages."""
    app.add_typer(contacts_app, name="contacts")
    app.add_typer(extension_app, name="extension")
    _commands(pbx_app, run)


def _region(value: str | None, hub: Hub) -> str:
    region = (value or hub.settings.default_region).upper()
    if not is_known_region(region):
        raise InvalidInput(f"unknown region {region!r}; use an ISO 3166 code like US or DE")
    return region


def _mapping(items: list[str]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for item in items:
        field, sep, header = item.partition("=")
        if not sep or not field.strip() or not header.strip():
            raise InvalidInput(f"--map {item!r}: use FIELD=Header, e.g. --map phone='Tel (work)'")
        mapping[field.strip()] = header.strip()
    return mapping


def _commands(pbx_app: typer.Typer, run: Runner[Any]) -> None:
    @contacts_app.command("import")
    def contacts_import(
        file: Annotated[
            Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="The CSV file.")
        ],
        map_: Annotated[
            list[str] | None,
            typer.Option(
                "--map", help="FIELD=Header for a column the import does not recognize (repeatable)."
            ),
        ] = None,
        region: Annotated[
            str | None, typer.Option(help="Region for national numbers (default: CALLBRIDGE_DEFAULT_REGION).")
        ] = None,
        encoding: Annotated[
            str | None,
            typer.Option(
                help="The file's encoding (utf-8, utf-16, cp1252, shift_jis, …); default: detected."
            ),
        ] = None,
    ) -> None:
        """Import contacts from a CSV file. Bad rows are reported by line and skipped; the rest is
        imported. Safe to re-run: rows match existing contacts on their external id, else on a number,
        else on name, company and e-mail."""

        async def work(hub: Hub) -> ImportReport:
            parsed = read_contacts_file(
                file.read_bytes(), _region(region, hub), _mapping(map_ or []), encoding
            )
            report = ImportReport(
                errors=list(parsed.errors), encoding=parsed.encoding, warnings=parsed.warnings
            )
            total = len(parsed.rows) + len(parsed.errors)
            with Progress(
                TextColumn("[bold]Importing[/bold]"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            ) as progress:
                task = progress.add_task("import", total=total)
                progress.advance(task, len(parsed.errors))
                for start in range(0, len(parsed.rows), IMPORT_BATCH):
                    batch = parsed.rows[start : start + IMPORT_BATCH]
                    # One transaction per batch: a huge file does not hold one lock for minutes.
                    async with hub.db.unit() as repos:
                        await apply_import(
                            SqlImportTarget(repos.directory),
                            batch,
                            report,
                            lambda n: progress.advance(task, n),
                        )
            async with hub.db.unit() as repos:
                # Calls logged before their contact existed now show who called.
                await relink_numbers(repos.directory, repos.calls, hub.settings.default_region, report.keys)
            return report

        report: ImportReport = run(work)
        for warning in report.warnings:
            err.print(f"warning: {warning}", markup=False, highlight=False, style="yellow")
        console.print(
            f"{report.summary()} (read as {report.encoding})",
            markup=False,
            highlight=False,
            style="red" if report.errors else "green",
        )
        errors = sorted(report.errors, key=lambda e: e.line)
        for error in errors[:MAX_ERRORS_SHOWN]:
            console.print(f"  line {error.line}: {error.reason}", markup=False, highlight=False)
        if len(errors) > MAX_ERRORS_SHOWN:
            console.print(f"  … and {len(errors) - MAX_ERRORS_SHOWN} more")

    @contacts_app.command("normalize")
    def contacts_normalize(
        region: Annotated[
            str | None, typer.Option(help="Region for national numbers (default: CALLBRIDGE_DEFAULT_REGION).")
        ] = None,
    ) -> None:
        """Re-normalize every stored number (run after changing the default region)."""

        async def work(hub: Hub) -> tuple[int, int, int]:
            chosen = _region(region, hub)
            async with hub.db.unit() as repos:
                return await renormalize_numbers(repos.session, chosen)

        checked, changed, unreadable = run(work)
        console.print(
            f"{checked} numbers checked, {changed} changed, {unreadable} unreadable (kept as they were)"
        )

    @extension_app.command("map")
    def extension_map(
        pbx: Annotated[str, typer.Argument(help="The PBX name (see `callbridge pbx list`).")],
        extension: Annotated[str, typer.Argument(help="The extension, e.g. 1001.")],
        user: Annotated[str, typer.Argument(help="The user name.")],
    ) -> None:
        """Map a PBX extension to a user: calls answered there are theirs, screen pops go to them."""

        async def work(hub: Hub) -> None:
            async with hub.db.unit() as repos:
                await repos.pbxes.get(pbx)
                stored = await repos.users.get_by_name(user)
                if stored is None:
                    raise NotFound(f"no user named {user!r}")
                ext = extension.strip()
                if not ext or len(ext) > 32 or not all(ch.isalnum() or ch in "*#_-" for ch in ext):
                    raise InvalidInput("an extension is 1 to 32 digits or letters")
                await repos.extensions.map(pbx, ext, stored.user.id)

        run(work)
        console.print(f"Extension {extension} on {pbx} now belongs to {user}.")

    @extension_app.command("unmap")
    def extension_unmap(pbx: str, extension: str) -> None:
        """Remove an extension's mapping."""

        async def work(hub: Hub) -> bool:
            async with hub.db.unit() as repos:
                return await repos.extensions.unmap(pbx, extension)

        if not run(work):
            err.print(f"[red]Error:[/red] extension {extension} on {pbx} is not mapped")
            raise typer.Exit(1)
        console.print(f"Extension {extension} on {pbx} unmapped.")

    @extension_app.command("list")
    def extension_list() -> None:
        """Every mapped extension."""

        async def work(hub: Hub) -> list[tuple[str, str, str]]:
            async with hub.db.unit() as repos:
                return [(m.pbx, m.extension, m.user_name) for m in await repos.extensions.all()]

        table = Table("PBX", "Extension", "User")
        for row in run(work):
            table.add_row(*row)
        console.print(table)

    @pbx_app.command("token")
    def pbx_token(
        pbx: Annotated[str, typer.Argument(help="The PBX name.")],
        rotate: Annotated[
            bool, typer.Option("--rotate", help="Replace the token (the old one stops working).")
        ] = False,
    ) -> None:
        """Print the PBX's dialplan token (created on first use), for /dialplan/… lookups."""

        async def work(hub: Hub) -> str:
            async with hub.db.unit() as repos:
                return await repos.dialplan_tokens.token_for(pbx, rotate=rotate)

        console.print(run(work), markup=False, highlight=False, soft_wrap=True)
