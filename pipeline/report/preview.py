"""preview.html: one static page, no server and no external assets, with a grid per set."""

from __future__ import annotations

import base64
import html
import json

from pipeline.report.contents import OutputContents
from schemas.records import STATUS_ACCEPTED, VERDICT_REJECT
from schemas.sample import THUMB_SOURCE_ID

SCORE_LABELS = (("text_image", "ti"), ("directional", "dir"), ("image_image", "ii"), ("attribute_margin", "attr"))

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;background:#fafafa}
h1{margin:0 0 .3rem} .summary{color:#555;margin:0 0 1rem}
.filters{position:sticky;top:0;background:#fafafa;padding:.5rem 0;border-bottom:1px solid #ddd;z-index:1}
.filters label{margin-right:1.2rem} .count{color:#555}
.set{background:#fff;border:1px solid #ddd;border-radius:6px;margin:1rem 0;padding:.6rem .9rem}
.set h2{font-size:1rem;margin:.2rem 0;font-family:monospace}
.caption{color:#444;font-size:.85rem;margin:.2rem 0 .5rem}
.grid{display:flex;flex-wrap:wrap;gap:.5rem}
figure{margin:0;width:120px;font-size:.7rem;line-height:1.25}
figure img,.missing{width:112px;height:112px;object-fit:cover;border:3px solid #bbb;border-radius:4px;display:block}
figure.accepted img{border-color:#2a9d4b} figure.rejected{opacity:.45} figure.error{opacity:.45}
figure.src img{border-color:#333}
.missing{display:flex;align-items:center;justify-content:center;background:#eee;color:#a00;text-align:center}
.badge{font-size:.75rem;padding:.05rem .4rem;border-radius:3px;color:#fff;font-family:sans-serif}
.badge.accepted{background:#2a9d4b}.badge.rejected{background:#b07d12}.badge.error{background:#b3261e}
.reason{color:#8a3b00}
"""

SCRIPT = """
const sets=[...document.querySelectorAll('section.set')];
const pick={concept:document.getElementById('f-concept'),axis:document.getElementById('f-axis'),status:document.getElementById('f-status')};
function apply(){let shown=0;for(const s of sets){const ok=Object.entries(pick).every(([k,el])=>!el.value||s.dataset[k]===el.value);
s.style.display=ok?'':'none';if(ok)shown++;}document.getElementById('shown').textContent=shown;}
Object.values(pick).forEach(el=>el.addEventListener('change',apply));apply();
"""


def _img(data: bytes | None, alt: str, reason: str | None = None) -> str:
    if data is None:
        return f'<div class="missing">{html.escape(reason or "no image")[:80]}</div>'
    return f'<img alt="{html.escape(alt)}" src="data:image/jpeg;base64,{base64.b64encode(data).decode()}">'


def _scores(row: dict) -> str:
    parts = [f"{short} {row[name]:.2f}" for name, short in SCORE_LABELS if row.get(name) is not None]
    return " · ".join(parts)


def _select(name: str, label: str, values: list[str]) -> str:
    options = "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in values)
    return f'<label>{label} <select id="f-{name}"><option value="">all</option>{options}</select></label>'


def _review_badge(rows: list[dict]) -> str:
    verdicts = {r.get("review_verdict") for r in rows if r["status"] == STATUS_ACCEPTED} - {None}
    if not verdicts:
        return ""
    vetoed = VERDICT_REJECT in verdicts and not any(r["shard"] for r in rows)
    label = "vetoed in review" if vetoed else ("members vetoed in review" if VERDICT_REJECT in verdicts else "reviewed")
    return f' <span class="badge {"rejected" if VERDICT_REJECT in verdicts else "accepted"}">{label}</span>'


def render_preview(contents: OutputContents, max_sets: int = 500) -> str:
    sets = contents.sets()
    shown = sets[:max_sets]
    thumbs = contents.thumbnails({s["set_id"] for s in shown})
    name = contents.run.get("config", {}).get("run", {}).get("name", "counterfactory output")
    statuses = {}
    for s in sets:
        statuses[s["set_status"]] = statuses.get(s["set_status"], 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in sorted(statuses.items()))
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{html.escape(name)}: preview</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(name)}</h1>",
        f'<p class="summary">{len(sets)} sets ({html.escape(summary)}); config hash '
        f'{html.escape(str(contents.run.get("config_hash", "?")))}. Accepted candidates have a green frame; '
        "rejected and errored ones are dimmed, with the reason.</p>",
    ]
    if len(shown) < len(sets):
        parts.append(f'<p class="summary">Showing the first {len(shown)} sets by seed order (report.max_sets).</p>')
    parts.append('<div class="filters">')
    parts.append(_select("concept", "Concept", sorted({str(s["concept"]) for s in sets})))
    parts.append(_select("axis", "Axis", sorted({s["axis"] for s in sets})))
    parts.append(_select("status", "Status", sorted({s["set_status"] for s in sets})))
    parts.append(f'<span class="count"><span id="shown">{len(shown)}</span> shown</span></div>')
    for s in shown:
        attrs = f'data-concept="{html.escape(str(s["concept"]))}" data-axis="{html.escape(s["axis"])}" ' \
                f'data-status="{html.escape(s["set_status"])}"'
        parts.append(f'<section class="set" id="{html.escape(s["set_id"])}-{s["seed_index"]}" {attrs}>')
        parts.append(f'<h2>{html.escape(s["set_id"])} <span class="badge {html.escape(s["set_status"])}">'
                     f'{html.escape(s["set_status"])}</span>{_review_badge(s["candidates"])}</h2>')
        parts.append(f'<p class="caption">{html.escape(str(s["concept"]))} · {html.escape(s["axis"])} · '
                     f'{html.escape(s["caption"] or s["source_uri"])}</p><div class="grid">')
        parts.append(f'<figure class="src">{_img(thumbs.get((s["set_id"], THUMB_SOURCE_ID, None)), "seed")}'
                     f"<figcaption>seed</figcaption></figure>")
        for row in sorted(s["candidates"], key=lambda r: (r["member_id"] or "", r["candidate"] or 0)):
            values = ", ".join(f"{k}={v}" for k, v in json.loads(row["attributes"] or "{}").items())
            image = thumbs.get((s["set_id"], row["member_id"], row["candidate"]))
            reason = f'<br><span class="reason">{html.escape(row["reason"])}</span>' if row["reason"] else ""
            if row.get("review_verdict") == VERDICT_REJECT:
                reason += f'<br><span class="reason">vetoed in review: {html.escape(row["review_reason"] or "")}</span>'
            parts.append(
                f'<figure class="{html.escape(row["status"])}" title="{html.escape(row["reason"] or row["status"])}">'
                f'{_img(image, row["member_id"] or "", row["reason"])}<figcaption><b>{html.escape(values)}</b> '
                f'c{row["candidate"]}<br>{_scores(row)}{reason}</figcaption></figure>'
            )
        parts.append("</div></section>")
    parts.append(f"<script>{SCRIPT}</script></body></html>")
    return "\n".join(parts)
