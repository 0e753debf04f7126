"""Histories: the operations a linearizability check judges, and their JSON Lines form.

Theory of operation
-------------------
A history is a list of :class:`Operation` records, one per client request: who sent it (``client``), what it
asked (``f``, ``key`` and the inputs), when it was sent (``call_s``), what came back (``output``) and when
(``return_s``). Times are seconds from any origin; only their order matters.

An operation whose outcome is unknown (``output is None``: the client timed out, the connection dropped, the
process died) is *pending*. A pending operation may have taken effect at any instant after its call — even
after the client gave up waiting, since the request may still be in flight — or never. The checker therefore
treats its return time as +infinity whatever ``return_s`` says; ``return_s`` (when known) only tells the HTML
view when the client stopped waiting. A known output with no return time is contradictory and rejected.

Operations (a single key each):

========  ============================  ======================================================
``f``     inputs                        output (``None`` when unknown)
========  ============================  ======================================================
get       —                             :class:`Read` — the value, ``None`` if absent
put       ``value``                     :class:`Written`
delete    —                             :class:`Written`
cas       ``expected``, ``value``       :class:`CasResult` — ``ok`` says whether it swapped
txn       ``compare``, ``then``,        :class:`TxnResult` — which branch ran and one result per
          ``else_``                     branch operation
========  ============================  ======================================================

Values are strings or integers (not booleans or floats, whose equality is treacherous); ``None`` stands for
"absent" wherever a value is read or compared. Validation happens when an :class:`Operation` is built, so a
hand-made history is checked exactly as strictly as a loaded one; :func:`parse_jsonl` adds the line number.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO, TypeAlias, cast

Value: TypeAlias = str | int
Client: TypeAlias = int | str
Fn: TypeAlias = Literal["get", "put", "delete", "cas", "txn"]
FNS: tuple[Fn, ...] = ("get", "put", "delete", "cas", "txn")
_ALIASES: dict[str, Fn] = {"read": "get", "write": "put"}


class HistoryError(ValueError):
    """A malformed operation; ``line`` is its 1-based line in the source, when it came from one."""

    def __init__(self, message: str, *, source: str | None = None, line: int | None = None) -> None:
        self.message = message
        self.source = source
        self.line = line
        where = f"{source or '<history>'}:{line}: " if line is not None else ""
        super().__init__(where + message)


@dataclass(frozen=True, slots=True)
class Read:
    """Output of a get (and of a get inside a txn): the value, ``None`` when the key was absent."""

    value: Value | None


@dataclass(frozen=True, slots=True)
class Written:
    """Output of a put or delete that completed: nothing but the acknowledgement."""


@dataclass(frozen=True, slots=True)
class CasResult:
    """Output of a cas: ``ok`` is true when the value equalled ``expected`` and was replaced."""

    ok: bool


@dataclass(frozen=True, slots=True)
class Compare:
    """One condition of a txn on its key's value: ``op`` is ``==`` or ``!=``; ``None`` means absent."""

    op: Literal["==", "!="]
    value: Value | None


