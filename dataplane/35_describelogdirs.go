package dataplane

// DescribeLogDirs, key 35, versions 0-4 (v2: flexible; v3: top-level error code; v4:
// the directory's total and usable bytes, KIP-827). A node keeps every replica in one
// data directory (--data-dir), so the answer has one log dir: the replicas this node
// holds, leader or follower, of the topics and partitions asked for (null topics: all
// of them), each with its size in bytes, its offset lag (the high watermark past its
// log end, Kafka's getLogEndOffsetLag: 0 but for a follower's passing moment) and
// is_future false (no replica moves between directories). Partitions asked for that
// this node does not hold are left out, as Kafka leaves them out.

import (
	"path/filepath"
	"sort"

	"github.com/gregor-streaming/gregor/proto"
	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/sys/unix"
)

const describeLogDirsKey = int16(kmsg.DescribeLogDirs)

func handleDescribeLogDirs(s *Server, r *request) error {
	req := kmsg.NewPtrDescribeLogDirsRequest()
	req.SetVersion(r.hdr.APIVersion)
	if req.IsFlexible() {
		if err := proto.CheckShape(r.body, proto.DescribeLogDirsRequestV2); err != nil {
			return err
		}
	}
	if err := req.ReadFrom(r.body); err != nil {
		return err
	}
	resp := req.ResponseKind().(*kmsg.DescribeLogDirsResponse)
	resp.SetVersion(r.hdr.APIVersion)
	var asked map[string]map[int32]bool // nil: every replica
	if req.Topics != nil {
		asked = map[string]map[int32]bool{}
		for _, t := range req.Topics {
			if asked[t.Topic] == nil {
				asked[t.Topic] = map[int32]bool{}
			}
			for _, p := range t.Partitions {
				asked[t.Topic][p] = true
			}
		}
	}
	dir := kmsg.NewDescribeLogDirsResponseDir()
	dir.Dir = s.cfg.DataDir
	if abs, err := filepath.Abs(s.cfg.DataDir); err == nil {
		dir.Dir = abs
	}
	var st unix.Statfs_t
	if err := unix.Statfs(s.cfg.DataDir, &st); err == nil {
		dir.TotalBytes, dir.UsableBytes = int64(st.Blocks)*st.Bsize, int64(st.Bavail)*st.Bsize
	} else {
		dir.TotalBytes, dir.UsableBytes = -1, -1 // Kafka's UNKNOWN_VOLUME_BYTES
	}
	topics := map[string]int{}
	for _, p := range s.replicas.Partitions() {
		if asked != nil && !asked[p.Topic][p.Index] {
			continue
		}
		i, ok := topics[p.Topic]
		if !ok {
			i = len(dir.Topics)
			topics[p.Topic] = i
			t := kmsg.NewDescribeLogDirsResponseDirTopic()
			t.Topic = p.Topic
			dir.Topics = append(dir.Topics, t)
		}
		log := p.Log()
		rp := kmsg.NewDescribeLogDirsResponseDirTopicPartition()
		rp.Partition, rp.Size = p.Index, log.Size()
		rp.OffsetLag = max(p.HighWatermark()-log.LogEndOffset(), 0)
		dir.Topics[i].Partitions = append(dir.Topics[i].Partitions, rp)
	}
	sort.Slice(dir.Topics, func(i, j int) bool { return dir.Topics[i].Topic < dir.Topics[j].Topic })
	for _, t := range dir.Topics {
		sort.Slice(t.Partitions, func(i, j int) bool { return t.Partitions[i].Partition < t.Partitions[j].Partition })
	}
	resp.Dirs = append(resp.Dirs, dir)
	writeResponse(r, resp)
	return nil
}
