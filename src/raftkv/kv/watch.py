"""Watch events: a bounded, revision-ordered history and a hook for live watchers.

Theory of operation
-------------------
Every change to a key produces one :class:`Event` (etcd's ``mvccpb.Event``): a PUT carries the new
:class:`~raftkv.kv.commands.KeyValue`, a DELETE a key-value with only ``key`` and ``mod_revision`` (the delete's
revision) set, and both carry ``prev_kv``, the pair before the change (``None`` when a put creates the key). The
events of one revision (one put, one delete-range, one transaction) appear in the order the writes happened.

:class:`WatchHub` keeps the most recent events, at most ``history_events`` of them and at most ``history_bytes``
of their keys and values (previous values included: 10,000 events of 1 MiB values would otherwise hold 20 GB),
and only *whole* revisions:
when it must drop events to stay in bound it drops the oldest revision entirely, so that "every event with
revision >= oldest_revision is held" is exact. :meth:`WatchHub.events_since` answers a watch that starts in the
past (etcd's ``start_revision``); asking for a revision older than that raises
:class:`~raftkv.kv.errors.Compacted`, and the watcher has to re-read and re-watch.

The history is a per-node cache, not replicated state: it starts empty at the state machine's revision when a
node starts or restores a snapshot (so ``oldest_revision == revision + 1``), and two nodes may hold different
amounts of it. The events themselves are identical on every node since they derive from the log.

Live watchers. The state machine calls :meth:`WatchHub.publish` once per applied batch, after the batch is
committed to the backend, with that batch's events; the hub appends them to the history and calls each listener
(the runtime's hook, which forwards to its watch streams) synchronously with them. Because registration and
delivery happen on the same thread as ``apply``, a runtime that calls ``events_since(..., r)`` and then
``add_listener`` without yielding in between misses nothing and sees nothing twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from enum import IntEnum

import msgspec

from raftkv.kv.commands import KeyValue
from raftkv.kv.errors import Compacted
from raftkv.kv.keys import key_in_range

DEFAULT_HISTORY_EVENTS = 10_000
DEFAULT_HISTORY_BYTES = 64 << 20
"""The in-memory window's bound in bytes; a watch from before it is served from the durable history."""


def event_size(e: Event) -> int:
    """The bytes an event holds: its key, its value and its previous value."""
    prev = e.prev_kv
    return len(e.kv.key) + len(e.kv.value) + (len(prev.value) if prev is not None else 0)


class EventType(IntEnum):
    """etcd's ``mvccpb.Event_EventType`` values."""

    PUT = 0
    DELETE = 1


class Event(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One change to one key, at revision ``kv.mod_revision``."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


Listener = Callable[[Sequence[Event]], None]
"""Called with each applied batch's events, in revision order. Must not raise: the batch is already applied."""


class WatchHub:
    """The event history of one state machine and its live listeners (see the module docstring)."""

    __slots__ = (
        "_bytes",
        "_compact_revision",
        "_events",
        "_history_bytes",
        "_history_events",
        "_listeners",
        "_oldest_revision",
        "_revision",
    )

    def __init__(
        self,
        revision: int = 0,
        history_events: int = DEFAULT_HISTORY_EVENTS,
        history_bytes: int = DEFAULT_HISTORY_BYTES,
    ) -> None:
        if history_events < 0:
            raise ValueError(f"history_events must be >= 0, got {history_events}")
        self._history_events = history_events
        self._history_bytes = history_bytes
        self._events: deque[Event] = deque()
        self._bytes = 0
        """``sum(event_size(e) for e in _events)``."""
        self._listeners: list[Listener] = []
        self._revision = revision
        self._oldest_revision = revision + 1
        """Every event with a revision >= this one (and <= ``_revision``) is in ``_events``."""
        self._compact_revision = 0
        """The store's compaction revision: no watch may start below it, even where events are still held."""

    @property
    def revision(self) -> int:
        """The store revision the history reaches."""
        return self._revision

    @property
    def oldest_revision(self) -> int:
        """The oldest revision whose events are all held; ``revision + 1`` when the history is empty."""
        return self._oldest_revision

    @property
    def compact_revision(self) -> int:
        return self._compact_revision

    def __len__(self) -> int:
        return len(self._events)

    def compact(self, revision: int) -> None:
        """The store compacted its history at ``revision``: refuse watches from below it (as the store does),
        and drop the held events they alone could want."""
        self._compact_revision = max(self._compact_revision, revision)
        events = self._events
        while events and events[0].revision < self._compact_revision:
            self._bytes -= event_size(events.popleft())
        if self._oldest_revision < self._compact_revision:
            self._oldest_revision = min(self._compact_revision, self._revision + 1)

    def reset(self, revision: int) -> None:
        """Drop the history (after a snapshot restore or a rollback): it starts again at ``revision``."""
        self._events.clear()
        self._bytes = 0
        self._revision = revision
        self._oldest_revision = revision + 1
        self._compact_revision = 0

    def publish(self, events: Sequence[Event], revision: int) -> None:
        """Record a committed batch's ``events`` (which end at store revision ``revision``); notify listeners."""
        self._revision = revision
        if events:
            history = self._events
            history.extend(events)
            self._bytes += sum(map(event_size, events))
            # Drop whole revisions from the front, so that oldest_revision stays exact: the shortest prefix that
            # brings the history within bounds and ends at a revision boundary. (This runs for every applied
            # batch on every replica once the history is full.)
            if len(history) > self._history_events or self._bytes > self._history_bytes:
                popleft = history.popleft
                size = self._bytes
                dropped = 0
                while history and (len(history) > self._history_events or size > self._history_bytes):
                    e = popleft()
                    size -= event_size(e)
                    dropped = e.revision
                while history and history[0].revision == dropped:
                    size -= event_size(popleft())
                self._bytes = size
                self._oldest_revision = dropped + 1
            for listener in list(self._listeners):
                listener(events)
        if not self._events:
            self._oldest_revision = revision + 1

    def events_since(self, key: bytes, range_end: bytes | None, start_revision: int) -> list[Event]:
        """Held events for keys in ``(key, range_end)`` with revision ``>= start_revision``, oldest first.

        ``start_revision <= 0`` means "from now" (etcd): the result is empty and the watcher relies on listeners.
        Raises :class:`Compacted` if events at ``start_revision`` may have been dropped.
        """
        if start_revision <= 0 or start_revision > self._revision:
            return []
        if start_revision < self._compact_revision:
            raise Compacted(start_revision, self._compact_revision)
        if start_revision < self._oldest_revision:
            raise Compacted(start_revision, self._oldest_revision)
        # Walk back from the newest event: resuming watchers usually ask for the recent past.
        found: list[Event] = []
        for event in reversed(self._events):
            if event.kv.mod_revision < start_revision:
                break
            if key_in_range(event.kv.key, key, range_end):
                found.append(event)
        found.reverse()
        return found

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every future batch of events; returns a function that removes it."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove
