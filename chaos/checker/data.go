package checker

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/gregor-streaming/gregor/chaos/history"
)

// tp names a partition.
type tp struct {
	topic string
	part  int32
}

func (k tp) String() string { return fmt.Sprintf("%s/%d", k.topic, k.part) }

// replica is one final log, its records sorted by offset.
type replica struct {
	node    int32
	hw      int64 // -1 if unknown
	records []history.Record
}

// committed reports whether offset is below the replica's high watermark (every
// record is, when the high watermark is unknown).
func (r *replica) committed(off int64) bool { return r.hw < 0 || off < r.hw }

// find returns the record at offset off.
func (r *replica) find(off int64) (history.Record, bool) {
	i, ok := slices.BinarySearchFunc(r.records, off, func(rec history.Record, off int64) int {
		return cmp.Compare(rec.Offset, off)
	})
	if !ok {
		return history.Record{}, false
	}
	return r.records[i], true
}

// partData is what the checker knows of one partition.
type partData struct {
	tp       tp
	replicas []*replica
	// final maps each offset held below its high watermark by some replica to the
	// value of the first such replica (replicas in order of decreasing high
	// watermark); conflicts holds the other values found at an offset, if any.
	final     map[int64]string
	conflicts map[int64][]string
	// polled maps the offsets read by polls that no final log holds to the value read.
	polled map[int64]string
	// offsets is the sorted union of the keys of final and polled: the offsets known to
	// hold a record.
	offsets []int64
	// sends indexes h.Sends: the sends to this partition.
	sends []int32
	// producers maps an offset to the producer id and epoch of its batch, where a
	// final log or a poll said (producerKey).
	producers map[int64]producerKey
}

// producerKey is a batch's producer id and epoch.
type producerKey struct {
	id    int64
	epoch int16
}

// noteProducer records the producer of the record at off, if rec names one.
func (p *partData) noteProducer(rec history.Record) {
	if !rec.Idempotent {
		return
	}
	if _, ok := p.producers[rec.Offset]; !ok {
		p.producers[rec.Offset] = producerKey{rec.ProducerID, rec.ProducerEpoch}
	}
}

// valueAt returns the value known at offset off: in a final log below the high
// watermark or, for an offset no final log holds, in a poll.
func (p *partData) valueAt(off int64) (string, bool) {
	if v, ok := p.final[off]; ok {
		return v, true
	}
	v, ok := p.polled[off]
	return v, ok
}

// agrees reports whether v may be the value at off: the offset is unknown, or some
// final log or poll holds v there.
func (p *partData) agrees(off int64, v string) bool {
	w, ok := p.valueAt(off)
	return !ok || w == v || slices.Contains(p.conflicts[off], v)
}

// anyIn reports whether some offset in [lo, hi) is known to hold a record.
func (p *partData) anyIn(lo, hi int64) (int64, bool) {
	i, _ := slices.BinarySearch(p.offsets, lo)
	if i < len(p.offsets) && p.offsets[i] < hi {
		return p.offsets[i], true
	}
	return 0, false
}

// loc is where a value was found: a partition index and an offset.
type loc struct {
	part int32
	off  int64
}

// Flags of a value.
const (
	fPolled    = 1 << iota // read by a poll
	fCommitted             // in a final log below that replica's high watermark
	fAnyFinal              // in a final log, at any offset
	fHasLoc                // first is set
)

// valInfo is what the checker knows of one value.
type valInfo struct {
	send  int32 // index in h.Sends, -1 if no send wrote it
	flags uint8
	first loc
}

// data is the index of sends, final logs and polls.
type data struct {
	parts  []*partData
	pidx   map[tp]int32
	values []valInfo
	vidx   map[string]int32
	// extra holds, by value index, the locations of a value other than its first.
	extra map[int32][]loc
}

