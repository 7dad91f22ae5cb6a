"""Analytics: call figures per period and group (JSON, CSV, XLSX) and the /analytics page.

Managers and admins see every call's figures; an agent sees their own (see services/analytics).
"""

from __future__ import annotations

import io
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from callbridge.domain.analytics import Group
from callbridge.domain.errors import InvalidInput
from callbridge.domain.times import time_zones
from callbridge.domain.users import User
from callbridge.services.analytics import Report, parse_query, report, table
from callbridge.services.csv_export import csv_chunks, spreadsheet_safe
from callbridge.store.analytics import SqlRollups
from callbridge.store.repos import Repos
from callbridge.web.deps import CurrentUser, HubDep, RepoDep
from callbridge.web.pages import render, viewer_zone

router = APIRouter(tags=["analytics"])

Text = Annotated[str, Query(max_length=64)]
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


async def _report(
    request: Request, user: User, repos: Repos, start: str, end: str, tz: str, group: str, direction: str
) -> Report:
    query = parse_query(start, end, tz, group, direction, default_zone=viewer_zone(request, user))
    return await report(SqlRollups(repos.session), query, user)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return spreadsheet_safe(str(value))


def _xlsx(rep: Report) -> bytes:
    from openpyxl import Workbook  # only an export needs it

    header, rows = table(rep)
    book = Workbook()
    sheet = book.active
    sheet.title = "calls"
    for r, values in enumerate([header, *rows], start=1):
        for c, value in enumerate(values, start=1):
            cell = sheet.cell(row=r, column=c)
            cell.value = value
            if isinstance(value, str):
                cell.data_type = "s"  # text stays text: a name starting with "=" is no formula
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


@router.get(
    "/api/v1/analytics/calls",
    responses={
        200: {
            "description": "Figures per group and in total; with format=csv or xlsx, a file",
            "content": {"text/csv": {"schema": {"type": "string"}}, XLSX: {"schema": {"type": "string"}}},
        }
    },
)
async def call_figures(
    request: Request,
    user: CurrentUser,
    repos: RepoDep,
    start: Annotated[str, Query(alias="from", max_length=40)] = "",
    to: Annotated[str, Query(max_length=40)] = "",
    tz: Text = "",
    group: Annotated[str, Query(max_length=20)] = "day",
    direction: Annotated[str, Query(max_length=20)] = "",
    format: Annotated[str, Query(max_length=8)] = "json",
) -> Response:
    """Calls offered, answered, missed and abandoned, answer rate, average and 90th-percentile
    ring time, average talk time and callbacks of missed calls, per hour, day, week,
    weekday × hour, user, queue, direction, PBX, tag or call type (definitions: docs/analytics.md)."""
    kind = format.strip().lower()
    if kind not in ("json", "csv", "xlsx"):
        raise InvalidInput(f"unknown format {kind[:10]!r}; use json, csv or xlsx")
    rep = await _report(request, user, repos, start, to, tz, group, direction)
    stamp = f"{rep.query.period.group.value}-{rep.query.period.start_at:%Y%m%d}"
    if kind == "csv":
        header, rows = table(rep)
        return StreamingResponse(
            csv_chunks(header, [[_cell(v) for v in row] for row in rows]),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="calls-{stamp}.csv"'},
        )
    if kind == "xlsx":
        return Response(
            _xlsx(rep),
            media_type=XLSX,
            headers={"content-disposition": f'attachment; filename="calls-{stamp}.xlsx"'},
        )
    return JSONResponse(rep.as_dict())


@router.get("/analytics", include_in_schema=False)
async def analytics_page(
    request: Request,
    user: CurrentUser,
    repos: RepoDep,
    hub: HubDep,
    start: Annotated[str, Query(alias="from", max_length=40)] = "",
    to: Annotated[str, Query(max_length=40)] = "",
    tz: Text = "",
    group: Annotated[str, Query(max_length=20)] = "day",
    direction: Annotated[str, Query(max_length=20)] = "",
) -> Response:
    error = ""
    rep: Report | None = None
    try:
        rep = await _report(request, user, repos, start, to, tz, group, direction)
    except InvalidInput as exc:
        error = exc.message
    params = {"from": start, "to": to, "tz": tz, "group": group, "direction": direction}
    if rep is not None:
        p = rep.query.period
        zone_name = p.zone_name
        params = {
            "from": p.start_at.astimezone(p.zone).strftime("%Y-%m-%dT%H:%M"),
            "to": p.end_at.astimezone(p.zone).strftime("%Y-%m-%dT%H:%M"),
            "tz": zone_name,
            "group": p.group.value,
            "direction": rep.query.direction or "all",
        }
    query = urlencode(params)
    return render(
        request,
        "analytics.html",
        status_code=400 if error else 200,
        error=error,
        report=rep.as_dict() if rep is not None else None,
        params=params,
        groups=[g.value for g in Group],
        zones=time_zones(),
        csv_url=f"/api/v1/analytics/calls?{query}&format=csv",
        xlsx_url=f"/api/v1/analytics/calls?{query}&format=xlsx",
        own_only=not user.sees_all_calls,
    )
