"""The node runtime: one Raft server on asyncio, generic over the state machine it replicates.

``RaftNode`` (``node.py``) joins the consensus core, the write-ahead log and the peer transport; ``NodeConfig``
(``config.py``) is its validated configuration; ``statemachine.py`` holds the ``StateMachine`` protocol and the
optional protocols a state machine may also implement. The runtime imports nothing of the key-value store or of
any client-facing protocol: ``examples/counter.py`` embeds it with a state machine of its own.
"""

from raftkv.runtime.config import NodeConfig
from raftkv.runtime.node import NodeStatus, RaftNode
from raftkv.runtime.statemachine import KeepsAppliedIndex, StateMachine, StreamsSnapshots

__all__ = ["KeepsAppliedIndex", "NodeConfig", "NodeStatus", "RaftNode", "StateMachine", "StreamsSnapshots"]