func (d *data) part(k tp) int32 {
	if i, ok := d.pidx[k]; ok {
		return i
	}
	i := int32(len(d.parts))
	d.pidx[k] = i
	d.parts = append(d.parts, &partData{
		tp: k, final: map[int64]string{}, polled: map[int64]string{}, conflicts: map[int64][]string{},
		producers: map[int64]producerKey{},
	})
	return i
}

func (d *data) value(v string) int32 {
	if i, ok := d.vidx[v]; ok {
		return i
	}
	i := int32(len(d.values))
	d.vidx[v] = i
	d.values = append(d.values, valInfo{send: -1})
	return i
}

// at records that value vi was found at l.
func (d *data) at(vi int32, l loc) {
	v := &d.values[vi]
	if v.flags&fHasLoc == 0 {
		v.first, v.flags = l, v.flags|fHasLoc
		return
	}
	if v.first == l || slices.Contains(d.extra[vi], l) {
		return
	}
	d.extra[vi] = append(d.extra[vi], l)
}

// foundAt reports whether value vi was found at l.
func (d *data) foundAt(vi int32, l loc) bool {
	v := d.values[vi]
	return v.flags&fHasLoc != 0 && (v.first == l || slices.Contains(d.extra[vi], l))
}

// checkData runs the checks on sends, polls and final logs.
func (c *checker) checkData() {
	h := c.h
	d := &data{
		pidx:  map[tp]int32{},
		vidx:  make(map[string]int32, len(h.Sends)),
		extra: map[int32][]loc{},
	}
	c.indexSends(d)
	c.indexFinals(d)
	c.indexPolls(d)
	c.checkPolls(d)
	c.judgeValues(d)
	c.availability(d)
	for _, p := range d.parts {
		c.stats.FinalRecords += len(p.final)
	}
}

func (c *checker) indexSends(d *data) {
	st := &c.stats
	d.values = make([]valInfo, 0, len(c.h.Sends))
	for i, s := range c.h.Sends {
		st.Sends++
		switch s.Outcome {
		case history.OK:
			st.SendsOK++
		case history.Fail:
			st.SendsFail++
		default:
			st.SendsInfo++
		}
		p := d.part(tp{s.Topic, s.Partition})
		d.parts[p].sends = append(d.parts[p].sends, int32(i))
		vi := d.value(s.Value)
		if d.values[vi].send >= 0 {
			st.RepeatedValues++
			continue
		}
		d.values[vi].send = int32(i)
	}
}

func (c *checker) indexFinals(d *data) {
	c.stats.Replicas = len(c.h.Finals)
	for i := range c.h.Finals {
		f := &c.h.Finals[i]
		p := d.parts[d.part(tp{f.Topic, f.Partition})]
		recs := f.Records
		if !slices.IsSortedFunc(recs, byOffset) {
			recs = slices.Clone(recs)
			slices.SortStableFunc(recs, byOffset)
		}
		p.replicas = append(p.replicas, &replica{node: f.Node, hw: f.HighWatermark, records: recs})
	}
	for pi, p := range d.parts {
		if len(p.replicas) == 0 {
			continue
		}
		// The most advanced replica first: its values are the reference.
		slices.SortStableFunc(p.replicas, func(a, b *replica) int {
			return cmp.Or(cmp.Compare(hwKey(b.hw), hwKey(a.hw)), cmp.Compare(a.node, b.node))
		})
		agreed := agreedHW(p.replicas)
		for ri, r := range p.replicas {
			for _, rec := range r.records {
				vi := d.value(rec.Value)
				d.values[vi].flags |= fAnyFinal
				p.noteProducer(rec)
				if !r.committed(rec.Offset) {
					continue
				}
				d.values[vi].flags |= fCommitted
				d.at(vi, loc{int32(pi), rec.Offset})
				w, ok := p.final[rec.Offset]
				switch {
				case !ok:
					p.final[rec.Offset] = rec.Value
				case w != rec.Value && !slices.Contains(p.conflicts[rec.Offset], rec.Value):
					p.conflicts[rec.Offset] = append(p.conflicts[rec.Offset], rec.Value)
					other := int32(-1)
					for _, o := range p.replicas[:ri] {
						if x, ok := o.find(rec.Offset); ok && o.committed(rec.Offset) && x.Value == w {
							other = o.node
							break
						}
					}
					detail := fmt.Sprintf("node %d holds %q, node %d holds %q, both below their high watermarks (%d, %d)",
						other, w, r.node, rec.Value, hwOf(p.replicas, other), r.hw)
					c.add(Anomaly{Kind: ReplicaDivergence, Topic: p.tp.topic, Partition: p.tp.part,
						Offset: rec.Offset, Value: rec.Value, Detail: detail})
					c.add(Anomaly{Kind: InconsistentOffsets, Topic: p.tp.topic, Partition: p.tp.part,
						Offset: rec.Offset, Value: rec.Value, Detail: "across replicas: " + detail})
				}
			}
		}
		c.missingBelow(p, agreed)
	}
}

