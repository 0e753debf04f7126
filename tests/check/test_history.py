"""The JSONL history format: what it accepts, and a clear, line-numbered error for everything else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raftkv.check import (
    CasResult,
    Compare,
    HistoryError,
    Operation,
    Read,
    TxnResult,
    Written,
    load_jsonl,
    op_from_json,
    parse_jsonl,
)

GOOD = [
    {"client": 1, "f": "put", "key": "k", "value": "v", "output": {}, "call": 0, "return": 1},
    {"client": 2, "f": "get", "key": "k", "output": {"value": "v"}, "call": 1.5, "return": 2.5},
    {"client": 3, "f": "get", "key": "k", "output": None, "call": 1.5, "return": None},
    {"client": 3, "f": "delete", "key": "k", "output": None, "call": 3, "return": 3.5},
    {
        "client": 4,
        "f": "cas",
        "key": "k",
        "expected": "v",
        "value": "w",
        "output": {"ok": True},
        "call": 4,
        "return": 5,
    },
    {"client": 4, "f": "cas", "key": "k", "expected": None, "value": 3, "output": None, "call": 6, "return": None},
    {
        "client": "n1",
        "f": "txn",
        "key": "k",
        "compare": [{"op": "==", "value": "w"}],
        "then": [{"f": "put", "value": "z"}, {"f": "get"}],
        "else": [{"f": "get"}],
        "output": {"succeeded": True, "results": [{}, {"value": "z"}]},
        "call": 7,
        "return": 8,
    },
]


def lines(*objs: object) -> list[str]:
    return [json.dumps(o) for o in objs]


def test_the_documented_format_loads(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text("\n".join(lines(*GOOD)) + "\n\n")  # a trailing blank line is fine
    h = load_jsonl(path)
    assert [op.f for op in h] == ["put", "get", "get", "delete", "cas", "cas", "txn"]
    assert h[0].output == Written() and h[0].line == 1
    assert h[1].output == Read("v") and not h[1].pending
    assert h[2].output is None and h[2].pending and h[2].return_s is None
    assert h[3].pending and h[3].return_s == 3.5 and h[3].effective_return_s == float("inf")
    assert h[4].output == CasResult(True) and h[4].expected == "v"
    assert h[5].expected is None and h[5].value == 3
    assert isinstance(h[6].output, TxnResult) and h[6].output.results == (Written(), Read("z"))
    assert h[6].client == "n1"


def test_read_and_write_are_aliases_of_get_and_put() -> None:
    (op,) = parse_jsonl(
        lines({"client": 1, "f": "write", "key": "k", "value": 1, "output": {}, "call": 0, "return": 1})
    )
    assert op.f == "put"


def test_extra_fields_are_ignored() -> None:
    (op,) = parse_jsonl(lines({**GOOD[1], "process": 7, "index": 3, "output": {"value": "v", "rev": 9}}))
    assert op.output == Read("v")


def _bad(obj: dict[str, object], **change: object) -> dict[str, object]:
    out = {**obj, **change}
    return {k: v for k, v in out.items() if v is not _DROP}


_DROP = object()


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (_bad(GOOD[0], client=_DROP), "missing 'client'"),
        (_bad(GOOD[0], f="increment"), "unknown f 'increment'"),
        (_bad(GOOD[0], key=5), "key must be a string"),
        (_bad(GOOD[0], call="soon"), "call time must be a number"),
        (_bad(GOOD[0], call=True), "call time must be a number"),
        (_bad(GOOD[0], call=2, **{"return": 1}), "return 1 is before call 2"),
        (_bad(GOOD[0], **{"return": _DROP}), "missing 'return'"),
        (_bad(GOOD[0], output=_DROP), "missing 'output'"),
        (_bad(GOOD[0], value=_DROP), "put needs 'value'"),
        (_bad(GOOD[0], value=None), "put value must not be null (use delete)"),
        (_bad(GOOD[0], value=1.5), "put value must be a string or an integer, got a number"),
        (_bad(GOOD[0], value=[1]), "got a list"),
        (_bad(GOOD[0], value=False), "got a boolean"),
        (_bad(GOOD[0], output={"ok": False}), "a write that failed without effect should be left out"),
        (_bad(GOOD[0], output=[]), "put output must be {}"),
        (_bad(GOOD[1], output={"val": "v"}), "get output must be an object {'value': v or null}"),
        (_bad(GOOD[1], value="v"), "get takes no 'value'"),
        (_bad(GOOD[1], **{"return": None}, output={"value": "v"}), "output is given but 'return' is null"),
        (_bad(GOOD[4], expected=_DROP), "cas needs 'expected'"),
        (_bad(GOOD[4], output={"ok": "yes"}), "cas output must be {'ok': true|false}"),
        (_bad(GOOD[6], compare=[{"op": "<", "value": 1}]), "txn compare entries"),
        (_bad(GOOD[6], then=[{"f": "incr"}]), "txn 'then' entries"),
        (
            _bad(GOOD[6], output={"succeeded": True, "results": [{}]}),
            "has 1 results but the branch that ran has 2 operations",
        ),
        (_bad(GOOD[6], output={"succeeded": "y", "results": []}), "txn output must be"),
    ],
)
def test_bad_input_names_the_line_and_the_problem(obj: dict[str, object], message: str) -> None:
    text = lines(GOOD[0], obj)
    with pytest.raises(HistoryError) as e:
        parse_jsonl(text, source="h.jsonl")
    assert e.value.line == 2
    assert str(e.value).startswith("h.jsonl:2: ")
    assert message in str(e.value), str(e.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"client": 1, "f": "get", "key": "k", "output": null, "call": NaN, "return": null}', "NaN is not allowed"),
        ("[1, 2]", "expected a JSON object, got a list"),
    ],
)
def test_malformed_lines(text: str, message: str) -> None:
    with pytest.raises(HistoryError, match=message) as e:
        parse_jsonl([json.dumps(GOOD[0]), "", text])
    assert e.value.line == 3  # blank lines count


def test_constructors_validate_too() -> None:
    with pytest.raises(HistoryError, match="return 1 is before call 2"):
        Operation(1, "put", "k", 2, 1, value="v", output=Written())
    with pytest.raises(HistoryError, match="put takes no compare"):
        Operation(1, "put", "k", 0, 1, value="v", output=Written(), compare=(Compare("==", 1),))
    with pytest.raises(HistoryError, match="client must be an integer or a string"):
        op_from_json({**GOOD[0], "client": None})
