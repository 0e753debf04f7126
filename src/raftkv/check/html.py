"""A self-contained HTML view of a checked history: one lane per client, operations as bars on a time axis.

Theory of operation
-------------------
Each partition (key) gets an inline SVG. The horizontal axis is *event order*, not raw time: every distinct
call or return time of the partition is one column, so that a burst of overlapping operations is as readable
as a slow one and every real-time relation is still visible (porcupine's visualization does the same). The
actual times are on the axis ticks and in every bar's tooltip.

An operation is a bar from its call to its return. A pending one (unknown outcome) runs to the right edge and
is hatched; if its client stopped waiting at a known time, the bar is solid up to that time. A pending read,
which the checker leaves out, is drawn dotted. Above each bar, a badge gives its position in the linearization
shown: for an illegal key, the longest linearizable prefix, with the operations that cannot extend it in red
(the blocking one, whose return closes the door, with a heavy outline); for a linearizable key, a complete
linearization. Clicking a bar of an illegal key shows instead the longest partial linearization containing
that operation (the few lines of inline script renumber the badges; without script the default numbering
stays). Nothing is loaded from anywhere: one file, inline CSS and script, no external references.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

from raftkv.check.checker import CheckResult, PartitionResult
from raftkv.check.history import CasResult, Operation, Read, TxnResult, describe_op, fmt_value
from raftkv.check.search import Kind

STEP_PX = 26
"""Width of one event column."""
LANE_PX = 34
LEFT_PX = 90
TOP_PX = 30
MAX_DRAWN_OPS = 20_000
"""Linearizable partitions are drawn only while the total stays under this many operations."""

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin: 0.6em 0 0.3em; }
.verdict { padding: 0.1em 0.5em; border-radius: 4px; color: white; }
.verdict.ok { background: #2e7d32; } .verdict.illegal { background: #c62828; } .verdict.unknown { background: #b26a00; }
.reason { font-family: ui-monospace, monospace; background: #f6f6f6; padding: 0.6em; white-space: pre-wrap; }
.meta, .hint { color: #666; }
.scroll { overflow-x: auto; border: 1px solid #ddd; margin-bottom: 1em; }
ul.ops { font-family: ui-monospace, monospace; font-size: 12px; }
svg text { font: 10px ui-monospace, monospace; }
svg .lane { fill: #fafafa; } svg .lane.odd { fill: #f1f1f1; }
svg .client { font: 11px system-ui, sans-serif; fill: #444; }
svg .tick { stroke: #ddd; } svg .ticklabel { fill: #888; font-size: 9px; }
svg rect.op { fill: #e3e3e3; stroke: #9e9e9e; stroke-width: 1; cursor: pointer; }
svg rect.op.lin { fill: #c8e6c9; stroke: #43a047; }
svg rect.op.fail { fill: #ffcdd2; stroke: #e53935; stroke-width: 2; }
svg rect.op.block { fill: #ef9a9a; stroke: #b71c1c; stroke-width: 3; }
svg rect.op.pending { fill-opacity: 0.55; stroke-dasharray: 4 2; }
svg rect.op.skipped { fill: white; stroke-dasharray: 1 2; }
svg rect.tail { stroke: #9e9e9e; stroke-dasharray: 4 2; pointer-events: none; }
svg rect.op.sel { stroke: #1565c0; stroke-width: 3; }
svg text.num { fill: #1b5e20; font-weight: bold; }
svg text.num.alt { fill: #0d47a1; }
svg text.label { fill: #222; pointer-events: none; }
"""

_JS = """
const DATA = JSON.parse(document.getElementById('partials').textContent);
function show(part, seq, sel) {
  const svg = document.getElementById('svg-' + part);
  const pos = new Map(seq.map((op, i) => [op, i + 1]));
  for (const t of svg.querySelectorAll('text.num')) {
    const p = pos.get(Number(t.dataset.op));
    t.textContent = p === undefined ? '' : String(p);
    t.classList.toggle('alt', sel !== null);
  }
  for (const r of svg.querySelectorAll('rect.op')) r.classList.toggle('sel', Number(r.dataset.op) === sel);
  const note = document.getElementById('note-' + part);
  if (note) note.textContent = sel === null
    ? 'Showing the longest linearizable prefix (' + seq.length + ' operations). Click an operation to see the ' +
      'longest partial linearization containing it.'
    : 'Showing the longest partial linearization containing #' + sel + ' (' + seq.length + ' operations). ' +
      'Click outside the bars to go back.';
}
for (const [part, d] of Object.entries(DATA)) {
  const svg = document.getElementById('svg-' + part);
  svg.addEventListener('click', (ev) => {
    const op = ev.target.dataset ? ev.target.dataset.op : undefined;
    if (op !== undefined && d.partials[op] !== undefined) show(part, d.seqs[d.partials[op]], Number(op));
    else show(part, d.order, null);
  });
}
"""


