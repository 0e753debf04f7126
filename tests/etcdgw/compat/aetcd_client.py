"""aetcd (asyncio) against raftkv's etcd gateway (run in its own process by
tests/etcdgw/test_compat_clients.py): each call's result printed as one JSON object."""

import asyncio
import json
import sys

import aetcd  # type: ignore[import-not-found]


async def main() -> None:
    host, port = sys.argv[1].rsplit(":", 1)
    prefix = sys.argv[2].encode()  # a prefix of its own for each run
    out: dict[str, object] = {}
    async with aetcd.Client(host=host, port=int(port), timeout=10) as c:
        await c.put(prefix + b"/a", b"1")
        got = await c.get(prefix + b"/a")
        out["get"] = [got.value.decode(), got.mod_revision, got.version]
        ok, _responses = await c.transaction(
            compare=[c.transactions.value(prefix + b"/a") == b"1"],
            success=[c.transactions.put(prefix + b"/a", b"2")],
            failure=[],
        )
        out["txn"] = [ok, (await c.get(prefix + b"/a")).value.decode()]
        lease = await c.lease(30)
        await c.put(prefix + b"/leased", b"x", lease=lease)
        out["lease"] = [
            await lease.granted_ttl(),
            [k.decode().removeprefix(prefix.decode()) for k in await lease.keys()],
        ]
        await lease.refresh()
        await lease.revoke()
        out["after_revoke"] = await c.get(prefix + b"/leased")
        lock = c.lock(prefix + b"-lock", ttl=10)
        await lock.acquire()
        out["lock"] = [True, await lock.is_acquired()]
        await lock.release()
        out["released"] = await lock.is_acquired()
        watch = await c.watch(prefix + b"/w")
        await c.put(prefix + b"/w", b"seen")
        async for event in watch:
            out["watch"] = [event.kv.key.decode().removeprefix(prefix.decode()), event.kv.value.decode()]
            break
        await watch.cancel()
        out["members"] = sorted([m.id async for m in c.members()])
    print(json.dumps(out))


asyncio.run(main())
