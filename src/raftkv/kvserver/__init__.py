"""The key-value server: wire-neutral services on the runtime, the front ends on them, and their assembly.

* ``service.py`` — ``KVService``: execute a client's batch (writes proposed at once, reads behind one ReadIndex
  barrier); ``watches.py`` — ``WatchRegistry`` over a ``WatchSink``; ``admin.py`` — status and backups.
* ``capnp_api.py`` — the Cap'n Proto front end of the client port (``Client``: ``Admin``, ``Replicated``, ``Kv``).
  Front ends use only the public methods of the runtime and of the services; more (an etcd gRPC gateway, HTTP
  for a dashboard) go beside it.
* ``app.py`` — ``KVServer``: a running server assembled from a ``NodeConfig`` (what ``raftkv serve`` runs).
"""

from raftkv.kvserver.app import KVServer

__all__ = ["KVServer"]
