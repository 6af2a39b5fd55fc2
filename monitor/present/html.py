"""The building blocks of the monitor's pages: the page shell, tables, phases, times, links.

Safe by default, the way template engines are: a plain `str` is escaped wherever it is put into a
page, and only `Html` (markup these modules built) goes in as it is. Model outputs, item ids,
reasons and every other text from a model, a suite or the policy are plain strings, so they
reach the browser as text, never as markup. The pages carry no script at all, and the server
sends a Content-Security-Policy that would refuse one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from html import escape
from urllib.parse import quote

from monitor.vocabulary import Phase

# Colour and word together: a phase is never told by colour alone.
PHASE_CLASS = {Phase.PASS: "pass", Phase.MARGINAL: "marginal", Phase.FAIL: "fail",
               Phase.INCONCLUSIVE: "inconclusive", Phase.ERROR: "error"}

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1f24;
 background:#f6f7f9}
header{background:#1b1f24;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:baseline}
header a{color:#fff;text-decoration:none;font-weight:600}header .muted{color:#b8c0cc}
main{padding:16px 24px 40px;max-width:1400px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:17px;margin:26px 0 8px}h3{font-size:15px;margin:14px 0 6px}
a{color:#0b5cad}
table{border-collapse:collapse;background:#fff;margin:6px 0 10px}
th,td{border:1px solid #d5dae1;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#eef1f4;font-weight:600;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.muted{color:#5c6773}.small{font-size:12px}.nowrap{white-space:nowrap}
.phase{display:inline-block;padding:1px 7px;border-radius:3px;font-weight:700;font-size:12px;
 letter-spacing:.03em;border:1px solid transparent}
.phase.pass{background:#dcf3e3;color:#0f5b2a;border-color:#8fcfa4}
.phase.marginal{background:#fff1cc;color:#6b4a00;border-color:#e7c25a}
.phase.fail{background:#fbd9d7;color:#8a1410;border-color:#e48b86}
.phase.inconclusive{background:#e9ecef;color:#3d4650;border-color:#bcc4cc}
.phase.error{background:#e8defa;color:#4b1f8f;border-color:#b79be6}
td.cell-fail{background:#fff4f3}td.cell-marginal{background:#fffaeb}td.cell-error{background:#f8f4ff}
.facts{display:grid;grid-template-columns:max-content auto;gap:3px 16px;margin:8px 0}
.facts dt{color:#5c6773}.facts dd{margin:0}
pre,code{font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre.command{background:#1b1f24;color:#f2f4f7;padding:8px 12px;border-radius:4px;display:inline-block;
 margin:4px 0}
td.answer{max-width:420px;white-space:pre-wrap;word-break:break-word;
 font:12.5px/1.4 ui-monospace,Menlo,monospace}
.charts{display:flex;flex-wrap:wrap;gap:10px}
.charts figure{margin:0;background:#fff;border:1px solid #d5dae1;padding:6px}
.charts figcaption{font-size:12px;font-weight:600;margin-bottom:2px}
svg.chart text{font:10.5px system-ui,sans-serif;fill:#3d4650}
svg .axis{stroke:#8a949e}svg .grid{stroke:#e3e7eb}svg .muted{fill:#5c6773}
svg .tolerance{stroke:#c62828;stroke-width:2;stroke-dasharray:4 3}svg .tolerance-text{fill:#c62828}
svg .bounds{stroke:#1b1f24;stroke-width:6;stroke-linecap:round;opacity:.35}svg .estimate{fill:#1b1f24}
.note{background:#fff;border-left:4px solid #0b5cad;padding:8px 12px;margin:10px 0}
.note.bad{border-left-color:#c62828}
.banner{background:#c62828;color:#fff;padding:12px 16px;margin:12px 0 4px;font-size:16px;border-radius:4px}
.fallback{border-top:1px dashed #bcc4cc;margin-top:8px;padding-top:4px}
pre.message{white-space:pre-wrap;word-break:break-word;margin:0;background:#f8f4ff;padding:4px 8px}
"""