// missingBelow reports the replicas lacking a record below agreed that another
// replica holds.
func (c *checker) missingBelow(p *partData, agreed int64) {
	var below []int64
	for off := range p.final {
		if off < agreed {
			below = append(below, off)
		}
	}
	slices.Sort(below)
	anyKnown := slices.ContainsFunc(p.replicas, func(r *replica) bool { return r.hw >= 0 })
	for _, r := range p.replicas {
		if anyKnown && r.hw < 0 {
			continue
		}
		n, _ := slices.BinarySearchFunc(r.records, agreed, func(rec history.Record, off int64) int {
			return cmp.Compare(rec.Offset, off)
		})
		if n >= len(below) {
			continue // it holds as many distinct offsets below agreed as the union
		}
		for _, off := range below {
			if _, ok := r.find(off); !ok {
				c.add(Anomaly{Kind: ReplicaDivergence, Topic: p.tp.topic, Partition: p.tp.part,
					Offset: off, Value: p.final[off],
					Detail: fmt.Sprintf("node %d lacks the record that another replica holds below the agreed high watermark %d", r.node, agreed)})
			}
		}
	}
}

func byOffset(a, b history.Record) int { return cmp.Compare(a.Offset, b.Offset) }

// hwKey orders replicas by high watermark, an unknown one first.
func hwKey(hw int64) int64 {
	if hw < 0 {
		return 1<<63 - 1
	}
	return hw
}

func hwOf(rs []*replica, node int32) int64 {
	for _, r := range rs {
		if r.node == node {
			return r.hw
		}
	}
	return -1
}

// agreedHW is the smallest known high watermark of the replicas or, when none is
// known, the smallest log end.
func agreedHW(rs []*replica) int64 {
	agreed, known := int64(-1), false
	for _, r := range rs {
		if r.hw >= 0 && (!known || r.hw < agreed) {
			agreed, known = r.hw, true
		}
	}
	if known {
		return agreed
	}
	for i, r := range rs {
		end := int64(0)
		if n := len(r.records); n > 0 {
			end = r.records[n-1].Offset + 1
		}
		if i == 0 || end < agreed {
			agreed = end
		}
	}
	return agreed
}

