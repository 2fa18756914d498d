package proto

import (
	"bytes"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestFetchResponseMatchesKmsg writes responses with the appenders, records inline, and
// compares them with kmsg's encoding for every version served.
func TestFetchResponseMatchesKmsg(t *testing.T) {
	records := append(sampleBatch(), sampleBatch()...)
	for v := int16(FetchVersionMin); v <= FetchVersionMax; v++ {
		resp := kmsg.NewPtrFetchResponse()
		resp.SetVersion(v)
		resp.ThrottleMillis = 3
		resp.ErrorCode = 0
		resp.SessionID = 0
		parts := []FetchPartition{
			{Partition: 0, HighWatermark: 10, LastStableOffset: 10, LogStartOffset: 2, RecordsBytes: int32(len(records))},
			{Partition: 4, ErrorCode: 1, HighWatermark: -1, LastStableOffset: -1, LogStartOffset: -1},
		}
		var mine []byte
		mine = AppendFetchResponseStart(mine, v, 3, 0, 0, 2)
		for _, topic := range []string{"orders", "t2"} {
			kt := kmsg.NewFetchResponseTopic()
			kt.Topic = topic
			mine = AppendFetchTopicStart(mine, topic, len(parts))
			for i := range parts {
				p := &parts[i]
				kp := kmsg.NewFetchResponseTopicPartition()
				kp.Partition, kp.ErrorCode, kp.HighWatermark = p.Partition, p.ErrorCode, p.HighWatermark
				kp.LastStableOffset, kp.LogStartOffset = p.LastStableOffset, p.LogStartOffset
				kp.PreferredReadReplica = -1
				kp.RecordBatches = []byte{}
				mine = AppendFetchPartition(mine, v, p)
				if p.RecordsBytes > 0 {
					kp.RecordBatches = records
					mine = append(mine, records...)
				}
				kt.Partitions = append(kt.Partitions, kp)
			}
			resp.Topics = append(resp.Topics, kt)
		}
		if want := resp.AppendTo(nil); !bytes.Equal(mine, want) {
			t.Fatalf("v%d: encoding differs from kmsg\nours %x\nkmsg %x", v, mine, want)
		}
		back := kmsg.NewPtrFetchResponse()
		back.SetVersion(v)
		if err := back.ReadFrom(mine); err != nil {
			t.Fatalf("v%d: kmsg cannot read ours: %v", v, err)
		}
	}
}