@dataclass(frozen=True, slots=True)
class TxnOp:
    """One operation of a txn branch, on the txn's key: ``get``, ``put`` (with ``value``) or ``delete``."""

    f: Literal["get", "put", "delete"]
    value: Value | None = None


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Output of a txn: whether every compare held (``then`` ran) and one result per operation of the branch."""

    succeeded: bool
    results: tuple[Read | Written, ...]


Output: TypeAlias = Read | Written | CasResult | TxnResult


@dataclass(frozen=True, slots=True)
class Operation:
    """One client request and its outcome. ``output is None`` ⇔ the outcome is unknown (pending).

    Invariants (checked on construction): ``f`` fits its inputs and output; ``call_s`` is finite;
    ``return_s`` is ``None`` or finite and ``>= call_s``; a known output has a return time.
    """

    client: Client
    f: Fn
    key: str
    call_s: float
    return_s: float | None
    value: Value | None = None
    """put: the value written; cas: the new value; otherwise ``None``."""
    expected: Value | None = None
    """cas: the value it must find (``None``: the key must be absent)."""
    output: Output | None = None
    compare: tuple[Compare, ...] = ()
    then: tuple[TxnOp, ...] = ()
    else_: tuple[TxnOp, ...] = ()
    line: int | None = field(default=None, compare=False)
    """Where the operation came from (1-based line of a JSONL file), for messages."""

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def pending(self) -> bool:
        """True when the outcome is unknown: the operation may have taken effect, at any time after its call."""
        return self.output is None

    @property
    def effective_return_s(self) -> float:
        """The return time the checker uses: +infinity for a pending operation."""
        return math.inf if self.output is None or self.return_s is None else self.return_s

    def describe(self) -> str:
        """A short human form, e.g. ``get 'x' -> 'a'``, ``cas 'x' 'a'->'b' ok``, ``put 'x' 'c' (unknown)``."""
        return describe_op(self)


def _validate(op: Operation) -> None:
    if op.f not in FNS:
        raise HistoryError(f"unknown f {op.f!r} (expected one of {', '.join(FNS)})")
    if isinstance(op.client, bool) or not isinstance(op.client, (int, str)):
        raise HistoryError(f"client must be an integer or a string, got {_kind(op.client)}")
    if not isinstance(op.key, str):
        raise HistoryError(f"key must be a string, got {_kind(op.key)}")
    _check_time("call", op.call_s)
    if op.return_s is not None:
        _check_time("return", op.return_s)
        if op.return_s < op.call_s:
            raise HistoryError(f"return {op.return_s} is before call {op.call_s}")
    elif op.output is not None:
        raise HistoryError("an output is given but 'return' is null (an operation that never returned has no output)")
    f = op.f
    if f == "put":
        _check_value("put value", op.value, nullable=False)
    elif f == "cas":
        _check_value("cas value", op.value, nullable=False)
        _check_value("cas expected", op.expected, nullable=True)
    elif op.value is not None:
        raise HistoryError(f"{f} takes no 'value'")
    if f != "cas" and op.expected is not None:
        raise HistoryError(f"{f} takes no 'expected'")
    if f != "txn" and (op.compare or op.then or op.else_):
        raise HistoryError(f"{f} takes no compare/then/else")
    out = op.output
    if out is None:
        pass
    elif f == "get":
        if not isinstance(out, Read):
            raise HistoryError("get output must be {'value': v or null}")
        _check_value("get output value", out.value, nullable=True)
    elif f in ("put", "delete"):
        if not isinstance(out, Written):
            raise HistoryError(f"{f} output must be {{}} (or null when unknown)")
    elif f == "cas" and (not isinstance(out, CasResult) or not isinstance(out.ok, bool)):
        raise HistoryError("cas output must be {'ok': true|false} (or null when unknown)")
    if f == "txn":
        _validate_txn(op)


def _validate_txn(op: Operation) -> None:
    for c in op.compare:
        if not isinstance(c, Compare) or c.op not in ("==", "!="):
            raise HistoryError("txn compare entries must be {'op': '==' or '!=', 'value': v or null}")
        _check_value("txn compare value", c.value, nullable=True)
    for branch in (op.then, op.else_):
        for t in branch:
            if not isinstance(t, TxnOp) or t.f not in ("get", "put", "delete"):
                raise HistoryError("txn branch operations must be get, put (with a value) or delete")
            _check_value(f"txn {t.f} value", t.value, nullable=t.f != "put")
            if t.f != "put" and t.value is not None:
                raise HistoryError(f"txn {t.f} takes no value")
    out = op.output
    if out is None:
        return
    if not isinstance(out, TxnResult) or not isinstance(out.succeeded, bool):
        raise HistoryError("txn output must be {'succeeded': true|false, 'results': [...]} (or null when unknown)")
    branch = op.then if out.succeeded else op.else_
    if len(out.results) != len(branch):
        raise HistoryError(
            f"txn output has {len(out.results)} results but its {'then' if out.succeeded else 'else'} branch "
            f"has {len(branch)} operations"
        )
    for t, r in zip(branch, out.results, strict=True):
        if t.f == "get":
            if not isinstance(r, Read):
                raise HistoryError("the result of a txn get must be {'value': v or null}")
            _check_value("txn get result", r.value, nullable=True)
        elif not isinstance(r, Written):
            raise HistoryError(f"the result of a txn {t.f} must be {{}}")


def _kind(x: object) -> str:
    if x is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(x), type(x).__name__)


def _check_time(name: str, t: object) -> None:
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise HistoryError(f"{name} time must be a number, got {_kind(t)}")
    if not math.isfinite(t):
        raise HistoryError(f"{name} time must be finite, got {t}")


def _check_value(name: str, v: object, *, nullable: bool) -> None:
    if v is None:
        if not nullable:
            raise HistoryError(f"{name} must not be null" + (" (use delete)" if name == "put value" else ""))
        return
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise HistoryError(f"{name} must be a string or an integer, got {_kind(v)}")


# --- Builders: a hand-written history reads like a transcript -------------------------------------------------


def get(client: Client, key: str, result: Value | None, call_s: float, return_s: float | None) -> Operation:
    """A get that returned ``result`` (``None``: absent); ``return_s=None`` makes it pending (result ignored)."""
    out = Read(result) if return_s is not None else None
    return Operation(client, "get", key, call_s, return_s, output=out)


def put(client: Client, key: str, value: Value, call_s: float, return_s: float | None) -> Operation:
    """A put; ``return_s=None`` makes it pending: it may or may not have happened."""
    return Operation(
        client, "put", key, call_s, return_s, value=value, output=Written() if return_s is not None else None
    )


def delete(client: Client, key: str, call_s: float, return_s: float | None) -> Operation:
    """A delete; ``return_s=None`` makes it pending."""
    return Operation(client, "delete", key, call_s, return_s, output=Written() if return_s is not None else None)


def cas(
    client: Client,
    key: str,
    expected: Value | None,
    value: Value,
    ok: bool | None,
    call_s: float,
    return_s: float | None,
) -> Operation:
    """A compare-and-swap ``expected -> value`` that answered ``ok``; ``ok=None`` makes it pending."""
    out = CasResult(ok) if ok is not None else None
    return Operation(client, "cas", key, call_s, return_s, value=value, expected=expected, output=out)


def txn(
    client: Client,
    key: str,
    compare: Sequence[Compare],
    then: Sequence[TxnOp],
    else_: Sequence[TxnOp],
    output: TxnResult | None,
    call_s: float,
    return_s: float | None,
) -> Operation:
    """A single-key transaction: if every compare holds, run ``then``, else ``else_``."""
    return Operation(
        client,
        "txn",
        key,
        call_s,
        return_s,
        output=output,
        compare=tuple(compare),
        then=tuple(then),
        else_=tuple(else_),
    )


# --- Human form -----------------------------------------------------------------------------------------------


def fmt_value(v: Value | None) -> str:
    """``'a'``, ``7``, or ``absent``."""
    return "absent" if v is None else repr(v)


def _fmt_txn_op(t: TxnOp) -> str:
    return f"put {fmt_value(t.value)}" if t.f == "put" else t.f


def describe_op(op: Operation) -> str:
    """The operation's inputs and output in a few words (key included)."""
    k = repr(op.key)
    out = op.output
    unknown = " (outcome unknown)" if out is None else ""
    if op.f == "get":
        return f"get {k}" + (f" -> {fmt_value(out.value)}" if isinstance(out, Read) else unknown)
    if op.f == "put":
        return f"put {k} {fmt_value(op.value)}{unknown}"
    if op.f == "delete":
        return f"delete {k}{unknown}"
    if op.f == "cas":
        res = (" ok" if out.ok else " failed") if isinstance(out, CasResult) else unknown
        return f"cas {k} {fmt_value(op.expected)}->{fmt_value(op.value)}{res}"
    cmp = " and ".join(f"{c.op} {fmt_value(c.value)}" for c in op.compare) or "true"
    then = ", ".join(_fmt_txn_op(t) for t in op.then) or "nothing"
    els = ", ".join(_fmt_txn_op(t) for t in op.else_) or "nothing"
    text = f"txn {k} if {cmp} then {then} else {els}"
    if isinstance(out, TxnResult):
        reads = [fmt_value(r.value) for r in out.results if isinstance(r, Read)]
        text += " -> " + ("then" if out.succeeded else "else") + (f" read {', '.join(reads)}" if reads else "")
    return text + unknown


