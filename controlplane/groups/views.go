package groups

import (
	"context"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// View is one group as /v1/cluster shows it.
type View struct {
	Group        string       `json:"group"`
	State        string       `json:"state"`
	Generation   int32        `json:"generation"`
	ProtocolType string       `json:"protocolType,omitempty"`
	Protocol     string       `json:"protocol,omitempty"`
	Leader       string       `json:"leader,omitempty"`
	Members      []MemberView `json:"members"`
	Offsets      []OffsetView `json:"offsets"`
	TotalLag     int64        `json:"totalLag"`
}

// MemberView is one member of a group.
type MemberView struct {
	ID         string             `json:"id"`
	InstanceID string             `json:"instanceId,omitempty"`
	ClientID   string             `json:"clientId"`
	ClientHost string             `json:"clientHost"`
	Assignment map[string][]int32 `json:"assignment,omitempty"`
}

// OffsetView is one committed offset and the partition's lag behind the high
// watermark last checkpointed by its leader (at most about a second old).
type OffsetView struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	// HighWatermark is -1 when no checkpoint is known; Lag is then -1 too.
	HighWatermark int64  `json:"highWatermark"`
	Lag           int64  `json:"lag"`
	Metadata      string `json:"metadata,omitempty"`
}

// HighWatermarks looks up a partition's last checkpointed high watermark for the lag
// shown in views; false when none is known.
type HighWatermarks func(topic string, partition int32) (int64, bool)

// Views describes every group, with its lag against hw (nil: lag unknown).
func (co *Coordinator) Views(hw HighWatermarks) []View {
	co.mu.Lock()
	defer co.mu.Unlock()
	return views(co.groups, hw)
}

// LoadViews describes the groups as last persisted in st, for a node that is not the
// active coordinator: the last persisted generation, members and offsets.
func LoadViews(ctx context.Context, st Loader, hw HighWatermarks) ([]View, error) {
	lg, err := loadGroups(ctx, st)
	if err != nil {
		return nil, err
	}
	return views(lg.build(time.Time{}), hw), nil
}

func views(groups map[string]*group, hw HighWatermarks) []View {
	if hw == nil {
		hw = func(string, int32) (int64, bool) { return 0, false }
	}
	var out []View
	for _, id := range sortedKeys(groups) {
		g := groups[id]
		v := View{Group: id, State: g.state.String(), Generation: g.generation, ProtocolType: g.protocolType,
			Protocol: g.protocol, Leader: g.leader, Members: []MemberView{}, Offsets: []OffsetView{}}
		for _, m := range g.sortedMembers() {
			mv := MemberView{ID: m.id, ClientID: m.clientID, ClientHost: m.clientHost}
			if m.instanceID != nil {
				mv.InstanceID = *m.instanceID
			}
			if g.protocolType == consumerProtocolType && len(m.assignment) > 0 {
				var a kmsg.ConsumerMemberAssignment
				if a.ReadFrom(m.assignment) == nil {
					mv.Assignment = map[string][]int32{}
					for _, t := range a.Topics {
						mv.Assignment[t.Topic] = append(mv.Assignment[t.Topic], t.Partitions...)
					}
				}
			}
			v.Members = append(v.Members, mv)
		}
		for tp, o := range g.offsets {
			ov := OffsetView{Topic: tp.topic, Partition: tp.partition, Offset: o.Offset, Metadata: o.Metadata, HighWatermark: -1, Lag: -1}
			if hw, ok := hw(tp.topic, tp.partition); ok {
				ov.HighWatermark, ov.Lag = hw, max(0, hw-o.Offset)
				v.TotalLag += ov.Lag
			}
			v.Offsets = append(v.Offsets, ov)
		}
		slices.SortFunc(v.Offsets, func(a, b OffsetView) int {
			if a.Topic != b.Topic {
				if a.Topic < b.Topic {
					return -1
				}
				return 1
			}
			return int(a.Partition - b.Partition)
		})
		out = append(out, v)
	}
	return out
}