class Html(str):
    """Markup these modules built: put into a page as it is. Any other `str` is escaped."""


def e(value: object) -> Html:
    """`value` as page text: escaped unless it is already `Html`."""
    return value if isinstance(value, Html) else Html(escape(str(value), quote=True))


def join(parts: Iterable[object], separator: str = "") -> Html:
    return Html(e(separator).join(e(part) for part in parts))


def page(title: str, body: Html, now: datetime) -> Html:
    """A whole document: the shell around one page's body."""
    return Html(f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f"<title>{e(title)} · forgetmenot</title><style>{CSS}</style></head><body>"
                f'<header><a href="/">forgetmenot</a><span class="muted">read-only · rendered '
                f"{e(stamp(now))}</span></header><main>{body}</main></body></html>")


def error_page(status: int, message: str, now: datetime) -> Html:
    body = Html(f"<h1>{status}</h1><p>{e(message)}</p><p><a href=\"/\">the fleet board</a></p>")
    return page(f"{status}", body, now)


def table(headers: Sequence[object], rows: Iterable[Sequence[object]], *, css: str = "") -> Html:
    """Cells are escaped unless `Html`; a cell given as (content, class) gets that class."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return Html(f'<table class="{e(css)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')


def _cell(cell: object) -> str:
    if isinstance(cell, tuple):
        content, css = cell
        return f'<td class="{e(css)}">{e(content)}</td>'
    return f"<td>{e(cell)}</td>"


def phase_badge(phase: str) -> Html:
    """The phase as a word on its colour."""
    return Html(f'<span class="phase {_phase_class(phase)}">{e(phase)}</span>')


def phase_cell_class(phase: str) -> str:
    return f"cell-{_phase_class(phase)}"


def _phase_class(phase: str) -> str:
    return PHASE_CLASS[Phase(phase)] if phase in set(Phase) else "inconclusive"


def link(href: str, text: object) -> Html:
    return Html(f'<a href="{e(href)}">{e(text)}</a>')


def model_href(model: str) -> str:
    return "/models/" + quote(model, safe="")


def verdict_href(verdict_id: int | None) -> str:
    return f"/verdicts/{int(verdict_id or 0)}"


def words(value: str | None) -> str:
    """A vocabulary value as words: `alignment_loss` -> `alignment loss`."""
    return (value or "").replace("_", " ")


def aware(moment: datetime) -> datetime:
    """SQLite hands datetimes back without a zone; they were written in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return aware(moment).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def ago(moment: datetime, now: datetime) -> str:
    seconds = max(0.0, (aware(now) - aware(moment)).total_seconds())
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return "just now"


def _time(moment: datetime, shown: str) -> str:
    """A <time> element: machine-readable, the absolute time (UTC) on hover, `shown` as its text."""
    iso = aware(moment).astimezone(UTC).isoformat(timespec="seconds")
    return f'<time datetime="{e(iso)}" title="{e(stamp(moment))}" class="nowrap">{e(shown)}</time>'


def when(moment: datetime | None, now: datetime) -> Html:
    """An absolute time (UTC) with how long ago it was."""
    if moment is None:
        return Html('<span class="muted">—</span>')
    return Html(f'{_time(moment, stamp(moment))} '
                f'<span class="muted small nowrap">{e(ago(moment, now))}</span>')


def since(moment: datetime | None, now: datetime) -> Html:
    """How long ago, compactly; the absolute time (UTC) shows on hover."""
    if moment is None:
        return Html('<span class="muted">—</span>')
    return Html(_time(moment, ago(moment, now)))


def number(value: float | None, fmt: str = "{:.3f}") -> Html:
    return Html('<span class="muted">—</span>') if value is None else e(fmt.format(value))


def facts(pairs: Iterable[tuple[str, object]]) -> Html:
    """A definition list: label, then value (escaped unless `Html`)."""
    return Html('<dl class="facts">' + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in pairs) + "</dl>")