def describe_ref(op: Operation, index: int) -> str:
    """A reference naming the operation in a one-line reason: ``#17 (line 18) client 3 get 'x' -> 'a' [1.5, 1.9]``."""
    line = f" (line {op.line})" if op.line is not None else ""
    ret = "…" if op.return_s is None else f"{op.return_s:g}"
    return f"#{index}{line} client {op.client} {describe_op(op)} [{op.call_s:g}, {ret}]"


# --- JSON Lines -----------------------------------------------------------------------------------------------


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not allowed (times must be finite)")


def _value_field(obj: dict[str, Any], name: str, what: str, *, required: bool) -> Any:
    if name not in obj:
        if required:
            raise HistoryError(f"{what} needs {name!r}")
        return None
    return obj[name]


def _read(obj: object, what: str) -> Read:
    if not isinstance(obj, dict) or "value" not in obj:
        raise HistoryError(f"{what} must be an object {{'value': v or null}}")
    return Read(obj["value"])


def _written(obj: object, what: str) -> Written:
    if not isinstance(obj, dict):
        raise HistoryError(f"{what} must be {{}} (or null when unknown)")
    if obj.get("ok") is False:
        raise HistoryError(f"{what} says ok=false: a write that failed without effect should be left out")
    return Written()


def _txn_ops(raw: object, what: str) -> tuple[TxnOp, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise HistoryError(f"txn {what!r} must be a list")
    ops: list[TxnOp] = []
    for item in raw:
        if not isinstance(item, dict) or item.get("f") not in ("get", "put", "delete"):
            raise HistoryError(f"txn {what!r} entries must be objects with 'f': get, put or delete")
        ops.append(TxnOp(item["f"], item.get("value")))
    return tuple(ops)


def op_from_json(obj: object, *, line: int | None = None) -> Operation:
    """One operation from its decoded JSON object (see the module docstring and ``docs/check.md``)."""
    if not isinstance(obj, dict):
        raise HistoryError(f"expected a JSON object, got {_kind(obj)}")
    for name in ("client", "f", "key", "call"):
        if name not in obj:
            raise HistoryError(f"missing {name!r}")
    f = obj["f"]
    if not isinstance(f, str) or (f not in FNS and f not in _ALIASES):
        raise HistoryError(f"unknown f {f!r} (expected one of {', '.join(FNS)})")
    fn: Fn = _ALIASES[f] if f in _ALIASES else cast(Fn, f)
    if "return" not in obj:
        raise HistoryError("missing 'return' (null when the operation never returned)")
    if "output" not in obj:
        raise HistoryError("missing 'output' (null when the outcome is unknown)")
    raw_out = obj["output"]
    out: Output | None = None
    compare: tuple[Compare, ...] = ()
    then: tuple[TxnOp, ...] = ()
    else_: tuple[TxnOp, ...] = ()
    value = _value_field(obj, "value", fn, required=fn in ("put", "cas"))
    expected = _value_field(obj, "expected", fn, required=fn == "cas")
    if fn == "txn":
        raw_cmp = obj.get("compare", [])
        if not isinstance(raw_cmp, list):
            raise HistoryError("txn 'compare' must be a list")
        cmps: list[Compare] = []
        for c in raw_cmp:
            if not isinstance(c, dict) or c.get("op") not in ("==", "!=") or "value" not in c:
                raise HistoryError("txn compare entries must be {'op': '==' or '!=', 'value': v or null}")
            cmps.append(Compare(c["op"], c["value"]))
        compare = tuple(cmps)
        then = _txn_ops(obj.get("then"), "then")
        else_ = _txn_ops(obj.get("else"), "else")
    if raw_out is not None:
        if fn == "get":
            out = _read(raw_out, "get output")
        elif fn in ("put", "delete"):
            out = _written(raw_out, f"{fn} output")
        elif fn == "cas":
            if not isinstance(raw_out, dict) or not isinstance(raw_out.get("ok"), bool):
                raise HistoryError("cas output must be {'ok': true|false} (or null when unknown)")
            out = CasResult(raw_out["ok"])
        else:
            if not isinstance(raw_out, dict) or not isinstance(raw_out.get("succeeded"), bool):
                raise HistoryError("txn output must be {'succeeded': true|false, 'results': [...]}")
            raw_results = raw_out.get("results", [])
            if not isinstance(raw_results, list):
                raise HistoryError("txn output 'results' must be a list")
            branch = then if raw_out["succeeded"] else else_
            if len(raw_results) != len(branch):
                raise HistoryError(
                    f"txn output has {len(raw_results)} results but the branch that ran has {len(branch)} operations"
                )
            results = tuple(
                _read(r, "txn get result") if t.f == "get" else _written(r, f"txn {t.f} result")
                for t, r in zip(branch, raw_results, strict=True)
            )
            out = TxnResult(raw_out["succeeded"], results)
    return Operation(
        client=obj["client"],
        f=fn,
        key=obj["key"],
        call_s=obj["call"],
        return_s=obj["return"],
        value=value,
        expected=expected,
        output=out,
        compare=compare,
        then=then,
        else_=else_,
        line=line,
    )


def parse_jsonl(lines: Iterable[str], *, source: str = "<history>") -> list[Operation]:
    """Operations from JSON Lines text; blank lines are skipped. Raises :class:`HistoryError` naming the line."""
    history: list[Operation] = []
    for lineno, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text, parse_constant=_reject_constant)
        except (json.JSONDecodeError, ValueError) as e:
            raise HistoryError(f"not valid JSON: {e}", source=source, line=lineno) from None
        try:
            history.append(op_from_json(obj, line=lineno))
        except HistoryError as e:
            raise HistoryError(e.message, source=source, line=lineno) from None
    return history