// indexPolls records every value read and checks the polls against the final logs
// and each other.
func (c *checker) indexPolls(d *data) {
	type conflict struct {
		part int32
		off  int64
		v    string
	}
	reported := map[conflict]bool{}
	for _, p := range c.h.Polls {
		c.stats.Polls++
		pi := d.part(tp{p.Topic, p.Partition})
		pd := d.parts[pi]
		for _, r := range p.Records {
			c.stats.Reads++
			vi := d.value(r.Value)
			d.values[vi].flags |= fPolled
			d.at(vi, loc{pi, r.Offset})
			pd.noteProducer(r)
			if _, ok := pd.valueAt(r.Offset); !ok {
				pd.polled[r.Offset] = r.Value
				continue
			}
			if pd.agrees(r.Offset, r.Value) || reported[conflict{pi, r.Offset, r.Value}] {
				continue
			}
			reported[conflict{pi, r.Offset, r.Value}] = true
			w, _ := pd.valueAt(r.Offset)
			src := "a final log"
			if _, inFinal := pd.final[r.Offset]; !inFinal {
				src = "another poll"
			}
			c.add(Anomaly{Kind: InconsistentOffsets, Topic: p.Topic, Partition: p.Partition,
				Offset: r.Offset, Value: r.Value,
				Detail: fmt.Sprintf("consumer %s read %q where %s holds %q", p.Consumer, r.Value, src, w)})
		}
	}
	for _, p := range d.parts {
		p.offsets = make([]int64, 0, len(p.final)+len(p.polled))
		for off := range p.final {
			p.offsets = append(p.offsets, off)
		}
		for off := range p.polled {
			p.offsets = append(p.offsets, off)
		}
		slices.Sort(p.offsets)
	}
}

// checkPolls checks each consumer's reads of each partition, in the order of
// h.Polls: offsets increase, and nothing the log holds is skipped.
func (c *checker) checkPolls(d *data) {
	type streamKey struct {
		consumer string
		part     int32
	}
	type stream struct {
		prev     int64
		has      bool
		gen      int32
		freshGen bool // a generation began with an empty poll
	}
	commits := c.commitIndex()
	streams := map[streamKey]*stream{}
	for _, p := range c.h.Polls {
		pi := d.pidx[tp{p.Topic, p.Partition}]
		pd := d.parts[pi]
		k := streamKey{p.Consumer, pi}
		st := streams[k]
		if st == nil {
			st = &stream{}
			streams[k] = st
		}
		genChange := p.Group != "" && (!st.has || st.freshGen || p.Generation != st.gen)
		seekBack := p.Start >= 0 && st.has && p.Start <= st.prev
		next := int64(-1) // the expected next offset; -1 if not judged
		switch {
		case genChange && p.Start >= 0:
			// Where the consumer said it starts: the committed offset it fetched.
			next = p.Start
		case genChange:
			// The group's committed offset, or past what this consumer read itself
			// if it kept the partition (a cooperative rebalance keeps positions).
			if next = commits.at(p.Group, p.Topic, p.Partition, p.Time); next >= 0 && st.has {
				next = max(next, st.prev+1)
			}
		case p.Start >= 0:
			next = p.Start
		case st.has:
			next = st.prev + 1
		}
		if len(p.Records) == 0 {
			if genChange {
				st.gen, st.freshGen = p.Generation, true
			}
			continue
		}
		for i, r := range p.Records {
			prev, hasPrev, allowBack := st.prev, st.has, genChange || seekBack
			if i > 0 {
				prev, hasPrev, allowBack = p.Records[i-1].Offset, true, false
				next = prev + 1
			}
			if hasPrev && r.Offset <= prev && !allowBack {
				c.add(Anomaly{Kind: NonmonotonicPoll, Topic: p.Topic, Partition: p.Partition,
					Offset: r.Offset, Value: r.Value,
					Detail: fmt.Sprintf("consumer %s read offset %d after offset %d", p.Consumer, r.Offset, prev)})
			}
			if next >= 0 && r.Offset > next {
				if skipped, ok := pd.anyIn(next, r.Offset); ok {
					c.add(Anomaly{Kind: PollSkip, Topic: p.Topic, Partition: p.Partition,
						Offset: r.Offset, Value: r.Value,
						Detail: fmt.Sprintf("consumer %s expected offset %d, read %d; offset %d holds a record",
							p.Consumer, next, r.Offset, skipped)})
				}
			}
		}
		st.prev, st.has, st.gen, st.freshGen = p.Records[len(p.Records)-1].Offset, true, p.Generation, false
	}
}

