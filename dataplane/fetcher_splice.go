package dataplane

// The follower's two ways of appending what it fetched (Config.ReplicaAppend):
//
//   - copy: roundTrip reads the whole Fetch response into a buffer and each partition's
//     records are appended from it (replica's AppendAsFollower): the records cross user
//     space once, socket → buffer → page cache.
//   - splice: roundTripSplice reads only the fields around the records
//     (proto.FetchResponseScanner) and moves each partition's records from the socket
//     into its log's active segment, past the log's end, through the fetcher's pipe
//     (sendfile.Splicer): no copy through user space. apply then commits them
//     (AppendStagedAsFollower): validated where they lie in the page cache — the same
//     CRC, offset and epoch checks — and only then part of the log. The body fetch()
//     walks is the response with those partitions' records shown empty.
//
// Splice falls back to copy per partition where it cannot help (records below
// replicaSpliceMinBytes, a partition not followed any more or answered with an error)
// and for good on a fetcher whose data directory refuses splice writes (EINVAL).

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/gregor-streaming/gregor/proto"
	"github.com/gregor-streaming/gregor/segment"
	"github.com/gregor-streaming/gregor/sendfile"
)

// The follower append paths (Config.ReplicaAppend, gregor-dp's --replica-append).
const (
	ReplicaAppendCopy   = "copy"
	ReplicaAppendSplice = "splice"
	// DefaultReplicaAppend is the path a node takes unless told otherwise: splice, which
	// took about half the CPU per GB of copy to catch a follower up, and was faster
	// (docs/architecture.md, BenchmarkFollowerCatchUp).
	DefaultReplicaAppend = ReplicaAppendSplice
)

// replicaSpliceMinBytes: a partition's records below this are copied even on the
// splice path; staging, mapping and two splices cost more than copying a few pages.
const replicaSpliceMinBytes = 16 << 10

// replicaHeaderTagsMax bounds the response header's tag buffer on the splice path, read
// a byte at a time (a leader sends none: one byte).
const replicaHeaderTagsMax = 4 << 10

// roundTripFetch sends the Fetch request f.req, of the given version, and reads its
// answer by the node's append path.
func (f *fetcher) roundTripFetch(wait time.Duration, version int16) ([]byte, error) {
	if f.s.cfg.ReplicaAppend != ReplicaAppendSplice || f.spliceUnsupported || !proto.FetchResponseScannable(version) {
		return f.roundTrip(wait)
	}
	return f.roundTripSplice(wait, version)
}

