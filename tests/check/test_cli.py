"""``python -m raftkv.check``: one line out, the verdict in the exit code, the HTML artifact on request."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from raftkv.check import dump_jsonl, get, put
from raftkv.check.__main__ import main
from raftkv.check.gen import generate

LEGAL = [put(1, "x", "a", 0, 1), get(2, "x", "a", 2, 3)]
STALE = [put(1, "x", "a", 0, 1), put(1, "x", "b", 2, 3), get(2, "x", "a", 4, 5)]


def write(path: Path, history: list) -> Path:  # type: ignore[type-arg]
    with path.open("w") as fh:
        dump_jsonl(history, fh)
    return path


def test_linearizable_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(write(tmp_path / "h.jsonl", LEGAL))]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: linearizable: 2 operations on 1 key") and out.count("\n") == 1


def test_not_linearizable_exits_1_with_a_one_line_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    html = tmp_path / "out.html"
    assert main([str(write(tmp_path / "h.jsonl", STALE)), "--html", str(html)]) == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.startswith("ILLEGAL: key 'x' is not linearizable")
    assert "#2 (line 3) client 2 get 'x' -> 'a'" in out
    assert html.read_text().startswith("<!doctype html>")


def test_bad_input_exits_2_naming_the_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "h.jsonl", LEGAL)
    with path.open("a") as fh:
        fh.write(json.dumps({"client": 1, "f": "cas", "key": "x", "value": "b", "output": {}, "call": 4, "return": 5}))
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {path}:3: cas needs 'expected'\n"


def test_a_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_unknown_within_the_timeout_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path / "h.jsonl", generate(1, ops=4000, clients=10, keys=1).history)
    assert main([str(path), "--timeout", "1e-9"]) == 2
    assert capsys.readouterr().out.startswith("UNKNOWN: unknown: the time budget (1e-09 s) ran out")


def test_standard_input_and_the_register_model(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    buf = io.StringIO()
    dump_jsonl([put(1, "x", "a", 0, 1), get(2, "y", "a", 2, 3)], buf)
    monkeypatch.setattr(sys, "stdin", io.StringIO(buf.getvalue()))
    assert main(["-", "--model", "register"]) == 0
    monkeypatch.setattr(sys, "stdin", io.StringIO(buf.getvalue()))
    assert main(["-"]) == 1
    capsys.readouterr()


def test_python_dash_m(tmp_path: Path) -> None:
    path = write(tmp_path / "h.jsonl", STALE)
    p = subprocess.run(
        [sys.executable, "-m", "raftkv.check", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert p.returncode == 1, p.stderr
    assert p.stdout.startswith("ILLEGAL: key 'x'")
