"""Property-based fuzzing of every decoder that reads bytes from outside (issue 17).

Each property feeds a decoder bytes it did not make (random, truncated, or a valid input with some bytes
overwritten) and checks it fails only in its documented way: a typed error or a refusal, never another
exception, never a hang, never garbage accepted as data. The budget is ``RAFTKV_FUZZ_EXAMPLES`` examples per
property: small in CI, large in ``make fuzz``. A crash found here becomes an explicit ``@example``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from raftkv.check.history import HistoryError, parse_jsonl
from raftkv.errors import ConfigError
from raftkv.kv.commands import Put, decode_command, decode_result, encode_command
from raftkv.kv.errors import CommandError
from raftkv.kvserver.frames_api import ExecuteFrames
from raftkv.raft.messages import AppendEntries
from raftkv.raft.types import ConfState, Entry, Index, NodeId, SnapshotMeta, Term
from raftkv.runtime.config import build_config
from raftkv.storage.errors import StorageError
from raftkv.storage.snapshots import DamagedSnapshot, SnapshotStore, read_info
from raftkv.storage.wal import WAL
from raftkv.transport.address import Address
from raftkv.transport.codec import DecodeError, encode_into, pack_entries, unpack_entries
from raftkv.transport.frames import FRAME_LEN, FrameBuffer, FrameTooLarge, frame
from raftkv.transport.peers import Transport
from raftkv.transport.wire import schema

_dirs = itertools.count()
EXAMPLES = int(os.environ.get("RAFTKV_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """``data`` truncated, or with a run of bytes overwritten, or with bytes appended."""
    n = len(data)
    cut = st.integers(0, max(0, n - 1)).map(lambda k: data[:k])
    overwrite = st.tuples(st.integers(0, max(0, n - 1)), st.binary(min_size=1, max_size=16)).map(
        lambda t: data[: t[0]] + t[1] + data[t[0] + len(t[1]) :]
    )
    extend = st.binary(min_size=1, max_size=64).map(lambda tail: data + tail)
    return st.one_of(cut, overwrite, extend)


def _entries() -> tuple[Entry, ...]:
    return tuple(Entry(Term(2), Index(5 + k), b"x" * k) for k in range(4))


# --- the frame planes --------------------------------------------------------------------------------------


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=8), st.data())
def test_frames_split_anywhere_come_back_whole(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    buf, got, last = FrameBuffer(limit=1000), [], 0
    for c in [*cuts, len(stream)]:
        got += buf.feed(stream[last:c])
        last = c
    assert got == payloads and not buf.buf


@FUZZ
@given(st.binary(max_size=2000))
@example(struct.pack("<I", 2**31))
def test_random_bytes_give_frames_or_frame_too_large(data: bytes) -> None:
    buf = FrameBuffer(limit=1 << 16)
    try:
        frames = buf.feed(data)
    except FrameTooLarge:
        return
    assert sum(FRAME_LEN.size + len(f) for f in frames) + len(buf.buf) == len(data)


class _Executor:
    def __init__(self) -> None:
        self.calls: list[Sequence[tuple[bytes, bool]]] = []

    async def execute_into(self, cluster: str, requests: Sequence[tuple[bytes, bool]], timeout_ms: int, r: Any) -> None:
        self.calls.append(requests)


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def write(self, data: Any) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _valid_call() -> bytes:
    msg = schema.ExecuteCall.new_message(id=7, timeoutMs=1000)
    msg.header.clusterId = "c"
    items = msg.init("requests", 1)
    items[0].command = encode_command(Put(b"k", b"v"))
    return bytes(msg.to_bytes())


@FUZZ
@given(st.one_of(st.binary(max_size=400), _mutations(_valid_call())))
@example(b"\x00\x00\x00\x00\xff\xff\xff\x7f")  # one segment, announced gigantic
@example(b"\xff\xff\xff\x7f")  # four billion segments
def test_the_client_plane_refuses_calls_that_do_not_decode_and_nothing_else(data: bytes) -> None:
    async def run() -> None:
        executor = _Executor()
        server = ExecuteFrames(executor, node_id=1)
        transport = _Transport()
        server.connection_made(transport)
        server.data_received(b"RKC1" + frame(data))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        # Either the call decoded (and reached the executor with bytes, as bytes), or the connection closed.
        assert transport.closed or len(executor.calls) == 1
        for requests in executor.calls:
            assert all(isinstance(c, bytes) and isinstance(s, bool) for c, s in requests)

    asyncio.run(run())


def _valid_batch() -> bytes:
    mb = schema.MessageBatch.new_message()
    mb.header.clusterId = "c"
    setattr(mb.header, "from", 2)
    mb.header.to = 1
    msgs = mb.init("messages", 1)
    ae = AppendEntries(Term(1), NodeId(2), NodeId(1), Index(4), Term(1), _entries(), Index(4))
    encode_into(msgs[0], ae)
    return bytes(mb.to_bytes())


@FUZZ
@given(st.one_of(st.binary(max_size=400), _mutations(_valid_batch())))
def test_the_peer_plane_delivers_or_refuses_a_frame_and_never_raises(data: bytes) -> None:
    delivered: list[list[Any]] = []
    t = Transport(
        NodeId(1),
        "c",
        {NodeId(1): Address("127.0.0.1", 1), NodeId(2): Address("127.0.0.1", 2)},
        delivered.append,
        lambda: 0,
    )
    ok = t._deliver_frame(data)
    assert isinstance(ok, bool)
    assert not ok or t.counters.refused == 0


# --- what the KV store and the core decode ----------------------------------------------------------------


@FUZZ
@given(st.one_of(st.binary(max_size=200), _mutations(encode_command(Put(b"key", b"value", lease=3)))))
def test_commands_and_results_decode_or_raise_command_error(data: bytes) -> None:
    for decode in (decode_command, decode_result):
        with contextlib.suppress(CommandError):
            decode(data)


@FUZZ
@given(st.one_of(st.binary(max_size=300), _mutations(pack_entries(_entries()))))
def test_packed_entries_unpack_strictly_or_raise_decode_error(data: bytes) -> None:
    try:
        entries = unpack_entries(data, prev_index=4)
    except DecodeError:
        return
    indexes = [int(e.index) for e in entries]
    assert indexes == list(range(5, 5 + len(entries)))  # contiguous from prev_index + 1


# --- what a node reads from its disk ------------------------------------------------------------------------


@FUZZ
@given(st.data())
def test_a_damaged_wal_opens_to_a_prefix_of_what_was_written_or_refuses(tmp_path: Path, data: st.DataObject) -> None:
    d = tmp_path / f"wal-{next(_dirs)}"  # a fresh directory per example (a drawn name could repeat)
    written = [Entry(Term(1), Index(i), b"entry %d" % i) for i in range(1, 21)]
    w = WAL.open(d)
    w.append(written)
    w.sync()
    w.close()
    segment = sorted(p for p in d.iterdir() if p.is_file() and p.stat().st_size > 0)[0]
    raw = segment.read_bytes()
    segment.write_bytes(data.draw(_mutations(raw)))
    try:
        w = WAL.open(d)
    except StorageError:
        return  # refused, with a typed error: never "repaired" by guessing
    try:
        last = int(w.last_index())
        got = w.entries(Index(1), Index(last + 1)) if last else []
        assert list(got) == written[:last]  # nothing invented, nothing out of order
    finally:
        w.close()


@FUZZ
@given(st.data())
def test_a_damaged_snapshot_file_is_refused_with_a_typed_error(tmp_path: Path, data: st.DataObject) -> None:
    d = tmp_path / f"snap-{next(_dirs)}"
    store = SnapshotStore.open(d)
    info = store.save(SnapshotMeta(Index(10), Term(1), ConfState.of_voters((NodeId(1),))), b"state" * 50)
    path = Path(info.path)
    path.write_bytes(data.draw(_mutations(path.read_bytes())))
    try:
        got = read_info(str(path))
    except (DamagedSnapshot, StorageError):
        return
    assert (int(got.meta.index), int(got.meta.term)) == (10, 1)


# --- what an operator hands a tool ---------------------------------------------------------------------------


@FUZZ
@given(st.text(max_size=300))
@example('{"type": "invoke", "f": "put", "key": "k"}')
def test_the_checker_reads_a_history_or_names_the_bad_line(text: str) -> None:
    try:
        parse_jsonl(text.splitlines())
    except HistoryError as e:
        assert "line" in str(e) or "<history>" in str(e)


@FUZZ
@given(st.one_of(st.text(max_size=200), st.sampled_from(['id = 1\npeers = "x"\n', "id = [1]\n", "tick_ms = 'a'\n"])))
def test_a_config_file_loads_or_is_one_config_error(tmp_path: Path, text: str) -> None:
    f = tmp_path / "node.toml"
    f.write_text(text, encoding="utf-8")
    try:
        cfg = build_config({}, f)
        cfg.validate(check_ports=False)
    except ConfigError as e:
        assert "\n" not in str(e)


# --- authentication tokens ------------------------------------------------------------------------------------


def _token_store() -> tuple[Any, str]:
    from raftkv.kv.auth import AuthState, AuthStore, UserRecord
    from raftkv.kvserver.auth import Authenticator

    store = AuthStore(AuthState(True, 3, b"k" * 32, (UserRecord("alice", "h", (), 2),)))
    auth = Authenticator(lambda: store, 300)
    return auth, auth.issue("alice")


_AUTH, _GOOD_TOKEN = _token_store()


@FUZZ
@given(st.one_of(st.text(max_size=200), _mutations(_GOOD_TOKEN.encode()).map(lambda b: b.decode("latin-1"))))
def test_a_token_that_is_not_one_we_issued_is_refused_with_invalid_token(token: str) -> None:
    """A token is bytes from outside: anything but a token this cluster signed is ``INVALID_TOKEN``, never a
    crash and never a user."""
    from raftkv.kv.errors import AuthError, ErrorCode

    if token == _GOOD_TOKEN:
        assert _AUTH.identify(token, None) == "alice"
        return
    try:
        user = _AUTH.identify(token, None)
    except AuthError as e:
        assert e.code == ErrorCode.INVALID_TOKEN, e
    else:
        assert not token and user == "", f"{token!r} was taken for user {user!r}"


def test_a_token_with_characters_appended_to_its_signature_is_refused() -> None:
    """Found by the fuzz test above: base64 decoding skipped the stray characters and the token passed."""
    from raftkv.kv.errors import AuthError

    for tail in ("\x02\x02c", "=", "\n", "-"):
        with contextlib.suppress(AuthError):
            _AUTH.identify(_GOOD_TOKEN + tail, None)
            raise AssertionError(f"a token with {tail!r} appended was accepted")