// roundTripSplice is roundTrip for a Fetch on the splice path: the answer's fields are
// read into f.resp, and the records of each partition of f.list that is to be spliced
// are staged in its log (fetchPartition.staged) and shown empty in the body returned.
// Any error leaves the stream at an unknown place: the caller drops the connection,
// and abortStaged cuts what was staged.
func (f *fetcher) roundTripSplice(wait time.Duration, version int16) ([]byte, error) {
	c, err := f.currentConn()
	if err != nil {
		return nil, err
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return f.roundTrip(wait) // not a socket of this process's: nothing to splice from
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	if f.splicer == nil {
		if f.splicer, err = sendfile.NewSplicer(sendfile.DefaultPipeBytes); err != nil {
			return nil, err
		}
		if f.spliceSink == nil {
			f.spliceSink, f.spliceDrain = f.sinkStaged, f.drainPipe
		}
	}
	body, err := f.readSpliced(c, rc, wait, version)
	if err != nil {
		// The pipe may hold bytes of a stream that is given up.
		f.splicer.Close()
		f.splicer = nil
	}
	return body, err
}

// readSpliced does roundTripSplice's reading.
func (f *fetcher) readSpliced(c net.Conn, rc syscall.RawConn, wait time.Duration, version int16) ([]byte, error) {
	size, err := f.sendRequest(c, wait)
	if err != nil {
		return nil, err
	}
	scan, err := proto.NewFetchResponseScanner(version)
	if err != nil {
		return nil, err
	}
	// body[:pos] is scanned; body[pos:] read, not yet scanned; left is the body's bytes
	// still in the socket. Every read is bounded by left, so by the frame's size.
	body, pos, left := f.resp[:0], 0, size-4
	read := func(n int) error {
		if n > left {
			return fmt.Errorf("%w: %d bytes wanted, %d left in the frame", proto.ErrMalformedFetchResponse, n, left)
		}
		body = grow(body, n)
		_, err := io.ReadFull(c, body[len(body)-n:])
		left -= n
		return err
	}
	if proto.IsFlexibleResponse(fetchKey, version) {
		// The response header's tag buffer comes before what the scanner reads: read
		// it whole (most often one byte, no tags), and leave it in the body, where
		// fetch skips it as on the copy path.
		for {
			n, err := proto.SkipTagBuffer(body, 0)
			if err == nil {
				pos = n
				break
			}
			if len(body) >= replicaHeaderTagsMax {
				return nil, err
			}
			if err := read(1); err != nil {
				return nil, err
			}
		}
	}
	k := 0 // the partition's index in f.list, which the answer follows in order
	for {
		n, ev, err := scan.Scan(body[pos:])
		if err != nil {
			return nil, err
		}
		pos += n
		switch ev {
		case proto.FetchScanNeedMore:
			if err := read(scan.Need() - (len(body) - pos)); err != nil {
				return nil, err
			}
		case proto.FetchScanPartition:
			var fp *fetchPartition
			if k < len(f.list) && f.list[k].partition == scan.Partition.Partition &&
				((version < proto.FetchVersionTopicIDs && f.list[k].topic == string(scan.Topic)) ||
					(version >= proto.FetchVersionTopicIDs && f.list[k].topicID == scan.TopicID)) {
				fp = f.list[k]
			}
			k++
			n := int(scan.Partition.RecordsBytes)
			if n <= 0 {
				continue
			}
			if n > left {
				return nil, fmt.Errorf("%w: records of %d bytes, %d left in the frame", proto.ErrMalformedFetchResponse, n, left)
			}
			spliced := false
			if fp != nil && scan.Partition.ErrorCode == 0 && n >= replicaSpliceMinBytes {
				var copied []byte
				spliced, copied, err = f.spliceRecords(rc, fp, n)
				if err != nil {
					return nil, err
				}
				if spliced {
					left -= n
				} else {
					left -= len(copied)
					body = append(body, copied...) // the pipe's bytes, then the socket's
					if err := read(n - len(copied)); err != nil {
						return nil, err
					}
				}
			} else if err := read(n); err != nil {
				return nil, err
			}
			if spliced {
				// Nothing past the records length was read: the body ends there.
				body = scan.EmptyRecords(body[:pos])
				pos = len(body)
			} else {
				pos += n
			}
		case proto.FetchScanDone:
			if err := read(left); err != nil { // fields of later versions, if any
				return nil, err
			}
			f.resp = body
			return body, nil
		}
	}
}

// spliceRecords moves the n bytes of a partition's records from the socket into its
// log, staged (fp.staged) for apply to commit. spliced is false when the log could not
// take them so: either nothing was taken from the socket (copied is empty), or the
// file system refused the splice write and copied holds what the pipe had taken (the
// fetcher copies from now on); the caller reads the rest. An error breaks the stream.
func (f *fetcher) spliceRecords(rc syscall.RawConn, fp *fetchPartition, n int) (spliced bool, copied []byte, err error) {
	st, err := fp.p.StageFollowerAppend(n)
	if err != nil {
		return false, nil, nil // not a follower any more, or the log is closed: copy, apply decides
	}
	f.splice = spliceState{st: st}
	_, err = f.splicer.Transfer(rc, int64(n), f.spliceSink)
	sp := f.splice
	f.splice = spliceState{}
	if sp.unsupported {
		st.Abort()
		f.spliceUnsupported = true
		f.s.logger.Warn("replica fetcher: the data directory takes no splice writes, copying", "leader", f.leader, "dir", fp.p.Log().Dir())
		buf := make([]byte, f.splicer.Buffered())
		m, rerr := f.splicer.ReadPipe(buf)
		return false, buf[:m], rerr
	}
	if err != nil || sp.lost {
		st.Abort()
		return err == nil, nil, err // lost: the records were consumed; apply finds nothing staged
	}
	fp.staged = st
	return true, nil, nil
}

// spliceState is the state of the splice in progress, which sinkStaged and drainPipe
// read and advance: bound once as methods, they take the bytes without allocating.
type spliceState struct {
	st *segment.StagedAppend
	// k is the pipe's bytes sinkStaged hands to drainPipe.
	k int
	// lost: another change to the log overtook the staged append (the replica leads
	// now); the rest of the records is read and dropped.
	lost bool
	// unsupported: the file system refused the first splice write.
	unsupported bool
}

// sinkStaged empties the pipe into the staged append (the Splicer's sink).
func (f *fetcher) sinkStaged(k int) error {
	sp := &f.splice
	if !sp.lost {
		sp.k = k
		err := sp.st.Write(f.spliceDrain)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, sendfile.ErrSpliceUnsupported) && sp.st.Written() == 0:
			sp.unsupported = true
			return err
		case errors.Is(err, segment.ErrStagingLost):
			sp.lost = true
		default:
			return err
		}
	}
	f.scratch = grow(f.scratch[:0], k)
	_, err := f.splicer.ReadPipe(f.scratch)
	return err
}

// drainPipe moves the pipe's bytes into the segment file (the staged append's writer).
func (f *fetcher) drainPipe(fd int, off *int64) error {
	return drainPipeTo(f.splicer, fd, off, f.splice.k)
}

// drainPipeTo is sendfile's DrainTo; a test makes it refuse, as a file system without
// splice writes does.
var drainPipeTo = (*sendfile.Splicer).DrainTo

// appendRecords appends a partition's records of one answer, by the path they came:
// staged in the log by roundTripSplice, or in the body, and counts them by path. It
// returns the bytes appended.
func (f *fetcher) appendRecords(fp *fetchPartition, rp *proto.FetchResponsePartition) (int, error) {
	if st := fp.staged; st != nil {
		fp.staged = nil
		info, err := fp.p.AppendStagedAsFollower(st)
		if err != nil {
			return 0, err
		}
		f.s.metrics.replicationSpliceIn.Add(info.Bytes)
		return info.Bytes, nil
	}
	if len(rp.Records) == 0 {
		return 0, nil
	}
	if _, err := fp.p.AppendAsFollower(rp.Records); err != nil {
		return 0, err
	}
	f.s.metrics.replicationBytesIn.Add(len(rp.Records))
	return len(rp.Records), nil
}

// abortStaged cuts what roundTripSplice staged and apply did not commit (a partition
// removed meanwhile, an answer given up).
func (f *fetcher) abortStaged() {
	for _, fp := range f.list {
		if fp.staged != nil {
			fp.staged.Abort()
			fp.staged = nil
		}
	}
}

// closeSplicer closes the fetcher's pipe, if any.
func (f *fetcher) closeSplicer() {
	if f.splicer != nil {
		f.splicer.Close()
		f.splicer = nil
	}
}

// grow extends b by n bytes, reallocating if needed.
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), max(2*cap(b), len(b)+n))
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}
