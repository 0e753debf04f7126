"""Bad configuration: one clear line on stderr, exit code 2, nothing started, nothing damaged."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.runtime.cluster import free_ports

pytestmark = pytest.mark.e2e


def serve(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftkv.cli", "serve", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def base(tmp: Path, node: int = 1, data: str = "d1", cluster: str = "c") -> list[str]:
    p = free_ports(3)
    return [
        "--id", str(node),
        "--cluster-id", cluster,
        "--data-dir", str(tmp / data),
        "--listen-peer", f"127.0.0.1:{p[0]}",
        "--listen-client", f"127.0.0.1:{p[1]}",
        "--peers", f"1=127.0.0.1:{p[0]},2=127.0.0.1:{p[2]}",
    ]  # fmt: skip


def one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("raftkv: error: ")
    return lines[0]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"--peers": "1=127.0.0.1:7001,1=127.0.0.1:7002"}, "lists node 1 twice"),
        ({"--peers": "1=127.0.0.1:7001,2=127.0.0.1:7001"}, "the same address"),
        ({"--peers": "2=127.0.0.1:7002,3=127.0.0.1:7003"}, "does not list this node (id 1)"),
        ({"--peers": "1=localhost"}, "is not HOST:PORT"),
        ({"--peers": "x=127.0.0.1:7001"}, "is not an integer"),
        ({"--listen-peer": "127.0.0.1:99999"}, "outside 1..65535"),
        ({"--cluster-id": "bad id!"}, "--cluster-id"),
        ({"--id": "0"}, "must be >= 1"),
        ({"--snapshot-growth": "-1"}, "--snapshot-growth must be between 0 and 100"),
        ({"--auto-compaction-retention": "1h"}, "in revision mode, a number of revisions to keep (0: off)"),
        (
            {"--auto-compaction-mode": "periodic", "--auto-compaction-retention": "soon"},
            "in periodic mode, a duration such as 90s, 30m or 1h",
        ),
    ],
)
def test_invalid_settings_are_refused_with_one_line(tmp_path: Path, change: dict[str, str], expected: str) -> None:
    args = base(tmp_path)
    for flag, value in change.items():
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    line = one_error_line(serve(*args))
    assert expected in line
    assert not (tmp_path / "d1").exists(), "nothing may be created for an invalid configuration"


def test_missing_required_flag(tmp_path: Path) -> None:
    args = base(tmp_path)
    i = args.index("--data-dir")
    del args[i : i + 2]
    assert "--data-dir is required" in one_error_line(serve(*args))


def test_port_in_use(tmp_path: Path) -> None:
    args = base(tmp_path)
    port = int(args[args.index("--listen-peer") + 1].rsplit(":", 1)[1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        line = one_error_line(serve(*args))
    assert f"port {port} is already in use" in line


def test_foreign_data_dir_is_refused(tmp_path: Path) -> None:
    # Node 1 of cluster "c" claims d1 on its first start (it stops at once: SIGTERM after it is serving).
    first = subprocess.Popen(
        [sys.executable, "-m", "raftkv.cli", "serve", *base(tmp_path)], stderr=subprocess.PIPE, text=True
    )
    try:
        marker = tmp_path / "d1" / "raftkv-identity.json"

        deadline = time.monotonic() + 15
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists()
    finally:
        first.terminate()
        first.wait(timeout=10)
    before = sorted(p.name for p in (tmp_path / "d1").rglob("*"))
    assert "belongs to node 1 of cluster 'c'" in one_error_line(serve(*base(tmp_path, node=2)))
    assert "belongs to node 1 of cluster 'c'" in one_error_line(serve(*base(tmp_path, cluster="other")))
    assert sorted(p.name for p in (tmp_path / "d1").rglob("*")) == before, "the data dir must be left untouched"


def test_config_file_with_unknown_setting(tmp_path: Path) -> None:
    cfg = tmp_path / "node.toml"
    cfg.write_text("id = 1\nbogus = true\n")
    assert "unknown setting(s) bogus" in one_error_line(serve("--config", str(cfg)))


def test_config_file_provides_settings(tmp_path: Path) -> None:
    p = free_ports(2)
    cfg = tmp_path / "node.toml"
    cfg.write_text(
        f'id = 1\ndata_dir = "{tmp_path / "d"}"\nlisten_peer = "127.0.0.1:{p[0]}"\n'
        f'peers = {{ 1 = "127.0.0.1:{p[0]}", 2 = "127.0.0.1:{p[0]}" }}\n'
    )
    # Everything parsed from the file; the duplicate address it contains is then reported.
    assert "the same address" in one_error_line(serve("--config", str(cfg)))
