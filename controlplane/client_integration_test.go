package controlplane_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/gregor-streaming/gregor/controlplane"
	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
)

// TestTopicAdmin: validation errors carry their Kafka codes; create, add partitions
// and delete work and are seen by a watching view.
func TestTopicAdmin(t *testing.T) {
	c := newControlPlane(t, 1)
	for id := int32(1); id <= 3; id++ {
		c.FakeDP(t, id, 0)
	}
	admin := c.ControlPlaneClient(t)
	ctx := testCtx(t)
	view, err := admin.WatchMetadata(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()

	bad := []struct {
		name string
		spec client.TopicSpec
		code *kerr.Error
	}{
		{"empty name", client.TopicSpec{Name: "", Partitions: 1, ReplicationFactor: 1}, kerr.InvalidTopicException},
		{"dot", client.TopicSpec{Name: ".", Partitions: 1, ReplicationFactor: 1}, kerr.InvalidTopicException},
		{"slash", client.TopicSpec{Name: "a/b", Partitions: 1, ReplicationFactor: 1}, kerr.InvalidTopicException},
		{"too long", client.TopicSpec{Name: strings.Repeat("n", 250), Partitions: 1, ReplicationFactor: 1}, kerr.InvalidTopicException},
		{"zero partitions", client.TopicSpec{Name: "t", Partitions: 0, ReplicationFactor: 1}, kerr.InvalidPartitions},
		{"too many partitions", client.TopicSpec{Name: "t", Partitions: cluster.PartitionsPerTopicMax + 1, ReplicationFactor: 1}, kerr.InvalidPartitions},
		{"rf 0", client.TopicSpec{Name: "t", Partitions: 1, ReplicationFactor: 0}, kerr.InvalidReplicationFactor},
		{"rf above live nodes", client.TopicSpec{Name: "t", Partitions: 1, ReplicationFactor: 4}, kerr.InvalidReplicationFactor},
		{"unknown config", client.TopicSpec{Name: "t", Partitions: 1, ReplicationFactor: 1, Configs: map[string]string{"x": "1"}}, kerr.InvalidConfig},
		{"bad min isr", client.TopicSpec{Name: "t", Partitions: 1, ReplicationFactor: 1, Configs: map[string]string{cluster.ConfigMinInsyncReplicas: "0"}}, kerr.InvalidConfig},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := admin.CreateTopic(ctx, tc.spec)
			if !errors.Is(err, tc.code) {
				t.Fatalf("got %v, want %s", err, tc.code.Message)
			}
			var ce *client.Error
			if !errors.As(err, &ce) || ce.Code != tc.code {
				t.Fatalf("error %v is not a *client.Error with code %s", err, tc.code.Message)
			}
		})
	}
	if _, _, err := admin.CreateTopic(ctx, client.TopicSpec{Name: "v", Partitions: 3, ReplicationFactor: 3, ValidateOnly: true}); err != nil {
		t.Fatal(err)
	}

	topic, rev, err := admin.CreateTopic(ctx, client.TopicSpec{Name: "orders", Partitions: 3, ReplicationFactor: 2,
		Configs: map[string]string{cluster.ConfigRetentionMs: "60000", cluster.ConfigMinInsyncReplicas: "2"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := admin.CreateTopic(ctx, client.TopicSpec{Name: "orders", Partitions: 1, ReplicationFactor: 1}); !errors.Is(err, kerr.TopicAlreadyExists) {
		t.Fatalf("second create: %v, want TOPIC_ALREADY_EXISTS", err)
	}
	snap, err := view.WaitRevision(ctx, rev)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := snap.Topics["v"]; ok {
		t.Fatal("validate-only created the topic")
	}
	if got := snap.Topics["orders"]; got.ID != topic.ID || got.Partitions != 3 || got.Configs[cluster.ConfigRetentionMs] != "60000" {
		t.Fatalf("view has topic %+v, created %+v", got, topic)
	}
	for p := int32(0); p < 3; p++ {
		st, ok := snap.Partitions[cluster.TopicPartition{Topic: "orders", Partition: p}]
		if !ok || len(st.Replicas) != 2 || st.Leader != st.Replicas[0] || !slices.Equal(st.ISR, st.Replicas) || st.LeaderEpoch != 0 || st.PartitionEpoch != 0 {
			t.Fatalf("partition %d initial state %+v", p, st)
		}
	}

	if _, err := admin.CreatePartitions(ctx, "orders", 3); !errors.Is(err, kerr.InvalidPartitions) {
		t.Fatalf("create partitions to same count: %v", err)
	}
	if _, err := admin.CreatePartitions(ctx, "nope", 3); !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Fatalf("create partitions of missing topic: %v", err)
	}
	if rev, err = admin.CreatePartitions(ctx, "orders", 5); err != nil {
		t.Fatal(err)
	}
	snap, _ = view.WaitRevision(ctx, rev)
	if snap.Topics["orders"].Partitions != 5 || len(snap.Partitions) != 5 {
		t.Fatalf("after add partitions: topic %+v, %d partitions", snap.Topics["orders"], len(snap.Partitions))
	}

	if rev, err = admin.DeleteTopic(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.DeleteTopic(ctx, "orders"); !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Fatalf("second delete: %v", err)
	}
	snap, _ = view.WaitRevision(ctx, rev)
	if len(snap.Topics) != 0 || len(snap.Partitions) != 0 {
		t.Fatalf("after delete: %d topics, %d partitions", len(snap.Topics), len(snap.Partitions))
	}
}

// TestRegistry: a second node with a live id is refused; after the first leaves, the id
// can register again with a new epoch.
func TestRegistry(t *testing.T) {
	c := newControlPlane(t, 1)
	first, err := c.RegisterFakeDP(t, cluster.Broker{ID: 7, Host: "127.0.0.1", Port: 9007, Rack: "r1"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	other := c.NewControlPlaneClient(t, client.Config{})
	ctx := testCtx(t)
	_, err = other.Register(ctx, cluster.Broker{ID: 7, Host: "127.0.0.2", Port: 9092}, 0)
	if !errors.Is(err, client.ErrBrokerIDInUse) || !errors.Is(err, kerr.DuplicateBrokerRegistration) {
		t.Fatalf("duplicate registration: %v", err)
	}
	epoch := first.Registration.Broker().Epoch
	if err := first.Registration.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-first.Registration.Lost():
	case <-time.After(5 * time.Second):
		t.Fatal("Lost not closed after Close")
	}
	again, err := other.Register(ctx, cluster.Broker{ID: 7, Host: "127.0.0.2", Port: 9092}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if again.Broker().Epoch <= epoch {
		t.Fatalf("new epoch %d not above old %d", again.Broker().Epoch, epoch)
	}
	// SafeUntil moves forward with every renewal and never claims more than one TTL.
	firstSafe := again.SafeUntil()
	testutil.CheckFor(t, 5*time.Second, func() error {
		now := time.Now()
		s := again.SafeUntil()
		if s.After(now.Add(time.Second)) {
			return fmt.Errorf("SafeUntil %v is more than the 1s TTL ahead of %v", s, now)
		}
		if !s.After(firstSafe) || !s.After(now) {
			return fmt.Errorf("SafeUntil %v has not advanced past %v", s, firstSafe)
		}
		return nil
	})
	brokers, _, err := other.LiveBrokers(ctx)
	if err != nil || len(brokers) != 1 || brokers[0].Host != "127.0.0.2" || brokers[0].Epoch != again.Broker().Epoch {
		t.Fatalf("live brokers %+v, %v", brokers, err)
	}
}

// TestAlterISR: the compare-and-swap accepts exactly the requests made from the current
// state by the current leader, and of two racing requests from the same state one wins.
func TestAlterISR(t *testing.T) {
	c := newControlPlane(t, 1)
	dps := map[int32]*testcluster.FakeDP{}
	for id := int32(1); id <= 3; id++ {
		dps[id] = c.FakeDP(t, id, 0)
	}
	admin := c.ControlPlaneClient(t)
	ctx := testCtx(t)
	if _, _, err := admin.CreateTopic(ctx, client.TopicSpec{Name: "isr", Partitions: 1, ReplicationFactor: 3}); err != nil {
		t.Fatal(err)
	}
	tp := cluster.TopicPartition{Topic: "isr"}
	st, err := admin.GetPartition(ctx, tp)
	if err != nil {
		t.Fatal(err)
	}
	leader := dps[st.Leader].Registration
	follower := dps[st.Replicas[1]].Registration
	shrunk := []int32{st.Leader, st.Replicas[1]}
	req := func(le, pe int32, isr []int32) client.AlterISRRequest {
		return client.AlterISRRequest{TopicPartition: tp, LeaderEpoch: le, PartitionEpoch: pe, NewISR: isr}
	}
	refusals := []struct {
		name string
		reg  *client.Registration
		req  client.AlterISRRequest
		code *kerr.Error
	}{
		{"not the leader", follower, req(0, 0, shrunk), kerr.NotLeaderForPartition},
		{"stale leader epoch", leader, req(-1, 0, shrunk), kerr.FencedLeaderEpoch},
		{"stale partition epoch", leader, req(0, 7, shrunk), kerr.InvalidUpdateVersion},
		{"ISR without leader", leader, req(0, 0, []int32{st.Replicas[1]}), kerr.InvalidRequest},
		{"ISR outside replicas", leader, req(0, 0, []int32{st.Leader, 99}), kerr.InvalidRequest},
		{"duplicate in ISR", leader, req(0, 0, []int32{st.Leader, st.Leader}), kerr.InvalidRequest},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tc.reg.AlterISR(ctx, tc.req); !errors.Is(err, tc.code) {
				t.Fatalf("got %v, want %s", err, tc.code.Message)
			}
		})
	}

	// Two leaders' worth of racing requests from the same state: exactly one wins.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = leader.AlterISR(ctx, req(0, 0, shrunk))
		}()
	}
	wg.Wait()
	if (errs[0] == nil) == (errs[1] == nil) {
		t.Fatalf("racing requests: %v, %v; want exactly one success", errs[0], errs[1])
	}
	for _, err := range errs {
		if err != nil && !errors.Is(err, kerr.InvalidUpdateVersion) {
			t.Fatalf("loser got %v, want INVALID_UPDATE_VERSION", err)
		}
	}
	st, _ = admin.GetPartition(ctx, tp)
	if !slices.Equal(st.ISR, shrunk) || st.PartitionEpoch != 1 || st.LeaderEpoch != 0 {
		t.Fatalf("after shrink: %+v", st)
	}

	// Expanding with a node that is not registered is refused.
	third := st.Replicas[2]
	oldEpoch := dps[third].Registration.Broker().Epoch
	dps[third].Registration.Close()
	if _, err := leader.AlterISR(ctx, req(0, 1, append(slices.Clone(shrunk), third))); !errors.Is(err, kerr.IneligibleReplica) {
		t.Fatalf("expand with unregistered node: %v", err)
	}
	again := c.FakeDP(t, third, 0)
	// KIP-903: registered again, it is not added on fetches its earlier registration made.
	expand := req(0, 1, append(slices.Clone(shrunk), third))
	expand.BrokerEpochs = map[int32]int64{third: oldEpoch}
	if _, err := leader.AlterISR(ctx, expand); !errors.Is(err, kerr.IneligibleReplica) {
		t.Fatalf("expand with the broker epoch of an earlier registration: %v", err)
	}
	expand.BrokerEpochs = map[int32]int64{third: again.Registration.Broker().Epoch}
	if st, err = leader.AlterISR(ctx, expand); err != nil || st.PartitionEpoch != 2 || len(st.ISR) != 3 {
		t.Fatalf("expand: %+v, %v", st, err)
	}

	// A leader whose registration is gone is fenced.
	if err := leader.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := leader.AlterISR(ctx, req(0, 2, shrunk)); err == nil {
		t.Fatal("fenced leader changed the ISR")
	}
}

