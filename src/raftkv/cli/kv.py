"""The key-value commands: ``put``, ``get``, ``del``, ``txn``, ``watch``, ``compaction`` (etcdctl's names)."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click

from raftkv.cli.common import client_call, endpoints_option, fail, json_option, parse_endpoints, tls_options
from raftkv.errors import RaftError


def _text(b: bytes) -> str:
    return b.decode("utf-8", errors="backslashreplace")


def _kv_json(kv: Any) -> dict[str, Any]:
    return {
        "key": _text(kv.key),
        "value": _text(kv.value),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": kv.lease,
    }


_SORT_TARGETS = {
    "key": "key",
    "version": "version",
    "create": "create",
    "modify": "mod",
    "mod": "mod",
    "value": "value",
}


_kv_timeout = click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds, retries included.")


@click.command()
@endpoints_option
@click.argument("key")
@click.argument("value")
@click.option("--lease", "lease_id", type=int, default=0, help="Attach KEY to this lease (`raftkv lease grant`).")
@json_option
@_kv_timeout
def put(endpoints: str | None, key: str, value: str, lease_id: int, as_json: bool, timeout: float) -> None:
    """Set KEY to VALUE."""
    if lease_id < 0:
        fail(f"--lease must be a lease id (>= 1), not {lease_id}")

    async def op(c: Any) -> Any:
        return await c.put(key, value, prev_kv=True, lease=lease_id)

    r = client_call(endpoints, timeout, op)
    if as_json:
        prev = _kv_json(r.prev_kv) if r.prev_kv else None
        click.echo(json.dumps({"revision": r.revision, "prev_kv": prev}))
    else:
        click.echo(f"OK (revision {r.revision})")


@click.command()
@endpoints_option
@click.argument("key")
@click.option("--prefix", is_flag=True, help="Every key starting with KEY (printed as key, then value, per line).")
@click.option("--serializable", is_flag=True, help="Read this node's local copy (faster, possibly stale).")
@click.option("--limit", type=int, default=0, help="At most this many keys (with --prefix).")
@click.option("--rev", type=int, default=0, help="Read the store as it was at this revision (default: now).")
@click.option(
    "--sort-by",
    type=click.Choice(sorted(_SORT_TARGETS), case_sensitive=False),
    default=None,
    help="Sort the keys by this field (with --prefix; before --limit).",
)
@click.option(
    "--order",
    type=click.Choice(["ascend", "descend"], case_sensitive=False),
    default=None,
    help="Sort order (default ascend when --sort-by is given).",
)
@click.option("--keys-only", is_flag=True, help="Print only the keys.")
@click.option("--count-only", is_flag=True, help="Print only how many keys there are.")
@json_option
@_kv_timeout
def get(
    endpoints: str | None,
    key: str,
    prefix: bool,
    serializable: bool,
    limit: int,
    rev: int,
    sort_by: str | None,
    order: str | None,
    keys_only: bool,
    count_only: bool,
    as_json: bool,
    timeout: float,
) -> None:
    """Print KEY's value (exit code 1 when it does not exist)."""
    if rev < 0:
        fail(f"--rev must be >= 0, not {rev}")
    if limit < 0:
        fail(f"--limit must be >= 0, not {limit}")
    target = _SORT_TARGETS[sort_by.lower()] if sort_by else "key"
    sort_order = order.lower() if order else ("ascend" if sort_by else "none")

    async def op(c: Any) -> Any:
        return await c.range(
            key,
            prefix=prefix,
            limit=limit,
            revision=rev,
            sort_order=sort_order,
            sort_target=target,
            keys_only=keys_only,
            count_only=count_only,
            serializable=serializable,
        )

    r = client_call(endpoints, timeout, op)
    if as_json:
        out = {"kvs": [_kv_json(kv) for kv in r.kvs], "count": r.count, "more": r.more, "revision": r.revision}
        click.echo(json.dumps(out))
    elif count_only:
        click.echo(str(r.count))
    elif prefix:
        for kv in r.kvs:
            click.echo(_text(kv.key))
            if not keys_only:
                click.echo(_text(kv.value))
    elif r.kvs:
        click.echo(_text(r.kvs[0].key if keys_only else r.kvs[0].value))
    sys.exit(0 if r.kvs or (count_only and r.count) else 1)


@click.command(name="del")
@endpoints_option
@click.argument("key")
@click.option("--prefix", is_flag=True, help="Delete every key starting with KEY.")
@json_option
@_kv_timeout
def delete(endpoints: str | None, key: str, prefix: bool, as_json: bool, timeout: float) -> None:
    """Delete KEY (or a prefix); print how many keys were deleted."""

    async def op(c: Any) -> Any:
        return await c.delete(key, prefix=prefix)

    r = client_call(endpoints, timeout, op)
    click.echo(json.dumps({"deleted": r.deleted, "revision": r.revision}) if as_json else str(r.deleted))


