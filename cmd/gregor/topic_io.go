package main

// gregor topic produce and consume: records from stdin to a topic, and from a topic to
// stdout, through kgo.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Limits of produce and consume.
const (
	// lineBytesMaxDefault bounds one stdin line (one record) by default: the broker's
	// default max.message.bytes is about 1 MiB.
	lineBytesMaxDefault = 1 << 20
	// progressInterval is how often a long produce or consume reports on stderr.
	progressInterval = 2 * time.Second
	// unknownTopicAttempts and unknownTopicBackoff bound the wait for a new topic to
	// reach every node (topicPartitions).
	unknownTopicAttempts = 4
	unknownTopicBackoff  = 250 * time.Millisecond
)

const produceLong = `Each line of stdin is one record's value; with --key-delimiter D, the text before
the first D is the key. Records go to the partition chosen by the key (or --partition).
When stdin ends, a table gives each partition's records and offsets; a failed record
makes the exit status 1.

  printf 'k1:hello\nk2:world\n' | gregor topic produce demo --key-delimiter :`

const consumeLong = `Prints records from the first offset given (--offset) until -n records, the end
(-e: the high watermarks when it started) or Ctrl-C. With --group G, it consumes as a
member of group G and commits the offsets of the records it printed; --offset then
applies only to partitions the group has no committed offset for.

--format is text (the value alone), json (one object per record), or a format string:
%t topic, %p partition, %o offset, %d timestamp (ms), %k key, %v value, %h headers,
%% a percent sign, \n and \t; e.g. --format '%p/%o %k=%v\n'.`

// parseAcks reads --acks.
func parseAcks(s string) (kgo.Acks, error) {
	switch s {
	case "all", "-1":
		return kgo.AllISRAcks(), nil
	case "1", "leader":
		return kgo.LeaderAck(), nil
	case "0", "none":
		return kgo.NoAck(), nil
	}
	return kgo.Acks{}, usageErrorf("--acks %q: all (-1), 1 or 0", s)
}

// parseCompression reads --compression.
func parseCompression(s string) (kgo.CompressionCodec, error) {
	switch s {
	case "none":
		return kgo.NoCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	}
	return kgo.CompressionCodec{}, usageErrorf("--compression %q: none, gzip, snappy, lz4 or zstd", s)
}

// topicPartitions returns the topic's partition numbers, or an error naming the topic
// when it does not exist (produce and consume check before they start, instead of
// leaving the client to retry an unknown topic).
func topicPartitions(ctx context.Context, g *globals, adm *kadm.Client, topic string) ([]int32, error) {
	td, err := topicDetail(ctx, g, adm, topic)
	if err != nil {
		return nil, err
	}
	return td.Partitions.Numbers(), nil
}

// topicDetail returns the topic's metadata (its partitions and their leaders), or an
// error naming the topic when it does not exist.
func topicDetail(ctx context.Context, g *globals, adm *kadm.Client, topic string) (kadm.TopicDetail, error) {
	var td kadm.TopicDetail
	ok := false
	// Each node learns of a new topic from the control plane a moment after the node
	// that created it answered: a topic created by the previous command may be unknown
	// to the node asked now. Ask again a few times before calling it missing.
	for attempt := 0; attempt < unknownTopicAttempts; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(unknownTopicBackoff):
			}
		}
		md, err := adm.Metadata(ctx, topic)
		if err != nil {
			return td, g.requestErr(err, "Metadata")
		}
		td, ok = md.Topics[topic]
		if ok && !errors.Is(td.Err, kerr.UnknownTopicOrPartition) {
			break
		}
	}
	if !ok || td.Err != nil {
		err := td.Err
		if !ok || errors.Is(err, kerr.UnknownTopicOrPartition) {
			return td, failf("%s", itemErr(kerr.UnknownTopicOrPartition, "", fmt.Sprintf("topic %q does not exist", topic),
				"create it with gregor topic create "+topic))
		}
		return td, failf("%s", describe(err, ""))
	}
	return td, nil
}

// producedPartition is one partition's share of a produce.
type producedPartition struct {
	Partition   int32 `json:"partition"`
	Records     int64 `json:"records"`
	FirstOffset int64 `json:"firstOffset"`
	LastOffset  int64 `json:"lastOffset"`
}

