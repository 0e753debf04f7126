"""python-etcd3 against raftkv's etcd gateway (run in its own process by tests/etcdgw/test_compat_clients.py):
each call's result printed as one JSON object. Run with PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python (its
generated code predates protobuf 4)."""

import json
import sys

import etcd3  # type: ignore[import-not-found]

host, port = sys.argv[1].rsplit(":", 1)
prefix = sys.argv[2]  # a prefix of its own for each run
c = etcd3.client(host=host, port=int(port), timeout=10)
out: dict[str, object] = {}
c.put(prefix + "/a", "1")
value, meta = c.get(prefix + "/a")
out["get"] = [value.decode(), meta.mod_revision, meta.version]
ok, _responses = c.transaction(
    compare=[c.transactions.value(prefix + "/a") == "1"], success=[c.transactions.put(prefix + "/a", "2")], failure=[]
)
out["txn"] = [ok, c.get(prefix + "/a")[0].decode()]
lease = c.lease(30)
c.put(prefix + "/leased", "x", lease=lease)
out["lease"] = [lease.granted_ttl, [k.decode().removeprefix(prefix) for k in lease.keys]]
lease.refresh()
lease.revoke()
out["after_revoke"] = c.get(prefix + "/leased")[0]
lock = c.lock(prefix + "-lock", ttl=10)
out["lock"] = [lock.acquire(timeout=5), lock.is_acquired()]
lock.release()
out["released"] = lock.is_acquired()
events, cancel = c.watch(prefix + "/w")
c.put(prefix + "/w", "seen")
event = next(events)
out["watch"] = [event.key.decode().removeprefix(prefix), event.value.decode()]
cancel()
out["members"] = sorted(m.id for m in c.members)
print(json.dumps(out))