@click.command()
@endpoints_option
@json_option
@_kv_timeout
def txn(endpoints: str | None, as_json: bool, timeout: float) -> None:
    """Run a transaction read as JSON from stdin; prints SUCCESS or FAILURE and the branch's results.

    \b
    {"compare": [{"key": "k", "target": "value", "op": "=", "value": "v"}],
     "success": [{"put": {"key": "k", "value": "w"}}, {"delete": {"key": "p/", "prefix": true}}],
     "failure": [{"get": {"key": "k"}}]}
    target: value | version | create | mod;  op: = != < >  (version/create/mod compare integers)
    """
    try:
        spec = json.loads(sys.stdin.read())
        compare, success, failure = _parse_txn(spec)
    except (ValueError, KeyError, TypeError) as e:
        fail(f"txn: invalid JSON on stdin ({e}); see raftkv txn --help for the format")

    async def op(c: Any) -> Any:
        return await c.txn(compare, success, failure)

    r = client_call(endpoints, timeout, op)
    results = [_op_result_json(x) for x in r.responses]
    if as_json:
        click.echo(json.dumps({"succeeded": r.succeeded, "revision": r.revision, "responses": results}))
    else:
        click.echo("SUCCESS" if r.succeeded else "FAILURE")
        for x in results:
            click.echo(json.dumps(x))


def _parse_txn(spec: dict[str, Any]) -> tuple[list[Any], list[Any], list[Any]]:
    from raftkv.kv.commands import Compare, DeleteRange, Put, Range
    from raftkv.kv.keys import prefix_end

    def compare(c: dict[str, Any]) -> Any:
        target = c["target"]
        value = c["value"]
        return Compare(c["key"].encode(), target, c.get("op", "="), value.encode() if target == "value" else int(value))

    def op(o: dict[str, Any]) -> Any:
        (kind, a), *rest = o.items()
        if rest:
            raise ValueError(f"one operation per object, got {sorted(o)}")
        key = a["key"].encode()
        end = prefix_end(key) if a.get("prefix") else None
        if kind == "put":
            return Put(key, a["value"].encode())
        if kind == "delete":
            return DeleteRange(key, end)
        if kind == "get":
            return Range(key, end)
        raise ValueError(f"unknown operation {kind!r} (use put, delete or get)")

    return (
        [compare(c) for c in spec.get("compare", [])],
        [op(o) for o in spec.get("success", [])],
        [op(o) for o in spec.get("failure", [])],
    )


def _op_result_json(r: Any) -> dict[str, Any]:
    from raftkv.kv.commands import DeleteResult, PutResult

    if isinstance(r, PutResult):
        return {"put": {"revision": r.revision}}
    if isinstance(r, DeleteResult):
        return {"delete": {"deleted": r.deleted, "revision": r.revision}}
    return {"get": {"kvs": [_kv_json(kv) for kv in r.kvs], "count": r.count}}


@click.command()
@endpoints_option
@click.argument("revision", type=int)
@json_option
@_kv_timeout
def compaction(endpoints: str | None, revision: int, as_json: bool, timeout: float) -> None:
    """Compact the history at REVISION: reads and watches at older revisions are refused from then on."""
    if revision < 1:
        fail(f"REVISION must be >= 1, not {revision}")

    async def op(c: Any) -> Any:
        return await c.compact(revision)

    r = client_call(endpoints, timeout, op)
    if as_json:
        click.echo(json.dumps({"compact_revision": r.compact_revision, "revision": r.revision}))
    else:
        click.echo(f"compacted revision {r.compact_revision}")


@click.command()
@endpoints_option
@click.argument("key")
@click.option("--prefix", is_flag=True, help="Watch every key starting with KEY.")
@click.option("--rev", type=int, default=0, help="Start from this revision (default: from now).")
@json_option
def watch(endpoints: str | None, key: str, prefix: bool, rev: int, as_json: bool) -> None:
    """Print changes to KEY (or a prefix) as they happen, until Ctrl-C."""
    from raftkv.client import connect
    from raftkv.errors import Compacted
    from raftkv.kv.watch import EventType

    addrs = parse_endpoints(endpoints)

    async def run() -> None:
        async with connect(addrs, **tls_options()) as c, c.watch(key, prefix=prefix, start_revision=rev) as w:
            async for ev in w:
                kind = "PUT" if ev.type == EventType.PUT else "DELETE"
                if as_json:
                    click.echo(json.dumps({"type": kind, "revision": ev.kv.mod_revision, "kv": _kv_json(ev.kv)}))
                elif kind == "PUT":
                    click.echo(f"PUT {_text(ev.kv.key)} {_text(ev.kv.value)} (revision {ev.kv.mod_revision})")
                else:
                    click.echo(f"DELETE {_text(ev.kv.key)} (revision {ev.kv.mod_revision})")

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except Compacted as e:
        fail(
            f"revision {rev} is compacted (the oldest revision held is {e.oldest_revision}): watch from it or later",
            code=1,
        )
    except RaftError as e:
        fail(str(e), code=1)
