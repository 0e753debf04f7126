@0x9c1f5e2a7b3d4c81;
# The raftkv wire schema: node <-> node (Peer) and client -> node (Client).
#
# Every request carries a Header naming the cluster and the sender; a node refuses requests for another
# cluster, from an unknown member, or meant for another node, with a typed Error (never a traceback).

struct Header {
  clusterId @0 :Text;
  from @1 :UInt64;      # the sender's node id (0 for a client)
  to @2 :UInt64;        # the node the sender means to reach (0: whichever answers)
  fromAddress @3 :Text; # peers: where the sender listens for peers, so that a node whose configuration does not
                        # list the sender yet (its log lags the change that added it) can still answer it
  token @4 :Text;       # clients: the token Authenticate gave (empty: none; see raftkv/kvserver/auth.py)
}

enum ErrorCode {
  none @0;
  wrongCluster @1;      # the request names another cluster id
  unknownMember @2;     # the sender is not a member of this cluster
  wrongNode @3;         # the request was meant for another node id (a misconfigured address)
  malformed @4;         # the request could not be decoded
  internal @5;          # a bug on the answering side; the message says what failed
  stopped @6;           # the node is shutting down
  notLeader @7;         # writes (and linearizable reads) go to the leader: see leaderId / leaderAddress
  timeout @8;           # the operation did not complete within its deadline; it may or may not have happened
  proposalDropped @9;   # refused before being appended (e.g. a leadership transfer); safe to retry
  compacted @10;        # a watch asked for history older than what is retained
  invalid @11;          # a request that cannot be executed (e.g. a command that does not decode)
  invalidConfChange @12;    # a membership change that does not apply (an id already a member...): nothing changed
  confChangeInProgress @13; # the previous membership change is not committed yet (or the leader is brand new)
  unauthenticated @14;  # the request's token does not check out (expired, another cluster's...): authenticate again
  permissionDenied @15; # the request's user may not do this (authentication is on; see raftkv/kv/auth.py)
  limitExceeded @16;    # over one of the node's limits (the message names it and its flag): nothing was done
}

struct Error {
  code @0 :ErrorCode;
  message @1 :Text;
  leaderId @2 :UInt64;       # notLeader: the leader this node knows of (0: none known)
  leaderAddress @3 :Text;    # notLeader: that leader's client address, if known
}

# --- Raft messages ------------------------------------------------------------------------------------------
# Log entries of an AppendEntries travel packed in one Data field, not as a List(Entry): pycapnp reads each
# struct field through Python, and 64 entries cost ~160 us to decode as a list versus ~18 us packed
# (measured on this project's machine). Packing, repeated for each entry, little-endian:
#   term :UInt64, index :UInt64, type :UInt8, length :UInt32, data :length bytes

struct AppendEntries {
  term @0 :UInt64;
  prevIndex @1 :UInt64;
  prevTerm @2 :UInt64;
  commit @3 :UInt64;
  entries @4 :Data;
}

struct AppendEntriesResponse {
  term @0 :UInt64;
  index @1 :UInt64;
  reject @2 :Bool;
  hintIndex @3 :UInt64;
  hintTerm @4 :UInt64;
}

struct Heartbeat {
  term @0 :UInt64;
  commit @1 :UInt64;
  context @2 :Data;
}

struct HeartbeatResponse {
  term @0 :UInt64;
  context @1 :Data;
  reject @2 :Bool;         # the heartbeat's commit is beyond our log: we lost acknowledged entries
  lastIndex @3 :UInt64;    # with reject: where our log ends now
}

struct RequestVote {
  term @0 :UInt64;
  lastIndex @1 :UInt64;
  lastTerm @2 :UInt64;
  preVote @3 :Bool;
  transfer @4 :Bool;
}

struct RequestVoteResponse {
  term @0 :UInt64;
  granted @1 :Bool;
  preVote @2 :Bool;
}

struct TimeoutNow {
  term @0 :UInt64;
}

struct Message {
  union {
    appendEntries @0 :AppendEntries;
    appendEntriesResponse @1 :AppendEntriesResponse;
    heartbeat @2 :Heartbeat;
    heartbeatResponse @3 :HeartbeatResponse;
    requestVote @4 :RequestVote;          # pre-vote and vote (preVote flag)
    requestVoteResponse @5 :RequestVoteResponse;
    timeoutNow @6 :TimeoutNow;
  }
}

