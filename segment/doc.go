// Package segment is Gregor's storage engine: the log of one partition replica.
//
// A Log is an ordered list of segments in one directory, the last of which (the active
// segment) takes appends. A segment is three files named by its base offset:
// <base>.log (RecordBatch v2 batches, as received, offsets written in place),
// <base>.index (relative offset → file position) and <base>.timeindex (timestamp →
// relative offset), both memory-mapped, preallocated and trimmed when the segment rolls.
// Each segment also has <base>.txnindex, the transactions aborted by markers in it
// (TxnIndex, kept in memory; CollectAbortedTxns answers read_committed fetches). Beside
// them: the leader-epoch cache (leader-epoch-checkpoint) and the recovery point.
//
// What it does: appends of validated batches with one write, whole or nothing; staged
// follower appends (StagedAppend: bytes spliced past the log's end, validated there,
// then taken into the log or cut); rolls by
// size, age or a full index; reads as reference-counted file regions for zero-copy sends
// (safe under append, roll, retention and truncation); offset lookups by time; truncation
// (TruncateTo, with EndOffsetForEpoch to find where a leader epoch ended); retention by age and size bounded by
// the high watermark; flush policies up to fsync before acknowledging, with group commit;
// and recovery after an unclean stop, which cuts the log at the first bad byte and
// rebuilds the indexes.
//
// It knows nothing of the network or of the control plane: the replica package calls it
// for everything that moves a log's end, the data plane for reads. Log's doc comment gives the
// concurrency contract and lock order; docs/architecture.md the design.
package segment