func topicProduce(fs *pflag.FlagSet) runFunc {
	delim := fs.StringP("key-delimiter", "K", "", "split each line into key and value at the first occurrence of this string")
	acksFlag := fs.String("acks", "all", "all (-1), 1 or 0: which replicas must have a record before it counts as written")
	comp := fs.StringP("compression", "z", "none", "none, gzip, snappy, lz4 or zstd")
	partition := fs.Int32P("partition", "p", -1, "produce every record to this partition (-1: chosen by key)")
	headers := fs.StringArrayP("header", "H", nil, "header name=value on every record (repeatable)")
	lineMax := fs.Int("max-line-bytes", lineBytesMaxDefault, "longest line accepted")
	return func(ctx context.Context, g *globals, args []string) error {
		topic := args[0]
		acks, err := parseAcks(*acksFlag)
		if err != nil {
			return err
		}
		codec, err := parseCompression(*comp)
		if err != nil {
			return err
		}
		var hdrs []kgo.RecordHeader
		for _, h := range *headers {
			k, v, ok := strings.Cut(h, "=")
			if !ok || k == "" {
				return usageErrorf("--header %q: want name=value", h)
			}
			hdrs = append(hdrs, kgo.RecordHeader{Key: k, Value: []byte(v)})
		}
		adm, err := g.admin(ctx)
		if err != nil {
			return err
		}
		mdCtx, cancel := g.bounded(ctx)
		parts, err := topicPartitions(mdCtx, g, adm, topic)
		cancel()
		if err != nil {
			return err
		}
		if *partition >= 0 && !containsInt32(parts, *partition) {
			return failf("%s", itemErr(kerr.UnknownTopicOrPartition, "", fmt.Sprintf("topic %q has no partition %d (it has %d)", topic, *partition, len(parts)), ""))
		}
		opts := []kgo.Opt{kgo.RequiredAcks(acks), kgo.ProducerBatchCompression(codec), kgo.RecordDeliveryTimeout(g.timeout),
			kgo.ProducerLinger(5 * time.Millisecond)}
		if acks != kgo.AllISRAcks() {
			opts = append(opts, kgo.DisableIdempotentWrite()) // idempotence needs acks=all
		}
		if *partition >= 0 {
			opts = append(opts, kgo.RecordPartitioner(kgo.ManualPartitioner()))
		}
		cl, err := g.newClient(ctx, opts...)
		if err != nil {
			return err
		}
		defer cl.Close()

		var (
			mu     sync.Mutex
			byPart = map[int32]*producedPartition{}
			sent   int64
			done   int64
			failed int64
			first  error
		)
		promise := func(r *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			done++
			if err != nil {
				failed++
				if first == nil {
					first = err
				}
				return
			}
			p := byPart[r.Partition]
			if p == nil {
				p = &producedPartition{Partition: r.Partition, FirstOffset: r.Offset}
				byPart[r.Partition] = p
			}
			p.Records++
			p.FirstOffset = min(p.FirstOffset, r.Offset)
			p.LastOffset = max(p.LastOffset, r.Offset)
		}
		stopProgress := g.progress(func() string {
			mu.Lock()
			defer mu.Unlock()
			return fmt.Sprintf("produced %d records (%d sent)", done-failed, sent)
		})
		sc := bufio.NewScanner(g.stdin)
		sc.Buffer(make([]byte, 64<<10), *lineMax)
		for sc.Scan() && ctx.Err() == nil {
			line := sc.Bytes()
			r := &kgo.Record{Topic: topic, Headers: hdrs}
			if *delim != "" {
				if k, v, ok := strings.Cut(string(line), *delim); ok {
					r.Key, r.Value = []byte(k), []byte(v)
				} else {
					r.Value = append([]byte(nil), line...)
				}
			} else {
				r.Value = append([]byte(nil), line...)
			}
			if *partition >= 0 {
				r.Partition = *partition
			}
			mu.Lock()
			sent++
			mu.Unlock()
			cl.Produce(ctx, r, promise)
		}
		scanErr := sc.Err()
		flushCtx, cancel := g.bounded(context.WithoutCancel(ctx))
		flushErr := cl.Flush(flushCtx)
		cancel()
		stopProgress()

		mu.Lock()
		defer mu.Unlock()
		list := make([]producedPartition, 0, len(byPart))
		for _, p := range byPart {
			list = append(list, *p)
		}
		sort.Slice(list, func(i, j int) bool { return list[i].Partition < list[j].Partition })
		if g.json() {
			if err := writeJSON(g.stdout, list); err != nil {
				return err
			}
		} else if len(list) > 0 {
			t := newTable(g.stdout, "PARTITION", "RECORDS", "FIRST-OFFSET", "LAST-OFFSET")
			for _, p := range list {
				if acks == kgo.NoAck() {
					t.row(p.Partition, p.Records, "-", "-") // acks=0: no answer, no offsets
				} else {
					t.row(p.Partition, p.Records, p.FirstOffset, p.LastOffset)
				}
			}
			t.flush()
		}
		g.warnf("produced %d of %d records to %s", done-failed, sent, topic)
		switch {
		case scanErr != nil && errors.Is(scanErr, bufio.ErrTooLong):
			return failf("a line is longer than --max-line-bytes %d; records before it were produced", *lineMax)
		case scanErr != nil:
			return failf("reading stdin: %v", scanErr)
		case first != nil:
			return failf("%d records failed, the first: %s", failed, produceErr(topic, first))
		case flushErr != nil:
			return failf("%d records not acknowledged within %s (--timeout)", sent-done, g.timeout)
		case ctx.Err() != nil:
			return failf("interrupted: stdin not read to its end")
		}
		return nil
	}
}

