from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from raftkv.kv import Backend, KVStateMachine
from tests.kv.kvtestlib import BACKEND_FACTORIES, Feeder


@pytest.fixture(params=sorted(BACKEND_FACTORIES))
def make_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Backend]]:
    """A factory of fresh backends of one kind (each in its own directory); all closed at teardown."""
    made: list[Backend] = []
    factory = BACKEND_FACTORIES[request.param]

    def make() -> Backend:
        backend = factory(tmp_path / f"b{len(made)}")
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


@pytest.fixture
def backend(make_backend: Callable[[], Backend]) -> Backend:
    return make_backend()


@pytest.fixture
def sm(backend: Backend) -> KVStateMachine:
    return KVStateMachine(backend)


@pytest.fixture
def feed(sm: KVStateMachine) -> Feeder:
    return Feeder(sm)