def load_jsonl(path: str | Path) -> list[Operation]:
    """Read a history file (one JSON object per line). Raises :class:`HistoryError` naming the line."""
    p = Path(path)
    with p.open(encoding="utf-8") as fh:
        return parse_jsonl(fh, source=str(p))


def _txn_op_json(t: TxnOp) -> dict[str, Any]:
    return {"f": t.f, "value": t.value} if t.f == "put" else {"f": t.f}


def _output_json(out: Output | None) -> Any:
    if out is None:
        return None
    if isinstance(out, Read):
        return {"value": out.value}
    if isinstance(out, Written):
        return {}
    if isinstance(out, CasResult):
        return {"ok": out.ok}
    return {"succeeded": out.succeeded, "results": [_output_json(r) for r in out.results]}


def op_to_json(op: Operation) -> dict[str, Any]:
    """The JSON object :func:`op_from_json` reads back to an equal operation."""
    obj: dict[str, Any] = {"client": op.client, "f": op.f, "key": op.key}
    if op.f in ("put", "cas"):
        obj["value"] = op.value
    if op.f == "cas":
        obj["expected"] = op.expected
    if op.f == "txn":
        obj["compare"] = [{"op": c.op, "value": c.value} for c in op.compare]
        obj["then"] = [_txn_op_json(t) for t in op.then]
        obj["else"] = [_txn_op_json(t) for t in op.else_]
    obj["output"] = _output_json(op.output)
    obj["call"] = op.call_s
    obj["return"] = op.return_s
    return obj


def dump_jsonl(history: Iterable[Operation], out: TextIO) -> None:
    """Write a history as JSON Lines."""
    for op in history:
        out.write(json.dumps(op_to_json(op), separators=(",", ":")) + "\n")
