package client

import (
	"context"
	"fmt"
	"maps"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// alterConfigsAttemptsMax bounds the compare-and-swap rounds of one AlterTopicConfigs:
// each lost round means another alter of the same topic won, and is re-applied on top
// of it, so only a storm of writers to one topic exhausts it.
const alterConfigsAttemptsMax = 64

// AlterTopicConfigs changes a topic's configs (Kafka's AlterConfigs and
// IncrementalAlterConfigs on a TOPIC resource): alter gets a copy of the stored configs
// and returns the new set, which is validated as CreateTopic validates it
// (ValidateConfigs: INVALID_CONFIG) and written by a compare-and-swap on the topic key's
// mod revision. A lost swap re-reads the topic and applies alter again to what the
// other writer stored, so concurrent alters of different configs all take effect.
// With validateOnly nothing is written and the revision is 0. It returns the etcd
// revision of the write (WatchMetadata views reach it with WaitRevision), 0 when the
// set did not change. Refusals: UNKNOWN_TOPIC_OR_PARTITION, INVALID_CONFIG, and
// whatever *Error alter returns.
func (c *Client) AlterTopicConfigs(ctx context.Context, name string, validateOnly bool, alter func(configs map[string]string) (map[string]string, error)) (int64, error) {
	if err := ValidateTopicName(name); err != nil {
		return 0, err
	}
	for attempt := 0; ; attempt++ {
		t, modRev, err := c.GetTopic(ctx, name)
		if err != nil {
			return 0, err
		}
		configs, err := alter(maps.Clone(t.Configs))
		if err != nil {
			return 0, err
		}
		if err := ValidateConfigs(configs); err != nil {
			return 0, err
		}
		if validateOnly || maps.Equal(configs, t.Configs) {
			return 0, nil
		}
		if len(configs) == 0 {
			configs = nil // stored as the topic was created without configs
		}
		t.Configs = configs
		key := cluster.TopicKey(name)
		resp, err := c.txn(ctx, "alter_topic_configs",
			[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", modRev)},
			[]clientv3.Op{clientv3.OpPut(key, cluster.MustJSON(t))})
		if err != nil {
			return 0, fmt.Errorf("client: alter configs of %s: %w", name, err)
		}
		if resp.Succeeded {
			return resp.Header.Revision, nil
		}
		if attempt+1 >= alterConfigsAttemptsMax {
			return 0, fmt.Errorf("client: alter configs of %s: %w", name, ErrConcurrentUpdate)
		}
	}
}
