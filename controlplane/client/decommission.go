package client

// Node decommission: an operator's durable intent that a data-plane node be emptied and
// given no new replica (cluster.Decommission, under cluster.DecommissionPrefix). The
// control plane's HTTP API writes and deletes the key; the controller moves the
// replicas and marks the node decommissioned once it holds none; topic and partition
// creation here leave the node out (assignableBrokers).

import (
	"context"
	"fmt"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// Decommission asks that node id be decommissioned: it puts the node's decommission key
// (state draining) unless it exists already, and returns the key's value either way. It
// does not check that the node is known: the caller (the HTTP API) does, from its view.
func (c *Client) Decommission(ctx context.Context, id int32) (cluster.Decommission, error) {
	key := cluster.DecommissionKey(id)
	v := cluster.Decommission{State: cluster.DecommissionDraining, RequestedMs: time.Now().UnixMilli()}
	resp, err := c.txn(ctx, "decommission",
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)},
		[]clientv3.Op{clientv3.OpPut(key, cluster.MustJSON(v))},
		clientv3.OpGet(key))
	if err != nil {
		return v, fmt.Errorf("client: decommission node %d: %w", id, err)
	}
	if resp.Succeeded {
		v.ModRevision = resp.Header.Revision
		return v, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 { // deleted between the compare and the read: cannot happen in one txn
		return v, fmt.Errorf("client: decommission node %d: key vanished", id)
	}
	_, cur, err := cluster.DecodeDecommission(key, kvs[0].Value, kvs[0].ModRevision)
	if err != nil {
		return v, fmt.Errorf("client: decommission node %d: %w", id, err)
	}
	return cur, nil
}

// Recommission clears node id's decommission key: replicas may be placed on it again.
// It returns the revision of the change (the view shows it from there on; nothing
// changes if there was no key).
func (c *Client) Recommission(ctx context.Context, id int32) (int64, error) {
	resp, err := c.txn(ctx, "recommission", nil, []clientv3.Op{clientv3.OpDelete(cluster.DecommissionKey(id))})
	if err != nil {
		return 0, fmt.Errorf("client: recommission node %d: %w", id, err)
	}
	return resp.Header.Revision, nil
}

// assignableBrokers reads, at one revision, the registered nodes that are not being
// decommissioned, ordered by id, and returns with them a compare that fails if a
// decommission is asked for after the read: a topic created with them is then retried,
// and no new replica lands on a node from the moment its decommission key exists.
func (c *Client) assignableBrokers(ctx context.Context) ([]cluster.Broker, []clientv3.Cmp, error) {
	resp, err := c.txn(ctx, "get_assignable_brokers", nil, []clientv3.Op{
		clientv3.OpGet(cluster.BrokersPrefix, clientv3.WithPrefix()),
		clientv3.OpGet(cluster.DecommissionPrefix, clientv3.WithPrefix()),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("client: assignable brokers: %w", err)
	}
	out := []cluster.Broker{}
	draining := map[int32]bool{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		id, err := cluster.ParseDecommissionKey(string(kv.Key))
		if err != nil {
			return nil, nil, fmt.Errorf("client: assignable brokers: %w", err)
		}
		draining[id] = true
	}
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		b, err := cluster.DecodeBroker(string(kv.Key), kv.Value, kv.ModRevision)
		if err != nil {
			return nil, nil, fmt.Errorf("client: assignable brokers: %w", err)
		}
		if !draining[b.ID] {
			out = append(out, b)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	// Every decommission key written since the read has a higher mod revision (with no
	// key the compare is against 0 and holds).
	cmp := clientv3.Compare(clientv3.ModRevision(cluster.DecommissionPrefix), "<", resp.Header.Revision+1).WithPrefix()
	return out, []clientv3.Cmp{cmp}, nil
}