// judgeValues gives each value its verdict: lost, unseen, duplicated, read though its
// send failed, found elsewhere than acknowledged.
func (c *checker) judgeValues(d *data) {
	st := &c.stats
	sends := c.h.Sends
	for vi := range d.values {
		v := d.values[vi]
		if v.flags&fPolled != 0 {
			st.ValuesRead++
		}
		if v.send < 0 {
			st.Unexpected++
			continue
		}
		s := &sends[v.send]
		found := v.flags&(fPolled|fAnyFinal) != 0
		if extra := d.extra[int32(vi)]; len(extra) > 0 {
			switch {
			case s.Idempotent && acrossEpochs(d, v.first, extra):
				// An idempotent producer deduplicates within one producer id and epoch;
				// a client that bumps its epoch and resends what it had in flight
				// (librdkafka, after a message timeout) writes it again, as with Kafka.
				st.DuplicatesAcrossEpochs++
			case s.Idempotent:
				offs := []string{c.locString(d, v.first)}
				for _, l := range extra {
					offs = append(offs, c.locString(d, l))
				}
				c.add(Anomaly{Kind: Duplicate, Topic: s.Topic, Partition: s.Partition,
					Offset: v.first.off, Value: s.Value,
					Detail: fmt.Sprintf("idempotent producer %s; found at %s", s.Producer, strings.Join(offs, ", "))})
			default:
				st.DuplicatesNonIdempotent++
			}
		}
		switch s.Outcome {
		case history.Fail:
			if found {
				where := "a final log"
				if v.flags&fPolled != 0 {
					where = "a poll"
				}
				c.add(Anomaly{Kind: ReadOfFailedWrite, Topic: s.Topic, Partition: s.Partition,
					Offset: foundOffset(v), Value: s.Value,
					Detail: fmt.Sprintf("send by %s failed (%s) but %s holds it", s.Producer, s.Err, where)})
			}
		case history.OK:
			c.judgeAck(d, int32(vi), s)
		default:
			if found {
				st.InfoFound++
			}
		}
	}
}

func (c *checker) judgeAck(d *data, vi int32, s *history.Send) {
	st := &c.stats
	v := d.values[vi]
	pi := d.pidx[tp{s.Topic, s.Partition}]
	pd := d.parts[pi]
	switch {
	case v.flags&(fPolled|fCommitted) == 0:
		if s.Acks == 1 && !c.opts.Acks1LossIsAnomaly {
			st.LostAcks1++
		} else {
			st.Lost++
			detail := fmt.Sprintf("acknowledged to %s (acks=%d) at offset %d; no poll read it and no replica holds it below its high watermark",
				s.Producer, s.Acks, s.Offset)
			if v.flags&fAnyFinal != 0 {
				detail += " (a replica holds it above)"
			}
			c.add(Anomaly{Kind: LostWrite, Topic: s.Topic, Partition: s.Partition,
				Offset: s.Offset, Value: s.Value, Detail: detail})
		}
	case v.flags&fPolled == 0:
		st.Unseen++
		if c.h.ConsumersDrained {
			c.add(Anomaly{Kind: Unseen, Topic: s.Topic, Partition: s.Partition, Offset: s.Offset, Value: s.Value,
				Detail: "in the final logs below the high watermark, read by no consumer although the consumers drained every partition"})
		}
	}
	if s.Offset < 0 {
		return
	}
	if s.Acks == 1 && !c.opts.Acks1LossIsAnomaly && v.flags&(fPolled|fAnyFinal) == 0 {
		// A lost acks=1 write (allowed, counted above): its offset was given to
		// another record by the next leader, which is no further anomaly.
		return
	}
	ack := loc{pi, s.Offset}
	if d.foundAt(vi, ack) {
		return
	}
	var why []string
	if v.flags&fHasLoc != 0 {
		why = append(why, "the value is at "+c.locString(d, v.first))
	}
	if w, ok := pd.valueAt(s.Offset); ok && w != s.Value {
		why = append(why, fmt.Sprintf("offset %d holds %q", s.Offset, w))
	}
	if len(why) > 0 {
		c.add(Anomaly{Kind: OffsetMismatch, Topic: s.Topic, Partition: s.Partition, Offset: s.Offset, Value: s.Value,
			Detail: fmt.Sprintf("acknowledged to %s at offset %d, but %s", s.Producer, s.Offset, strings.Join(why, " and "))})
	}
}

