"""The HTML view: self-contained, one lane per client, the prefix numbered and the failing operation in red."""

from __future__ import annotations

import json
import re
from pathlib import Path

from raftkv.check import Kind, check, get, put, render_html, write_html
from raftkv.check.gen import generate

STALE = [
    put(1, "x", "a", 0, 1),
    put(1, "x", "b", 2, 3),
    get(2, "x", "a", 4, 6),
    get(3, "x", "<c>", 5, 8),
    put(4, "x", "p", 5, None),
    get(3, "y", None, 0, 1),
]


def _rect(doc: str, op: int) -> str:
    m = re.search(rf'<rect class="([^"]*)" data-op="{op}"', doc)
    assert m, f"no bar for #{op}"
    return m.group(1)


def _badge(doc: str, op: int) -> str:
    m = re.search(rf'<text class="num" data-op="{op}"[^>]*>([^<]*)</text>', doc)
    assert m, f"no badge for #{op}"
    return m.group(1)


def test_an_illegal_history_is_drawn_with_the_failure_highlighted(tmp_path: Path) -> None:
    r = check(STALE)
    assert r.kind is Kind.ILLEGAL
    path = tmp_path / "h.html"
    write_html(r, STALE, path)
    doc = path.read_text(encoding="utf-8")
    assert '<span class="verdict illegal">ILLEGAL</span>' in doc
    assert "block" in _rect(doc, 2).split() and "fail" in _rect(doc, 3).split()
    assert [_badge(doc, i) for i in (0, 1, 2, 3)] == ["1", "2", "", ""]  # the longest prefix, numbered
    assert "pending" in _rect(doc, 4).split()
    for client in (1, 2, 3, 4):
        assert f">client {client}</text>" in doc
    assert "&lt;c&gt;" in doc and "<c>" not in doc  # values are escaped
    data = json.loads(re.search(r'<script type="application/json" id="partials">(.*?)</script>', doc, re.S)[1])
    (part,) = data.values()
    assert part["order"] == [0, 1]
    assert {int(op) for op in part["partials"]} >= {0, 1}
    assert "<details><summary>key &#x27;y&#x27;: linearizable" in doc  # the legal key is folded away


def test_the_file_is_self_contained() -> None:
    doc = render_html(check(STALE), STALE)
    assert not re.search(r"(src|href)\s*=|https?:|@import|<link", doc)


def test_a_legal_history_shows_a_full_linearization() -> None:
    g = generate(2, ops=60, clients=4, keys=1, pending_rate=0.1)
    r = check(g.history)
    assert r.kind is Kind.OK
    doc = render_html(r, g.history)
    order = r.partitions["k0"].order
    assert [_badge(doc, i) for i in order] == [str(k + 1) for k in range(len(order))]
    assert "OK</span>" in doc