struct Member {
  # One server of a cluster configuration (raftkv.raft.types.Member): how to reach it, and whether it votes.
  id @0 :UInt64;
  peerAddress @1 :Text;     # "" when unknown
  clientAddress @2 :Text;   # "" when unknown
  learner @3 :Bool;         # receives the log, never votes nor counts toward a quorum
}

struct SnapshotChunk {
  # One piece of a snapshot streamed by the leader: `offset` and `data` are
  # the bytes of the snapshot file from that offset; `done` marks the last chunk, which carries the metadata
  # and the CRC32C of the whole file, so the follower installs it atomically only once it is complete and intact.
  # `conf` is the configuration as of lastIndex, members in id order. It replaced `voters @3 :List(UInt64)` with
  # the field number kept, but peers of different raftkv versions are not supported across that change (the
  # on-disk formats changed with it): every node of a cluster runs the same version.
  term @0 :UInt64;
  lastIndex @1 :UInt64;
  lastTerm @2 :UInt64;
  conf @3 :List(Member);
  offset @4 :UInt64;
  data @5 :Data;
  done @6 :Bool;
  crc32c @7 :UInt32;
}

struct MessageBatch {
  # One frame of the peer data plane (see `Peer.send` below and raftkv/transport/frames.py): every message
  # queued for one peer, with the same header a `send` call carries.
  messages @0 :List(Message);
  header @1 :Header;
}

struct NodeStatus {
  id @0 :UInt64;
  role @1 :Text;         # "leader" | "follower" | "candidate" | "precandidate" | "dead"
  term @2 :UInt64;
  leader @3 :UInt64;     # 0 when no leader is known
  commit @4 :UInt64;
  applied @5 :UInt64;
  lastIndex @6 :UInt64;
  clusterId @7 :Text;
  peers @8 :List(PeerStatus);
}

struct PeerStatus {
  id @0 :UInt64;
  address @1 :Text;
  match @2 :UInt64;      # leader only: replication progress
  next @3 :UInt64;
  state @4 :Text;        # leader only: "probe" | "replicate" | "snapshot"; otherwise ""
  connected @5 :Bool;    # whether this node's connection to the peer is up
}

struct KvRequest {
  command @0 :Data;        # a raftkv.kv command, msgspec-encoded: Request(...) wrapping a write, or a Range
  serializable @1 :Bool;   # reads only: answer from this node's state, without confirming leadership
}

struct ExecuteCall {
  # One frame of the client data plane (raftkv/kvserver/frames_api.py), client to node: the arguments of
  # `Kv.execute`, and an id the caller picks to match the answer. A frame costs a fraction of a capnp call.
  id @0 :UInt64;
  header @1 :Header;
  requests @2 :List(KvRequest);
  timeoutMs @3 :UInt32;
}

struct ExecuteReturn {
  # The node's answer to the ExecuteCall with the same id (answers may come in any order): `Kv.execute`'s.
  id @0 :UInt64;
  results @1 :List(Data);
  error @2 :Error;
}

# --- interfaces ---------------------------------------------------------------------------------------------

interface Peer {
  # Raft's RPCs travel as one-way messages: the reply to an appendEntries or a requestVote is itself a
  # message sent back later, after the replier's fsync. So one call carries every message queued for this
  # peer (appendEntries and their responses, requestVote and pre-vote, heartbeats, timeoutNow): one call
  # costs ~75 us of CPU in pycapnp whatever it carries.
  # Nodes normally carry these messages as MessageBatch frames on a plain stream instead (the data plane, see
  # raftkv/transport/peers.py): a one-way frame needs no reply, so it costs a quarter of a call. `send` stays
  # for senders configured without frames.
  send @0 (header :Header, messages :List(Message)) -> (error :Error);

  # The seed's echo: returns what it was given, with the answering node's id and term (and where its clients
  # connect, so that a follower can point clients at the leader; etcdAddress: its etcd gateway, "" if none).
  ping @1 (header :Header, payload :Data)
      -> (payload :Data, nodeId :UInt64, term :UInt64, clientAddress :Text, error :Error, etcdAddress :Text);

  # Streamed by a leader to a follower whose log is behind the leader's first index (Raft §7), in chunks
  # (raftkv/transport/snapshot_stream.py).
  installSnapshot @2 (header :Header, chunk :SnapshotChunk) -> (term :UInt64, nextOffset :UInt64, error :Error);
}

