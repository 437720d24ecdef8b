"""Dead letters in the dashboard: the filtered list with payload and answer, and the actions
(replay one, a selection or all of a destination; resume a paused destination). The actions
call the same store and worker operations as POST /v1/admin/replay and /v1/admin/resume."""

from __future__ import annotations

import json
from html import escape
from typing import Final
from urllib.parse import urlencode

from multidict import MultiDictProxy

from gateway.core.quality import redact_sample
from gateway.store.base import NOT_REPLAYABLE, DeadReason, ReplaySelection
from gateway.web.admin_dead import (
    MAX_REPLAY,
    ResumeNotRecordedError,
    letter_json,
    parse_query,
    resume_route,
)
from gateway.web.dashboard.handlers import View, safe_next
from gateway.web.dashboard.layout import hidden_csrf, table, when
from gateway.web.dashboard.pages import resume_form

PAGE_SIZE: Final = 50
MAX_ALL_PAGES: Final = 200
"""Pages of `MAX_REPLAY` one "replay all" runs at most (a larger outbox is replayed again)."""
_REASONS: Final = tuple(r.value for r in DeadReason)


def _options(values: list[str], chosen: str | None, empty: str) -> str:
    out = [f'<option value="">{escape(empty)}</option>']
    out += [
        f'<option value="{escape(v)}"{" selected" if v == chosen else ""}>{escape(v)}</option>'
        for v in values
    ]
    return "".join(out)


async def dead_letters(view: View) -> tuple[str, str]:
    """The filterable list (route, reason, since; paged by id)."""
    live = view.live
    routes = sorted(live.routes())
    params = {k: v for k, v in view.query.items() if k in {"route", "reason", "since", "after"}}
    query, errors = parse_query({**params, "limit": str(PAGE_SIZE)})
    parts: list[str] = []
    flash = view.query.get("done")
    if flash:
        parts.append(f'<p class="flash">{escape(flash[:200])}</p>')
    route = view.query.get("route") or None
    reason = view.query.get("reason") or None
    parts.append(
        '<form method="get" action="dead" class="filters">'
        f'<label>Destination<select name="route">{_options(routes, route, "all")}</select></label>'
        f'<label>Reason<select name="reason">{_options(list(_REASONS), reason, "any")}'
        "</select></label>"
        f'<label>Dead since<input name="since" value="{escape(view.query.get("since", ""))}"'
        ' placeholder="2026-01-31T00:00"></label>'
        '<button type="submit">Filter</button></form>'
    )
    if query is None:
        problems = "; ".join(f"{e['path']}: {e['reason']}" for e in errors)
        parts.append(f'<p class="bad">Invalid filter: {escape(problems)}</p>')
        return "Dead letters", "".join(parts)
    if route is not None and route in routes:
        health = live.routes()[route].health
        if health.get("paused"):
            parts.append(
                f'<p class="bad">{escape(route)} is paused: '
                f"{escape(redact_sample(str(health.get('paused_reason'))))}</p>"
                + resume_form(route, view.csrf, "dead?" + urlencode({"route": route}))
            )
        parts.append(
            '<form method="post" action="replay" class="inline">'
            f'{hidden_csrf(view.csrf)}<input type="hidden" name="route" value="{escape(route)}">'
            f'<input type="hidden" name="reason" value="{escape(reason or "")}">'
            '<input type="hidden" name="all" value="1">'
            f'<button type="submit" class="secondary">Replay all {escape(reason or "")} dead'
            f" letters of {escape(route)}</button></form>"
        )
    page = await live.store.dead_page(query)
    rows = []
    for letter in page.letters:
        doc = letter_json(letter)
        ref = f"{doc['id']}@{doc['route']}"
        pick = (
            f'<input type="checkbox" name="pick" value="{escape(ref)}" form="replay"'
            f' aria-label="select {doc["id"]}">'
            if doc["replayable"]
            else ""
        )
        one = (
            f'<button type="submit" form="replay" name="one" value="{escape(ref)}">Replay</button>'
            if doc["replayable"]
            else '<span class="muted">not replayable</span>'
        )
        answer = doc["answer"]
        status = "unsent" if answer is None or answer.get("status") is None else answer["status"]
        evidence = (
            "<details><summary>payload and answer</summary>"
            f"<p>Platform answer ({escape(str(status))}):</p>"
            f"<pre>{escape(str(answer.get('error', '')) if answer else '-')}</pre>"
            "<p>Payload sent:</p>"
            f"<pre>{escape(_pretty(doc['payload']))}</pre></details>"
        )
        rows.append(
            (
                pick,
                str(doc["id"]),
                escape(doc["route"]),
                escape(doc["event"]),
                f"<code>{escape(doc['event_id'])}</code>",
                f"<strong>{escape(doc['reason'])}</strong> {escape(doc['detail'])}",
                escape(when(doc["dead_at"])),
                evidence,
                one,
            )
        )
    parts.append(
        f'<form method="post" action="replay" id="replay">{hidden_csrf(view.csrf)}'
        '<button type="submit" name="selected" value="1">Replay selected</button></form>'
    )
    parts.append(
        table(
            ("", "Id", "Destination", "Event", "Event id", "Reason", "Dead at", "Evidence", ""),
            rows,
            (1,),
        )
    )
    if page.next_after is not None:
        nxt = {**params, "after": str(page.next_after)}
        parts.append(f'<p><a href="dead?{escape(urlencode(nxt))}">Next page</a></p>')
    return "Dead letters", "".join(parts)