// produceErr explains a record's failure.
func produceErr(topic string, err error) string {
	switch {
	case errors.Is(err, kerr.NotEnoughReplicas), errors.Is(err, kerr.NotEnoughReplicasAfterAppend):
		return itemErr(err, "", "fewer in-sync replicas than the topic's min.insync.replicas",
			"see them with gregor topic describe "+topic+", or produce with --acks 1")
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
		return itemErr(err, "", "a record is larger than the topic's max.message.bytes", "")
	case errors.Is(err, kgo.ErrRecordTimeout):
		return "no answer within --timeout: " + err.Error()
	}
	return describe(err, "")
}

// progress prints line() on stderr every progressInterval until the returned stop is
// called.
func (g *globals) progress(line func() string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(progressInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				g.warnf("%s", line())
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func containsInt32(s []int32, v int32) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// parseTimestamp reads a time given as Unix milliseconds (@1700000000000 or a bare
// 13-digit number), RFC 3339 (2026-01-02T15:04:05Z) or a date (2026-01-02, UTC).
func parseTimestamp(s string) (int64, bool) {
	if ms, ok := strings.CutPrefix(s, "@"); ok {
		n, err := strconv.ParseInt(ms, 10, 64)
		return n, err == nil && n >= 0
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UnixMilli(), true
		}
	}
	return 0, false
}

// startOffset is where consume starts: the start or end of each partition, an offset,
// or the first record at or after a time.
type startOffset struct {
	kind   string // "start", "end", "offset", "time"
	offset int64
	millis int64
}

func parseStartOffset(s string) (startOffset, error) {
	switch s {
	case "start", "earliest", "oldest", "beginning":
		return startOffset{kind: "start"}, nil
	case "end", "latest", "newest":
		return startOffset{kind: "end"}, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= 0 {
		return startOffset{kind: "offset", offset: n}, nil
	}
	if ms, ok := parseTimestamp(s); ok {
		return startOffset{kind: "time", millis: ms}, nil
	}
	return startOffset{}, usageErrorf("--offset %q: start, end, an offset, or a time (@unix-ms or RFC 3339)", s)
}

func (o startOffset) kgo() kgo.Offset {
	switch o.kind {
	case "end":
		return kgo.NewOffset().AtEnd()
	case "offset":
		return kgo.NewOffset().At(o.offset)
	case "time":
		return kgo.NewOffset().AfterMilli(o.millis)
	}
	return kgo.NewOffset().AtStart()
}

// recordFormat prints one record.
type recordFormat func(w *bufio.Writer, r *kgo.Record)

// recordJSON is a record as --format json prints it.
type recordJSON struct {
	Topic     string            `json:"topic"`
	Partition int32             `json:"partition"`
	Offset    int64             `json:"offset"`
	Timestamp int64             `json:"timestamp"`
	Key       *string           `json:"key"`
	Value     string            `json:"value"`
	Headers   map[string]string `json:"headers,omitempty"`
}

func parseRecordFormat(s string) (recordFormat, error) {
	switch s {
	case "text":
		s = "%v\n"
	case "json":
		return func(w *bufio.Writer, r *kgo.Record) {
			j := recordJSON{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Timestamp: r.Timestamp.UnixMilli(), Value: string(r.Value)}
			if r.Key != nil {
				k := string(r.Key)
				j.Key = &k
			}
			if len(r.Headers) > 0 {
				j.Headers = map[string]string{}
				for _, h := range r.Headers {
					j.Headers[h.Key] = string(h.Value)
				}
			}
			b, _ := json.Marshal(j)
			w.Write(b)
			w.WriteByte('\n')
		}, nil
	}
	if !strings.Contains(s, "%") {
		return nil, usageErrorf("--format %q: text, json, or a format string with %%v, %%k, %%o, %%p, %%d, %%t, %%h", s)
	}
	// Check the verbs once, so that a typo fails before anything is consumed.
	for i := 0; i < len(s); i++ {
		if s[i] == '%' {
			if i+1 >= len(s) || !strings.ContainsRune("tpodkvh%", rune(s[i+1])) {
				return nil, usageErrorf("--format %q: unknown verb at %q (have %%t %%p %%o %%d %%k %%v %%h %%%%)", s, s[i:])
			}
			i++
		}
	}
	s = strings.NewReplacer(`\n`, "\n", `\t`, "\t", `\\`, `\`).Replace(s)
	return func(w *bufio.Writer, r *kgo.Record) {
		for i := 0; i < len(s); i++ {
			if s[i] != '%' {
				w.WriteByte(s[i])
				continue
			}
			i++
			switch s[i] {
			case 't':
				w.WriteString(r.Topic)
			case 'p':
				w.WriteString(strconv.Itoa(int(r.Partition)))
			case 'o':
				w.WriteString(strconv.FormatInt(r.Offset, 10))
			case 'd':
				w.WriteString(strconv.FormatInt(r.Timestamp.UnixMilli(), 10))
			case 'k':
				w.Write(r.Key)
			case 'v':
				w.Write(r.Value)
			case 'h':
				for j, h := range r.Headers {
					if j > 0 {
						w.WriteByte(',')
					}
					w.WriteString(h.Key + "=" + string(h.Value))
				}
			case '%':
				w.WriteByte('%')
			}
		}
	}, nil
}

func topicConsume(fs *pflag.FlagSet) runFunc {
	offsetFlag := fs.StringP("offset", "o", "start", "where to start: start, end, an offset, or a time (@unix-ms or RFC 3339)")
	num := fs.IntP("num", "n", 0, "stop after this many records (0: no limit)")
	toEnd := fs.BoolP("exit-at-end", "e", false, "stop at the end: the partitions' high watermarks when it started")
	group := fs.StringP("group", "g", "", "consume as a member of this group, committing offsets")
	partList := fs.StringP("partitions", "p", "", "only these partitions: 0,1,2 (not with --group)")
	return func(ctx context.Context, g *globals, topics []string) error {
		start, err := parseStartOffset(*offsetFlag)
		if err != nil {
			return err
		}
		format, err := parseRecordFormat(g.format)
		if err != nil {
			return err
		}
		if *num < 0 {
			return usageErrorf("-n %d: at least 0", *num)
		}
		if *group != "" && (*toEnd || *partList != "") {
			return usageErrorf("--group takes no -e or --partitions: the group assigns the partitions")
		}
		var only []int32
		if *partList != "" {
			if only, err = parseInt32s(*partList); err != nil {
				return usageErrorf("--partitions: %v", err)
			}
		}
		adm, err := g.admin(ctx)
		if err != nil {
			return err
		}
		// Each topic's partitions, checked before consuming.
		mdCtx, cancel := g.bounded(ctx)
		parts := map[string][]int32{}
		for _, t := range topics {
			ps, err := topicPartitions(mdCtx, g, adm, t)
			if err != nil {
				cancel()
				return err
			}
			if only != nil {
				for _, p := range only {
					if !containsInt32(ps, p) {
						cancel()
						return failf("%s", itemErr(kerr.UnknownTopicOrPartition, "", fmt.Sprintf("topic %q has no partition %d", t, p), ""))
					}
				}
				ps = only
			}
			parts[t] = ps
		}
		// -e: the end of each partition, and which are already there.
		var remaining map[string]map[int32]int64
		if *toEnd {
			remaining, err = consumeEnds(mdCtx, g, adm, start, parts)
			if err != nil {
				cancel()
				return err
			}
		}
		cancel()

		opts := []kgo.Opt{kgo.ConsumeResetOffset(start.kgo()), kgo.FetchMaxWait(time.Second)}
		switch {
		case *group != "":
			opts = append(opts, kgo.ConsumerGroup(*group), kgo.ConsumeTopics(topics...), kgo.AutoCommitMarks())
		default:
			m := map[string]map[int32]kgo.Offset{}
			for t, ps := range parts {
				m[t] = map[int32]kgo.Offset{}
				for _, p := range ps {
					m[t][p] = start.kgo()
				}
			}
			opts = append(opts, kgo.ConsumePartitions(m))
		}
		cl, err := g.newClient(ctx, opts...)
		if err != nil {
			return err
		}
		defer cl.Close()

		var (
			mu       sync.Mutex
			consumed int
		)
		stopProgress := g.progress(func() string {
			mu.Lock()
			defer mu.Unlock()
			if *num > 0 {
				return fmt.Sprintf("consumed %d/%d records", consumed, *num)
			}
			return fmt.Sprintf("consumed %d records", consumed)
		})
		w := bufio.NewWriter(g.stdout)
		finished := func() bool {
			if *num > 0 && consumed >= *num {
				return true
			}
			return remaining != nil && len(remaining) == 0
		}
		var fetchErr error
		for !finished() && ctx.Err() == nil {
			fetches := cl.PollFetches(ctx)
			fetches.EachError(func(t string, p int32, err error) {
				if fetchErr == nil && !errors.Is(err, context.Canceled) {
					fetchErr = fmt.Errorf("%s/%d: %s", t, p, describe(err, ""))
				}
			})
			if fetchErr != nil {
				break
			}
			fetches.EachRecord(func(r *kgo.Record) {
				if finished() {
					return
				}
				if remaining != nil {
					end, ok := remaining[r.Topic][r.Partition]
					if !ok || r.Offset >= end {
						return
					}
					if r.Offset+1 >= end {
						delete(remaining[r.Topic], r.Partition)
						if len(remaining[r.Topic]) == 0 {
							delete(remaining, r.Topic)
						}
					}
				}
				format(w, r)
				mu.Lock()
				consumed++
				mu.Unlock()
				if *group != "" {
					cl.MarkCommitRecords(r)
				}
			})
			if err := w.Flush(); err != nil {
				stopProgress()
				return failf("writing records: %v", err)
			}
		}
		stopProgress()
		if *group != "" {
			cctx, cancel := g.bounded(context.WithoutCancel(ctx))
			err := cl.CommitMarkedOffsets(cctx)
			cl.LeaveGroupContext(cctx) //nolint:errcheck // leaving is best effort: the session expires anyway
			cancel()
			if err != nil {
				return failf("committing the offsets of group %s: %s", *group, describe(err, ""))
			}
		}
		if *num > 0 || *toEnd {
			g.warnf("consumed %d records", consumed)
		}
		if fetchErr != nil {
			return failf("%v", fetchErr)
		}
		return nil
	}
}

// consumeEnds returns, for -e, each partition's high watermark, leaving out the
// partitions that have nothing to read from where consume starts.
func consumeEnds(ctx context.Context, g *globals, adm *kadm.Client, start startOffset, parts map[string][]int32) (map[string]map[int32]int64, error) {
	var topics []string
	for t := range parts {
		topics = append(topics, t)
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, g.requestErr(err, "ListOffsets")
	}
	var from kadm.ListedOffsets
	switch start.kind {
	case "start":
		from, err = adm.ListStartOffsets(ctx, topics...)
	case "time":
		from, err = adm.ListOffsetsAfterMilli(ctx, start.millis, topics...)
	}
	if err != nil {
		return nil, g.requestErr(err, "ListOffsets")
	}
	out := map[string]map[int32]int64{}
	for t, ps := range parts {
		for _, p := range ps {
			end, ok := ends.Lookup(t, p)
			if !ok || end.Err != nil {
				return nil, failf("end offset of %s/%d: %s", t, p, describe(errOr(end.Err), ""))
			}
			first := end.Offset
			switch start.kind {
			case "offset":
				first = start.offset
			case "start", "time":
				if o, ok := from.Lookup(t, p); ok && o.Err == nil && o.Offset >= 0 {
					first = o.Offset
				}
			}
			if first < end.Offset {
				if out[t] == nil {
					out[t] = map[int32]int64{}
				}
				out[t][p] = end.Offset
			}
		}
	}
	return out, nil
}

func errOr(err error) error {
	if err == nil {
		return kerr.UnknownTopicOrPartition
	}
	return err
}
