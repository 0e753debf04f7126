"""The ``raftkv`` command, one module per topic.

``serve`` runs a node (``serve.py``); ``status`` and ``ping`` ask nodes about themselves (``admin.py``); ``put``,
``get``, ``del``, ``txn``, ``watch`` and ``compaction`` are the key-value commands (``kv.py``); ``lease ...``
the lease commands (``lease.py``); ``lock`` and ``elect`` the coordination recipes (``coordination.py``);
``member list|add|promote|remove`` and ``leader transfer`` change the membership (``member.py``); ``user``,
``role`` and ``auth`` manage users, roles and permissions (``auth.py``);
``snapshot save|restore`` takes
and restores backups (``snapshot.py``); ``cluster up`` runs a local cluster of processes (``cluster.py``, over
``local.py``); ``bench`` loads a cluster (``bench.py``). Shared options and the error convention are in
``common.py``. Client commands never import the server stack: the topics import it lazily, inside ``serve``.

Exit codes scripts can rely on: 0 success; 1 the operation failed (unreachable, no leader, a node failure);
2 bad usage or configuration (one line on stderr says what and how to fix it).
"""

from __future__ import annotations

import click

from raftkv.cli.admin import ping, status
from raftkv.cli.auth import auth, role, user
from raftkv.cli.bench import bench
from raftkv.cli.cluster import cluster
from raftkv.cli.coordination import elect, lock
from raftkv.cli.kv import compaction, delete, get, put, txn, watch
from raftkv.cli.lease import lease
from raftkv.cli.member import leader, member
from raftkv.cli.serve import serve
from raftkv.cli.snapshot import snapshot


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="raftkv")
def main() -> None:
    """raftkv: a Raft-replicated key-value store. Start nodes with `serve`; inspect them with `status`."""


for _command in (
    serve,
    status,
    ping,
    member,
    leader,
    put,
    get,
    delete,
    txn,
    watch,
    compaction,
    lease,
    lock,
    elect,
    snapshot,
    user,
    role,
    auth,
    cluster,
    bench,
):
    main.add_command(_command)

__all__ = ["main"]