def _pretty(payload: object) -> str:
    if payload is None:
        return "-"
    if isinstance(payload, str):
        return payload
    return json.dumps(payload, indent=2, ensure_ascii=False)


def _ref(raw: str) -> tuple[str, int] | None:
    """Parse a "<id>@<route>" selection."""
    ident, _, route = raw.partition("@")
    if not ident.isascii() or not ident.isdigit() or not route or len(ident) > 18:
        return None
    return route, int(ident)


async def replay(view: View, form: MultiDictProxy[str]) -> str:
    """Replay one, the selected, or all (of a route and reason) dead letters."""
    live = view.live
    routes = set(live.routes())
    now = view.now
    if form.get("all"):
        route = form.get("route", "")
        reason = form.get("reason") or None
        if route not in routes or (reason is not None and reason not in _REASONS):
            return _back("unknown destination or reason", route)
        if reason in NOT_REPLAYABLE:
            return _back(f"{reason} dead letters are never replayed", route)
        replayed, after = 0, 0
        for _ in range(MAX_ALL_PAGES):
            result = await live.store.replay(
                ReplaySelection(route=route, reason=reason, after=after, limit=MAX_REPLAY), now
            )
            replayed += result.replayed
            if result.last_id is None or result.remaining == 0:
                break
            after = result.last_id
        return _back(f"replayed {replayed} dead letters of {route}", route)
    picked = [form["one"]] if form.get("one") else form.getall("pick", [])
    by_route: dict[str, list[int]] = {}
    bad = 0
    for raw in picked[:MAX_REPLAY]:
        ref = _ref(raw)
        if ref is None or ref[0] not in routes:
            bad += 1
            continue
        by_route.setdefault(ref[0], []).append(ref[1])
    replayed = skipped = 0
    for route, ids in sorted(by_route.items()):
        result = await live.store.replay(
            ReplaySelection(route=route, ids=tuple(ids), limit=len(ids)), now
        )
        replayed += result.replayed
        skipped += result.skipped
    only = next(iter(by_route)) if len(by_route) == 1 else None
    return _back(f"replayed {replayed}, skipped {skipped + bad}", only)


async def resume(view: View, form: MultiDictProxy[str]) -> str:
    """Lift a destination's pause and make the rows it held back due now."""
    route = form.get("route", "")
    worker = view.live.workers.get(route)
    back = safe_next(form.get("back"))
    if worker is None:
        return _with(back, "unknown destination")
    try:
        done = await resume_route(view.live.store, worker, route, view.now)
    except ResumeNotRecordedError:
        return _with(back, f"{route} not resumed: the store could not record it; try again")
    said = "resumed" if done.reason is not None else "was not paused"
    return _with(back, f"{route} {said}; {done.released} waiting rows released")


def _back(message: str, route: str | None) -> str:
    query = {"route": route} if route else {}
    return "dead?" + urlencode({**query, "done": message})


def _with(path: str, message: str) -> str:
    return path + ("&" if "?" in path else "?") + urlencode({"done": message})