def _short(op: Operation) -> str:
    out = op.output
    if op.f == "get":
        return "get → " + fmt_value(out.value) if isinstance(out, Read) else "get ?"
    if op.f == "put":
        return f"put {fmt_value(op.value)}" + (" ?" if out is None else "")
    if op.f == "delete":
        return "delete" + (" ?" if out is None else "")
    if op.f == "cas":
        mark = "?" if not isinstance(out, CasResult) else ("✓" if out.ok else "✗")
        return f"cas {fmt_value(op.expected)}→{fmt_value(op.value)} {mark}"
    mark = "?" if not isinstance(out, TxnResult) else ("then" if out.succeeded else "else")
    return f"txn {mark}"


def _fmt_t(t: float) -> str:
    return f"{t:.6g}"


def _client_key(c: int | str) -> tuple[int, int, str]:
    return (1, 0, c) if isinstance(c, str) else (0, c, "")


def _svg(index: int, part: PartitionResult, history: Sequence[Operation]) -> str:
    ops = part.ops
    times = sorted({history[i].call_s for i in ops} | {t for i in ops if (t := history[i].return_s) is not None})
    rank = {t: r for r, t in enumerate(times)}
    clients = sorted({history[i].client for i in ops}, key=_client_key)
    lane = {c: j for j, c in enumerate(clients)}
    x_end = LEFT_PX + (len(times) + 1) * STEP_PX
    width = x_end + STEP_PX
    height = TOP_PX + len(clients) * LANE_PX + 6
    pos = {op: k + 1 for k, op in enumerate(part.order)}
    state_after = dict(zip(part.order, part.states, strict=True))
    fail = set(part.unplaceable)
    block = part.unplaceable[0] if part.unplaceable else None
    skipped = set(part.skipped)

    def x(t: float) -> float:
        return LEFT_PX + (rank[t] + 0.5) * STEP_PX

    out = [
        f'<svg id="svg-{index}" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
        f'<defs><pattern id="hatch-{index}" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#eeeeee"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#bdbdbd" stroke-width="2"/></pattern></defs>',
    ]
    for c, j in lane.items():
        y = TOP_PX + j * LANE_PX
        cls = "lane odd" if j % 2 else "lane"
        out.append(f'<rect class="{cls}" x="0" y="{y}" width="{width}" height="{LANE_PX}"/>')
        out.append(f'<text class="client" x="6" y="{y + LANE_PX / 2 + 4}">client {html.escape(str(c))}</text>')
    every = max(1, 110 // STEP_PX)
    for r, t in enumerate(times):
        if r % every == 0:
            xt = LEFT_PX + (r + 0.5) * STEP_PX
            out.append(f'<line class="tick" x1="{xt}" y1="{TOP_PX - 4}" x2="{xt}" y2="{height}"/>')
            out.append(f'<text class="ticklabel" x="{xt + 2}" y="{TOP_PX - 8}">{t:.5g}</text>')
    for i in ops:
        op = history[i]
        y = TOP_PX + lane[op.client] * LANE_PX + 12
        h = LANE_PX - 16
        x1 = x(op.call_s) - STEP_PX * 0.4
        ends = op.return_s is not None
        x2 = x(op.return_s) + STEP_PX * 0.4 if op.return_s is not None else x_end
        classes = ["op"]
        if i in skipped:
            classes.append("skipped")
        elif op.pending:
            classes.append("pending")
        if i in pos:
            classes.append("lin")
        if i == block:
            classes.append("block")
        elif i in fail:
            classes.append("fail")
        tip = [f"#{i}" + (f" (line {op.line})" if op.line is not None else "") + f" client {op.client}"]
        tip.append(describe_op(op))
        tip.append(f"call {_fmt_t(op.call_s)}, return {'never' if not ends else _fmt_t(op.return_s or 0.0)}")
        if i in skipped:
            tip.append("a read whose answer never came: constrains nothing, not checked")
        elif op.pending:
            tip.append("outcome unknown: may have taken effect at any time after its call, or never")
        if i in pos:
            tip.append(f"position {pos[i]} in the linearization shown; value after it: {state_after[i]}")
        elif i == block:
            tip.append("cannot be placed after the longest linearizable prefix (it blocks: it returned first)")
        elif i in fail:
            tip.append("cannot be placed after the longest linearizable prefix")
        title = html.escape("\n".join(tip))
        w = max(6.0, x2 - x1)
        hatch = f' style="fill:url(#hatch-{index})"' if op.pending and not ends and i not in skipped else ""
        out.append(
            f'<rect class="{" ".join(classes)}" data-op="{i}" x="{x1:.1f}" y="{y}" width="{w:.1f}" height="{h}" '
            f'rx="3"{hatch}><title>{title}</title></rect>'
        )
        if op.pending and ends:  # the client stopped waiting at return_s; the effect may come later still
            xr = x2
            out.append(
                f'<rect class="tail" fill="url(#hatch-{index})" x="{xr:.1f}" y="{y + 3}" '
                f'width="{x_end - xr:.1f}" height="{h - 6}"/>'
            )
        label = html.escape(_short(op))
        out.append(
            f'<svg x="{x1 + 2:.1f}" y="{y}" width="{max(0.0, w - 4):.1f}" height="{h}">'
            f'<text class="label" x="0" y="{h / 2 + 3.5:.1f}">{label}</text></svg>'
        )
        num = str(pos[i]) if i in pos else ""
        out.append(f'<text class="num" data-op="{i}" x="{x1 + 1:.1f}" y="{y - 2}">{num}</text>')
    out.append("</svg>")
    return "".join(out)


def _where(result: CheckResult, key: str) -> str:
    return f"key {key!r}" if result.per_key else "the register"


def _part_html(index: int, part: PartitionResult, result: CheckResult, history: Sequence[Operation]) -> str:
    checked = len(part.ops) - len(part.skipped)
    if part.kind is Kind.OK:
        summary = f"{_where(result, part.key)}: linearizable ({len(part.ops)} operations)"
    elif part.kind is Kind.ILLEGAL:
        summary = (
            f"{_where(result, part.key)}: NOT linearizable — longest linearizable prefix {len(part.order)} of "
            f"{checked} operations"
        )
    else:
        summary = f"{_where(result, part.key)}: unknown (time budget exhausted; {len(part.ops)} operations)"
    body = [f'<div class="scroll">{_svg(index, part, history)}</div>']
    if part.kind is Kind.ILLEGAL:
        items = "".join(f"<li>{html.escape(_ref(history, i))}</li>" for i in part.unplaceable)
        value = part.states[-1] if part.states else "absent"
        body.insert(
            0,
            f"<p>After the prefix (value {html.escape(value)}), none of these can go next "
            f'(the first one returned first):</p><ul class="ops">{items}</ul>'
            f'<p class="hint" id="note-{index}">Showing the longest linearizable prefix ({len(part.order)} '
            f"operations). Click an operation to see the longest partial linearization containing it.</p>",
        )
    inner = "".join(body)
    if part.kind is Kind.OK:
        return f"<details><summary>{html.escape(summary)}</summary>{inner}</details>"
    return f"<section><h2>{html.escape(summary)}</h2>{inner}</section>"


def _ref(history: Sequence[Operation], i: int) -> str:
    op = history[i]
    line = f" (line {op.line})" if op.line is not None else ""
    ret = "never" if op.return_s is None else _fmt_t(op.return_s)
    return f"#{i}{line} client {op.client}: {describe_op(op)} [{_fmt_t(op.call_s)} … {ret}]"


def render_html(result: CheckResult, history: Sequence[Operation]) -> str:
    """The HTML document for ``result`` (which must come from checking ``history``)."""
    kind = result.kind.value
    n_keys = len(result.partitions)
    meta = (
        f"model {result.model} · {result.op_count} operations"
        + (f" · {n_keys} keys" if result.per_key else "")
        + f" · checked in {result.elapsed_s:.3f} s"
    )
    order = sorted(
        enumerate(result.partitions.values()),
        key=lambda p: {Kind.ILLEGAL: 0, Kind.UNKNOWN: 1, Kind.OK: 2}[p[1].kind],
    )
    parts: list[str] = []
    drawn = 0
    not_drawn: list[str] = []
    data: dict[str, object] = {}
    for index, part in order:
        if part.kind is Kind.OK and drawn + len(part.ops) > MAX_DRAWN_OPS:
            not_drawn.append(part.key)
            continue
        drawn += len(part.ops)
        parts.append(_part_html(index, part, result, history))
        if part.kind is Kind.ILLEGAL:
            seqs: list[list[int]] = []
            seq_index: dict[tuple[int, ...], int] = {}
            partials: dict[str, int] = {}
            for op, seq in sorted(part.partials.items()):
                if seq not in seq_index:
                    seq_index[seq] = len(seqs)
                    seqs.append(list(seq))
                partials[str(op)] = seq_index[seq]
            data[str(index)] = {"order": list(part.order), "seqs": seqs, "partials": partials}
    if not_drawn:
        parts.append(f'<p class="hint">{len(not_drawn)} more linearizable partitions not drawn (size cap).</p>')
    legend = (
        '<p class="hint">One lane per client; time runs left to right in event order (hover a bar for its times). '
        "Green: in the linearization shown, numbered in order. Red: cannot be placed after the longest "
        "linearizable prefix (heavy outline: the one that returned first). Hatched: outcome unknown (may have "
        "happened at any time after its call, or never). Dotted: a read that never returned (not checked).</p>"
    )
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>raftkv.check: {kind}</title><style>{_CSS}</style></head><body>"
        f'<h1>Linearizability: <span class="verdict {kind}">{kind.upper()}</span></h1>'
        f'<p class="reason">{html.escape(result.reason)}</p><p class="meta">{html.escape(meta)}</p>{legend}'
        + "".join(parts)
        + f'<script type="application/json" id="partials">{payload}</script><script>{_JS}</script>'
        "</body></html>\n"
    )


def write_html(result: CheckResult, history: Sequence[Operation], path: str | Path) -> None:
    """Write :func:`render_html` to ``path`` (UTF-8)."""
    Path(path).write_text(render_html(result, history), encoding="utf-8")
