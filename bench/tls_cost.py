"""What TLS costs: the same 3-node cluster in plaintext and with mutual TLS on both ports, side by side.

    PYTHONPATH=. .venv/bin/python bench/tls_cost.py [--rounds 3] [--duration 6]

For each round, two fresh clusters of three ``raftkv serve`` processes (fsync on), one after the other,
alternating which goes first: plaintext, and TLS with ``--client-cert-auth`` on the client port and mutual TLS
on the peer port (certificates made for the run by ``tests/tlscerts.py``; one node certificate naming
127.0.0.1 and ``node-1..3``). Each runs ``raftkv bench`` (its client with ``--cacert --cert --key`` for TLS)
for puts at 64 in flight and sequential puts, and the script prints one line per run and the medians per mode,
with the CPU the three nodes spent per operation. Issue 17's aim: TLS within 20% of plaintext.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.local_runs import bench_shapes, interleaved, wait_leader
from tests.tlscerts import CA

from raftkv.cli.local import LocalCluster

SHAPES = [("put@64", ["--clients", "64"]), ("sequential", ["--clients", "1"])]


def run(mode: str, root: Path, pki: dict[str, Path], duration: float) -> dict[str, tuple[float, float, float]]:
    server = client = []
    if mode == "tls":
        server = ["--cert-file", str(pki["cert"]), "--key-file", str(pki["key"])]
        server += ["--trusted-ca-file", str(pki["ca"]), "--client-cert-auth"]
        server += ["--peer-cert-file", str(pki["cert"]), "--peer-key-file", str(pki["key"])]
        server += ["--peer-trusted-ca-file", str(pki["ca"])]
        client = ["--cacert", str(pki["ca"]), "--cert", str(pki["client"]), "--key", str(pki["client_key"])]
    lc = LocalCluster(root, cluster_id="tlsbench", extra_args=tuple(server))
    lc.start_all()
    try:
        wait_leader(lc, client, f"the {mode} cluster")
        return bench_shapes(lc, SHAPES, duration, client)
    finally:
        lc.stop_all()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per shape (default 6)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="raftkv-tls-bench-") as tmp:
        ca = CA.make(Path(tmp) / "pki")
        names = ("localhost", "node-1", "node-2", "node-3")
        node = ca.issue(Path(tmp) / "pki", "node", dns=names)
        alice = ca.issue(Path(tmp) / "pki", "alice")
        pki = {"ca": ca.path, "cert": node.cert, "key": node.key, "client": alice.cert, "client_key": alice.key}
        shapes = [name for name, _x in SHAPES]
        interleaved(
            ("plain", "tls"),
            a.rounds,
            shapes,
            lambda mode, rnd: run(mode, Path(tmp) / f"{mode}-{rnd}", pki, a.duration),
        )


if __name__ == "__main__":
    main()