// TestWatchDeliversEveryChangeInOrder: a view's change stream holds every write, in
// revision order, with no gaps in the partition epoch.
func TestWatchDeliversEveryChangeInOrder(t *testing.T) {
	c := newControlPlane(t, 3)
	dps := map[int32]*testcluster.FakeDP{1: c.FakeDP(t, 1, 0), 2: c.FakeDP(t, 2, 0)}
	watcher := c.ControlPlaneClient(t)
	ctx := testCtx(t)
	var mu sync.Mutex
	var changes []client.Change
	view, err := watcher.WatchMetadata(ctx, func(ch client.Change) {
		mu.Lock()
		changes = append(changes, ch)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer view.Close()
	if _, _, err := watcher.CreateTopic(ctx, client.TopicSpec{Name: "w", Partitions: 1, ReplicationFactor: 2}); err != nil {
		t.Fatal(err)
	}
	tp := cluster.TopicPartition{Topic: "w"}
	st, err := watcher.GetPartition(ctx, tp)
	if err != nil {
		t.Fatal(err)
	}
	leader, follower := st.Leader, st.Replicas[1]
	dp := dps[leader]
	const flips = 50
	var lastRev int64
	for i := 0; i < flips; i++ {
		isr := []int32{leader}
		if i%2 == 1 {
			isr = []int32{leader, follower}
		}
		st, err = dp.Registration.AlterISR(ctx, client.AlterISRRequest{TopicPartition: tp, LeaderEpoch: st.LeaderEpoch, PartitionEpoch: st.PartitionEpoch, NewISR: isr})
		if err != nil {
			t.Fatal(err)
		}
		lastRev = st.ModRevision
	}
	if _, err := view.WaitRevision(ctx, lastRev); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	var prevRev int64
	var epochs []int32
	for _, ch := range changes {
		if ch.Revision < prevRev {
			t.Fatalf("change at revision %d after %d", ch.Revision, prevRev)
		}
		prevRev = ch.Revision
		if ch.Kind == client.PartitionPut && ch.TopicPartition == tp {
			epochs = append(epochs, ch.State.PartitionEpoch)
		}
	}
	if len(epochs) != flips+1 {
		t.Fatalf("saw %d partition changes, want %d: %v", len(epochs), flips+1, epochs)
	}
	for i, e := range epochs {
		if e != int32(i) {
			t.Fatalf("partition epochs out of order or with gaps: %v", epochs)
		}
	}
}

// TestHWCheckpointsBatched: many partitions' high watermarks go to etcd in one
// transaction per flush, newest value wins, and a fenced node's flush is refused.
func TestHWCheckpointsBatched(t *testing.T) {
	c := newControlPlane(t, 1)
	var mu sync.Mutex
	txns := 0
	cli := c.NewControlPlaneClient(t, client.Config{ObserveOp: func(op string, _ time.Duration) {
		if op == "hw_checkpoint" {
			mu.Lock()
			txns++
			mu.Unlock()
		}
	}})
	ctx := testCtx(t)
	reg, err := cli.Register(ctx, cluster.Broker{ID: 1, Host: "127.0.0.1", Port: 9092}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	const partitions = 500
	h := reg.NewHWCheckpointer(time.Hour) // flushed by hand below
	for round := int64(1); round <= 20; round++ {
		for p := int32(0); p < partitions; p++ {
			h.Record(cluster.TopicPartition{Topic: "hw", Partition: p}, cluster.HWCheckpoint{TopicID: "id", LeaderEpoch: 3, HighWatermark: round*1000 + int64(p)})
		}
	}
	if err := h.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if txns != 1 {
		t.Fatalf("%d transactions for %d partitions, want 1", txns, partitions)
	}
	mu.Unlock()
	hws, err := cli.HighWatermarks(ctx, "hw")
	if err != nil {
		t.Fatal(err)
	}
	if len(hws) != partitions || hws[7].HighWatermark != 20007 || hws[7].LeaderEpoch != 3 {
		t.Fatalf("read back %d checkpoints, p7=%+v", len(hws), hws[7])
	}
	if err := reg.Close(); err != nil {
		t.Fatal(err)
	}
	h.Record(cluster.TopicPartition{Topic: "hw", Partition: 7}, cluster.HWCheckpoint{TopicID: "id", HighWatermark: 1})
	if err := h.Close(ctx); !errors.Is(err, client.ErrRegistrationLost) {
		t.Fatalf("flush after registration lost: %v", err)
	}
}

// TestProducerIDBlocks: blocks allocated concurrently by several nodes never overlap.
func TestProducerIDBlocks(t *testing.T) {
	c := newControlPlane(t, 1)
	ctx := testCtx(t)
	const nodes, perNode = 3, 10
	var mu sync.Mutex
	var blocks []client.ProducerIDBlock
	var wg sync.WaitGroup
	for id := int32(1); id <= nodes; id++ {
		dp := c.FakeDP(t, id, 0)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perNode; i++ {
				b, err := dp.Registration.AllocateProducerIDs(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				blocks = append(blocks, b)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(blocks) != nodes*perNode {
		t.Fatalf("%d blocks", len(blocks))
	}
	slices.SortFunc(blocks, func(a, b client.ProducerIDBlock) int { return int(a.First - b.First) })
	// Disjoint (the controller's transaction coordinator takes blocks of the same
	// counter too, so there may be gaps).
	for i, b := range blocks {
		if b.Size != client.ProducerIDBlockSize || i > 0 && b.First < blocks[i-1].First+blocks[i-1].Size {
			t.Fatalf("block %d is %+v after %+v: overlap", i, b, blocks[max(i-1, 0)])
		}
	}
}

// TestHTTP: health, readiness, metrics and the cluster view.
func TestHTTP(t *testing.T) {
	c := newControlPlane(t, 1)
	s := c.WaitController(t)
	c.FakeDP(t, 1, 0)
	ctx := testCtx(t)
	if _, _, err := c.ControlPlaneClient(t).CreateTopic(ctx, client.TopicSpec{Name: "h", Partitions: 2, ReplicationFactor: 1}); err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.HTTPAddr()+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz %d", code)
	}
	if code, body := get("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz %d %s", code, body)
	}
	testutil.CheckFor(t, 5*time.Second, func() error {
		_, body := get("/metrics")
		for _, want := range []string{"gregor_cp_is_controller 1", "gregor_cp_live_dataplane_nodes 1", "gregor_cp_offline_partitions 0",
			"gregor_cp_under_replicated_partitions 0", "gregor_cp_controller_changes_total 1", `gregor_cp_etcd_op_duration_seconds_bucket{op="get_metadata"`} {
			if !strings.Contains(body, want) {
				return fmt.Errorf("/metrics lacks %q", want)
			}
		}
		return nil
	})
	code, body := get("/v1/cluster")
	var v controlplane.ClusterView
	if err := json.Unmarshal([]byte(body), &v); err != nil || code != http.StatusOK {
		t.Fatalf("/v1/cluster %d %v: %s", code, err, body)
	}
	if !v.IsController || v.Controller != s.Name() || len(v.Members) != 1 || len(v.Brokers) != 1 ||
		len(v.Topics) != 1 || len(v.Topics[0].PartitionStates) != 2 {
		t.Fatalf("cluster view: %s", body)
	}
}

// TestAlterTopicConfigsConcurrently: alters of different configs of one topic, made at
// once from several clients, all take effect (each lost compare-and-swap is applied
// again on the winner's value); a bad value, an unknown config and an unknown topic are
// refused with their codes, and validate-only writes nothing.
func TestAlterTopicConfigsConcurrently(t *testing.T) {
	c := newControlPlane(t, 1)
	c.FakeDP(t, 1, 0)
	admin := c.ControlPlaneClient(t)
	ctx := testCtx(t)
	if _, _, err := admin.CreateTopic(ctx, client.TopicSpec{Name: "cfg", Partitions: 1, ReplicationFactor: 1,
		Configs: map[string]string{cluster.ConfigRetentionMs: "1000"}}); err != nil {
		t.Fatal(err)
	}
	set := func(k, v string) func(map[string]string) (map[string]string, error) {
		return func(m map[string]string) (map[string]string, error) {
			if m == nil {
				m = map[string]string{}
			}
			m[k] = v
			return m, nil
		}
	}
	values := map[string]string{
		cluster.ConfigRetentionBytes: "4096", cluster.ConfigSegmentMs: "60000", cluster.ConfigFlushMs: "10",
		cluster.ConfigMinInsyncReplicas: "1", cluster.ConfigMaxMessageBytes: "2048", cluster.ConfigFlushMessages: "5",
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(values))
	for k, v := range values {
		cl := c.NewControlPlaneClient(t, client.Config{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := cl.AlterTopicConfigs(ctx, "cfg", false, set(k, v))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	topic, _, err := admin.GetTopic(ctx, "cfg")
	if err != nil {
		t.Fatal(err)
	}
	values[cluster.ConfigRetentionMs] = "1000"
	if !maps.Equal(topic.Configs, values) {
		t.Fatalf("configs after concurrent alters: %v, want %v", topic.Configs, values)
	}
	for _, tc := range []struct {
		topic, key, value string
		want              error
	}{
		{"cfg", cluster.ConfigRetentionMs, "-2", kerr.InvalidConfig},
		{"cfg", "no.such.config", "1", kerr.InvalidConfig},
		{"missing", cluster.ConfigRetentionMs, "1", kerr.UnknownTopicOrPartition},
	} {
		if _, err := admin.AlterTopicConfigs(ctx, tc.topic, false, set(tc.key, tc.value)); !errors.Is(err, tc.want) {
			t.Fatalf("%s %s=%s: %v, want %v", tc.topic, tc.key, tc.value, err, tc.want)
		}
	}
	if rev, err := admin.AlterTopicConfigs(ctx, "cfg", true, set(cluster.ConfigRetentionMs, "5")); err != nil || rev != 0 {
		t.Fatalf("validate only: %d %v", rev, err)
	}
	if after, _, _ := admin.GetTopic(ctx, "cfg"); after.Configs[cluster.ConfigRetentionMs] != "1000" {
		t.Fatalf("validate only wrote %v", after.Configs)
	}
}
