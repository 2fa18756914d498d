// Package replica is the home of replication: the partition replicas of a data-plane
// node and the rules that keep them (Apache Kafka's kafka.cluster.Partition and
// ReplicaManager, without the request handling).
//
// What it owns, per partition (Partition):
//   - the log (a segment.Log), reached through the Partition for everything that moves
//     its end: appends as leader (LeaderAppend: idempotent-producer checks, offsets and
//     leader epoch assigned, one write for many requests), appends as follower
//     (AppendAsFollower, the leader's offsets and epochs kept; or staged in the log by a
//     splice and committed, StageFollowerAppend and AppendStagedAsFollower) and truncation
//     (TruncateTo, EndOffsetForEpoch);
//   - the role (leader, follower, none) and the leader epoch, with the epoch checks a
//     request's current leader epoch gets (CheckLeaderEpoch);
//   - the ISR, the assignment and each follower's progress (Replica: log end offset,
//     last caught-up time, the broker epoch its fetches were made under), the
//     partition epoch, and min.insync.replicas; the ISR changes a leader proposes
//     (ProposeISR: Kafka's maybeShrinkIsr and maybeExpandIsr, with KIP-903's broker
//     epoch check), and the lags metrics show (FollowerLag, FetcherLag);
//   - the high watermark and its rules: on a leader, the smallest log end offset over
//     the ISR (followers' as their fetches report them, UpdateFollowerFetchState),
//     never moved backwards; on a follower, the leader's capped at its own log end
//     (UpdateFollowerHighWatermark); it never passes the log end offset; it is
//     checkpointed to the data directory's replication-offset-checkpoint and restored
//     from it, or from the control plane's checkpoint, when a replica opens;
//   - the producer state (KIP-98 sequence and epoch rules; the open transactions and
//     their markers, KIP-890's verification guards), rebuilt from the log on open and
//     after a truncation, kept by followers from what they append; the last stable
//     offset it bounds (LastStableOffset) and the transaction markers a leader writes
//     for the coordinator (AppendTxnMarker), whose aborts fill the log's
//     aborted-transaction index (docs/transactions.md);
//   - the list of requests parked on the partition (Waiter), woken when its log end,
//     high watermark or role changes.
//
// And per node (Manager): the map of replicas, the data-directory layout
// (<dir>/<topic>-<partition>), and becoming leader or follower as the controller's
// state (PartitionState, LeaderAndIsr) says.
//
// What it leaves to others: dataplane handles requests (decoding, validation of the
// batches, the Kafka error codes of everything but replica's own rules — the producer
// and leader-epoch checks answer with theirs —, the purgatory of parked requests and
// its timers, metrics), reads the log for fetches, applies retention and
// checkpoints, and turns the control plane's metadata into PartitionStates; replica
// never imports dataplane or the control plane. segment stores the bytes and knows
// nothing of roles, epochs' meaning or producers.
//
// Concurrency: see Partition and Manager. In short, the produce and fetch paths read
// only atomics (role and leader epoch in one word, ISR size, min.insync.replicas, high
// watermark); a Partition's append lock (mu) serialises the appends, truncations and
// high-watermark moves of one partition with its producer state; its stateMu guards the
// leadership fields behind those atomics. Lock order: Manager.mu, Partition.stateMu,
// Partition.mu, the log's locks; the waiter list's lock is a leaf. Nothing in this
// package blocks on the network or the control plane.
//
// Fetching is the data plane's: its replica fetchers read the leader with Kafka's
// Fetch and call AppendAsFollower, UpdateFollowerHighWatermark and the truncations
// here; the leader's fetch handler calls UpdateFollowerFetchState.
package replica