# A node's client port bootstraps a `Client`: the three services below in one capability. Each is its own
# interface so that a front end implements (and a client depends on) only what it needs.
interface Client extends(Admin, Replicated, Kv) {}

interface Admin {
  # The seed's echo: returns what it was given, with the answering node's id and term.
  ping @0 (header :Header, payload :Data) -> (payload :Data, nodeId :UInt64, term :UInt64, error :Error);
  status @1 (header :Header) -> (status :NodeStatus, error :Error);

  # A consistent backup of the whole store (`raftkv snapshot save`): offset 0 makes the node dump its state (one
  # read transaction) and returns the first chunk; later offsets return the rest of that same image. `conf` is
  # the configuration as of lastIndex; it replaced `voters :List(UInt64)` in the same position, and a client of
  # another raftkv version is not supported across that change (the backup file format changed with it).
  backupChunk @2 (header :Header, offset :UInt64)
      -> (lastIndex :UInt64, lastTerm :UInt64, conf :List(Member), totalSize :UInt64, crc32c :UInt32,
          data :Data, error :Error);

  # Membership (docs/membership.md). `members` answers from this node's view (the leader's has each member's
  # lag); `memberChange` and `leaderTransfer` need the leader (notLeader otherwise) and answer once the change
  # is committed, with the configuration then.
  members @3 (header :Header)
      -> (members :List(MemberStatus), leader :UInt64, confIndex :UInt64, nodeId :UInt64, error :Error);
  # `timeoutMs`: how long the node waits for the change to commit (0: 10 s); the client gives it less than its
  # own deadline, so that an unknown outcome comes back as `timeout` instead of a broken call.
  memberChange @4 (header :Header, change :MemberChange, timeoutMs :UInt32) -> (members :List(Member), error :Error);
  leaderTransfer @5 (header :Header, to :UInt64, timeoutMs :UInt32) -> (leader :UInt64, error :Error);
}

struct MemberStatus {
  member @0 :Member;
  isLeader @1 :Bool;
  reachable @2 :Bool;     # from the answering node: its link to that member is up (itself: true)
  hasProgress @3 :Bool;   # the answering node leads and tracks this member's replication
  match @4 :UInt64;       # hasProgress: the last index the member is known to hold
  lag @5 :UInt64;         # hasProgress: entries it is behind the leader's last index
}

struct MemberChange {
  kind @0 :Kind;
  id @1 :UInt64;
  peerAddress @2 :Text;
  clientAddress @3 :Text;
  enum Kind {
    addVoter @0;
    addLearner @1;
    promote @2;
    remove @3;
  }
}

interface Replicated {
  # The generic state machine's operation (any state machine the runtime replicates): replicate a command and
  # return the state machine's result for it, as text.
  propose @0 (header :Header, data :Data, timeoutMs :UInt32)
      -> (index :UInt64, term :UInt64, result :Data, error :Error);
}

interface Kv {
  # One call carries a batch of commands (the client coalesces concurrent calls: one capnp call costs ~75 us of
  # CPU whatever it carries); results come back in the same order, msgspec-encoded raftkv.kv results. Writes and
  # linearizable reads need the leader: a follower answers notLeader. A batch-level error (timeout, leadership
  # lost) leaves outcomes unknown: retry the batch as is — writes carry their session sequence numbers, so a
  # retried write is applied at most once.
  execute @0 (header :Header, requests :List(KvRequest), timeoutMs :UInt32) -> (results :List(Data), error :Error);

  # Watch keys [key, rangeEnd) (hasRangeEnd false: the single key) from startRevision (0: from now). Events are
  # pushed to `watcher` in revision order. compactRevision is set (with an error) when startRevision is older
  # than the retained history.
  watch @1 (header :Header, key :Data, rangeEnd :Data, hasRangeEnd :Bool, startRevision :Int64, watcher :Watcher)
      -> (watchId :UInt64, compactRevision :Int64, error :Error);
  cancelWatch @2 (header :Header, watchId :UInt64) -> (error :Error);
}

interface Watcher {
  events @0 (events :List(Data)) -> ();                        # msgspec-encoded raftkv.kv.watch.Event
  cancelled @1 (reason :Text, compactRevision :Int64) -> ();  # the server ended the watch (e.g. too slow)
}
