"""The client's one error table: every wire error code maps to a class of raftkv.errors; none is left out."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import raftkv.errors
import raftkv.transport
from raftkv.client.errors import ERRORS, RETRYABLE, RETRYABLE_CODES, check, error_for
from raftkv.errors import Compacted, InternalError, NotLeader, RaftError, Timeout, WrongCluster
from raftkv.transport.wire import schema


def _schema_codes() -> set[str]:
    return set(schema.ErrorCode.schema.enumerants) - {"none"}


def test_every_wire_error_code_maps_to_a_class_of_raftkv_errors() -> None:
    codes = _schema_codes()
    assert len(codes) >= 11  # the scan really read the enum
    missing = codes - set(ERRORS)
    assert not missing, f"wire error codes without a client exception: {sorted(missing)}"
    assert set(ERRORS) == codes, f"the table maps codes the schema does not have: {sorted(set(ERRORS) - codes)}"
    for code, cls in ERRORS.items():
        assert issubclass(cls, RaftError), code
        assert getattr(raftkv.errors, cls.__name__) is cls, f"{code}: {cls} is not raftkv.errors.{cls.__name__}"


def test_the_loaded_schema_is_the_capnp_file() -> None:
    # The enum as written in the .capnp file, so that a code added there cannot hide from the test above.
    text = (Path(raftkv.transport.__file__).parent / "raftkv.capnp").read_text()
    body = re.search(r"enum ErrorCode \{(.*?)\}", text, re.S)
    assert body is not None
    written = set(re.findall(r"^\s*(\w+) @\d+;", body.group(1), re.M)) - {"none"}
    assert written == _schema_codes()


def test_retryable_codes_are_the_ones_whose_outcome_is_unknown() -> None:
    assert frozenset({"timeout", "proposalDropped", "stopped"}) == RETRYABLE_CODES
    assert "notLeader" not in RETRYABLE_CODES  # followed, not retried
    for code, cls in ERRORS.items():
        # The retry loop decides by class: a final code must not produce a retryable one.
        assert issubclass(cls, RETRYABLE) == (code in RETRYABLE_CODES), code


def test_not_leader_carries_the_leader_and_its_address() -> None:
    error = schema.Error.new_message(code="notLeader", message="", leaderId=2, leaderAddress="127.0.0.1:9002")
    with pytest.raises(NotLeader) as caught:
        check(error.as_reader())
    assert caught.value.leader_hint == 2
    assert caught.value.leader_address == "127.0.0.1:9002"
    assert "127.0.0.1:9002" in str(caught.value)


def test_compacted_carries_both_revisions_and_other_codes_their_message() -> None:
    with pytest.raises(Compacted) as caught:
        check(schema.Error.new_message(code="compacted").as_reader(), requested_revision=3, oldest_revision=40)
    assert (caught.value.requested_revision, caught.value.oldest_revision) == (3, 40)
    with pytest.raises(WrongCluster, match="wrongCluster: this is cluster 'a'"):
        check(schema.Error.new_message(code="wrongCluster", message="this is cluster 'a', not 'b'").as_reader())
    with pytest.raises(Timeout):
        check(schema.Error.new_message(code="timeout").as_reader())
    check(schema.Error.new_message(code="none").as_reader())  # no error: nothing raised


def test_a_code_from_a_newer_node_is_a_final_internal_error() -> None:
    e = error_for("someFutureCode", "what happened")
    assert isinstance(e, InternalError) and not isinstance(e, RETRYABLE)
    assert "someFutureCode" in str(e)