func foundOffset(v valInfo) int64 {
	if v.flags&fHasLoc != 0 {
		return v.first.off
	}
	return -1
}

// acrossEpochs reports whether the copies of a value at first and extra were written
// under more than one producer id or epoch, all of them known.
func acrossEpochs(d *data, first loc, extra []loc) bool {
	k, ok := d.parts[first.part].producers[first.off]
	if !ok {
		return false
	}
	across := false
	for _, l := range extra {
		o, ok := d.parts[l.part].producers[l.off]
		if !ok {
			return false
		}
		across = across || o != k
	}
	return across
}

func (c *checker) locString(d *data, l loc) string {
	return fmt.Sprintf("%s@%d", d.parts[l.part].tp, l.off)
}

// availability measures, per partition, the longest time sends were attempted and
// none acknowledged.
func (c *checker) availability(d *data) {
	sends := c.h.Sends
	st := &c.stats
	for _, p := range d.parts {
		if len(p.sends) == 0 {
			continue
		}
		a := Availability{Topic: p.tp.topic, Partition: p.tp.part, Attempts: len(p.sends)}
		byStart := slices.Clone(p.sends)
		slices.SortFunc(byStart, func(x, y int32) int { return sends[x].Start.Compare(sends[y].Start) })
		// maxEnd[i] is the latest End of the sends byStart[:i+1].
		maxEnd := make([]time.Time, len(byStart))
		var okEnds []time.Time
		for i, si := range byStart {
			s := &sends[si]
			maxEnd[i] = s.End
			if i > 0 && maxEnd[i-1].After(s.End) {
				maxEnd[i] = maxEnd[i-1]
			}
			if s.Outcome == history.OK {
				okEnds = append(okEnds, s.End)
			}
		}
		a.OK = len(okEnds)
		first, last := sends[byStart[0]].Start, maxEnd[len(maxEnd)-1]
		gap := func(from, to time.Time) {
			if dur := to.Sub(from); dur > a.Longest {
				a.Longest, a.From = dur, from
			}
		}
		if len(okEnds) == 0 {
			gap(first, last)
		} else {
			slices.SortFunc(okEnds, time.Time.Compare)
			gap(first, okEnds[0])
			for i := 1; i < len(okEnds); i++ {
				from, to := okEnds[i-1], okEnds[i]
				// Unavailable from from if a send started before it was still running,
				// else from the first send started after it.
				j, _ := slices.BinarySearchFunc(byStart, from, func(si int32, t time.Time) int {
					return sends[si].Start.Compare(t)
				})
				switch {
				case j > 0 && maxEnd[j-1].After(from):
					gap(from, to)
				case j < len(byStart) && sends[byStart[j]].Start.Before(to):
					gap(sends[byStart[j]].Start, to)
				}
			}
			gap(okEnds[len(okEnds)-1], last)
		}
		st.Availability = append(st.Availability, a)
	}
	slices.SortFunc(st.Availability, func(x, y Availability) int {
		return cmp.Or(strings.Compare(x.Topic, y.Topic), cmp.Compare(x.Partition, y.Partition))
	})
	for _, a := range st.Availability {
		if a.Longest > st.MaxUnavailable || st.MaxUnavailableAt == "" {
			st.MaxUnavailable, st.MaxUnavailableAt = a.Longest, fmt.Sprintf("%s/%d", a.Topic, a.Partition)
		}
	}
}
