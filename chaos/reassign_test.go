package chaos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/gregor-streaming/gregor/controlplane/api"
)

// Replica movement under load: reassignments and a decommission on one gregor-cp and
// four gregor-dp, while the run's producers (idempotent, acks=all, min.insync.replicas
// 2) and consumers go on; the run's checker then judges that no acknowledged write was
// lost and the replicas agree.

// cpHTTP does one request to the control plane's HTTP API and decodes the answer into
// v (if not nil); it returns the status.
func (r *run) cpHTTP(method, path string, v any) int {
	r.t.Helper()
	req, err := http.NewRequest(method, "http://"+r.c.CPs[0].HTTPAddr()+path, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		r.t.Fatalf("%s %s: %v", method, path, err)
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			r.t.Fatalf("%s %s: %v in %s", method, path, err, body)
		}
	}
	return resp.StatusCode
}

// node returns the node id as GET /v1/nodes lists it.
func (r *run) node(id int32) api.Node {
	r.t.Helper()
	var list api.NodeList
	if code := r.cpHTTP("GET", "/v1/nodes", &list); code != http.StatusOK {
		r.t.Fatalf("GET /v1/nodes: %d", code)
	}
	for _, n := range list.Nodes {
		if n.ID == id {
			return n
		}
	}
	r.t.Fatalf("node %d not in /v1/nodes: %+v", id, list.Nodes)
	return api.Node{}
}

// waitMoved waits until topic-p has exactly target as replicas, no reassignment in
// progress, and every node that lost its replica deleted its directory.
func (r *run) waitMoved(topic string, p int32, target []int32, gone ...int32) {
	r.t.Helper()
	r.c.CheckFor(r.t, 90*time.Second, func() error {
		r.supervise()
		st := r.partitionState(topic, p)
		if st.Reassigning() || !slices.Equal(st.Replicas, target) {
			return fmt.Errorf("%s-%d: replicas %v adding %v removing %v isr %v, want %v", topic, p, st.Replicas,
				st.AddingReplicas, st.RemovingReplicas, st.ISR, target)
		}
		for _, id := range gone {
			dir := filepath.Join(r.c.DP(id).Dir(), fmt.Sprintf("%s-%d", topic, p))
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("node %d still has %s (%v)", id, dir, err)
			}
		}
		return nil
	})
}

// TestReassignUnderLoad: wrong reassignments are refused with Kafka's codes; then every
// partition of the loaded topic moves, by kadm, off its leader onto the node that has
// no replica of it — the new replica catches up under load, the leadership moves to it,
// the old leader deletes its log — and one moves back by sarama's ClusterAdmin. Progress
// shows in ListPartitionReassignments and GET /v1/reassignments.
func TestReassignUnderLoad(t *testing.T) {
	r := newRun(t, "reassign", runOptions{controlPlanes: 1, dataPlanes: 4})
	r.waitProgress(mainTopic, -1, 300)
	adm := r.c.Admin(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var bad kadm.AlterPartitionAssignmentsReq
	bad.Assign("no-such-topic", 0, []int32{1, 2, 3})
	bad.Assign(mainTopic, 0, []int32{1, 2, 9}) // node 9 was never started
	bad.CancelAssign(mainTopic, 1)
	bad.Assign(mainTopic, 2, []int32{1, 1, 2})
	resps, err := adm.AlterPartitionAssignments(ctx, bad)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]*kerr.Error{"no-such-topic-0": kerr.UnknownTopicOrPartition, mainTopic + "-0": kerr.InvalidReplicaAssignment,
		mainTopic + "-1": kerr.NoReassignmentInProgress, mainTopic + "-2": kerr.InvalidReplicaAssignment}
	resps.Each(func(a kadm.AlterPartitionAssignmentsResponse) {
		name := fmt.Sprintf("%s-%d", a.Topic, a.Partition)
		if !errors.Is(a.Err, want[name]) {
			t.Errorf("%s: %v (%s), want %v", name, a.Err, a.ErrMessage, want[name])
		}
		delete(want, name)
	})
	if len(want) > 0 {
		t.Fatalf("no answer for %v", want)
	}
	if a := resps[mainTopic][0]; !strings.Contains(a.ErrMessage, "broker 9") {
		t.Errorf("dead node refused without saying which: %q", a.ErrMessage)
	}

	// Every partition: the leader leaves, the node without a replica joins, first.
	targets := map[int32][]int32{}
	leaders := map[int32]int32{}
	var move kadm.AlterPartitionAssignmentsReq
	for p := range r.opts.partitions {
		st := r.partitionState(mainTopic, p)
		var missing int32
		for _, d := range r.c.DPs {
			if !slices.Contains(st.Replicas, d.ID) {
				missing = d.ID
			}
		}
		target := []int32{missing}
		for _, id := range st.Replicas {
			if id != st.Leader {
				target = append(target, id)
			}
		}
		targets[p], leaders[p] = target, st.Leader
		move.Assign(mainTopic, p, target)
		r.fault("reassign", fmt.Sprintf("%s-%d", mainTopic, p), fmt.Sprintf("%v -> %v", st.Replicas, target))
	}
	resps, err = adm.AlterPartitionAssignments(ctx, move)
	if err == nil {
		err = resps.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	// Right after the answer, a partition is either still moving, as listed, or done.
	set := kadm.TopicsSet{}
	set.Add(mainTopic, 0, 1, 2)
	listed, err := adm.ListPartitionReassignments(ctx, set)
	if err != nil {
		t.Fatal(err)
	}
	all := kmsg.NewPtrListPartitionReassignmentsRequest() // null topics: every one
	allResp, err := all.RequestWith(ctx, r.c.Client(t))
	if err != nil || allResp.ErrorCode != 0 {
		t.Fatalf("list all: %v %+v", err, allResp)
	}
	for _, rt := range allResp.Topics {
		for _, rp := range rt.Partitions {
			if rt.Topic != mainTopic || !slices.Equal(rp.AddingReplicas, targets[rp.Partition][:1]) {
				t.Errorf("listed (null topics) %s-%d: %+v", rt.Topic, rp.Partition, rp)
			}
		}
	}
	var httpList api.ReassignmentList
	if code := r.cpHTTP("GET", "/v1/reassignments", &httpList); code != http.StatusOK {
		t.Fatalf("GET /v1/reassignments: %d", code)
	}
	for p, target := range targets {
		if l, ok := listed[mainTopic][p]; ok {
			if !slices.Equal(l.AddingReplicas, target[:1]) || !slices.Equal(l.RemovingReplicas, []int32{leaders[p]}) ||
				!slices.Equal(l.Replicas, append(slices.Clone(target), leaders[p])) {
				t.Errorf("listed %s-%d: %+v, target %v from leader %d", mainTopic, p, l, target, leaders[p])
			}
		}
	}
	for _, h := range httpList.Reassignments {
		if p := h.Partition; h.Topic != mainTopic || !slices.Equal(h.TargetReplicas, targets[p]) || !slices.Equal(h.AddingReplicas, targets[p][:1]) {
			t.Errorf("GET /v1/reassignments: %+v, target %v", h, targets[p])
		}
	}
	t.Logf("just after the alter: %d listed by Kafka, %d by HTTP", len(listed[mainTopic]), len(httpList.Reassignments))
	for p, target := range targets {
		r.waitMoved(mainTopic, p, target, leaders[p])
		if st := r.partitionState(mainTopic, p); st.Leader != target[0] {
			t.Errorf("%s-%d: leader %d after the move, want the target's first, %d", mainTopic, p, st.Leader, target[0])
		}
	}
	r.waitProgress(mainTopic, -1, 200)

	// sarama: nothing listed now; partition 0 goes back to where it was, and a cancel
	// of partition 1, which is not moving, is refused.
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V2_4_0_0
	sa, err := sarama.NewClusterAdmin(r.c.Brokers(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer sa.Close()
	status, err := sa.ListPartitionReassignments(mainTopic, []int32{0, 1, 2})
	if err != nil || len(status[mainTopic]) != 0 {
		t.Fatalf("sarama list with nothing moving: %v, %v", status, err)
	}
	back := append(slices.Clone(targets[0][1:]), leaders[0])
	r.fault("reassign", mainTopic+"-0", fmt.Sprintf("%v -> %v (sarama)", targets[0], back))
	err = sa.AlterPartitionReassignments(mainTopic, [][]int32{back, nil})
	if !errors.Is(err, sarama.ErrNoReassignmentInProgress) {
		t.Fatalf("sarama alter with a cancel of an idle partition: %v, want NO_REASSIGNMENT_IN_PROGRESS", err)
	}
	r.waitMoved(mainTopic, 0, back, targets[0][0])
	r.waitProgress(mainTopic, 0, 50)
	r.finish()
}

// TestDecommissionUnderLoad: a node that leads a partition of the loaded topic is
// decommissioned through the HTTP API: new topics leave it out, the controller moves
// its replicas away at most two at a time, and marks it decommissioned once it holds
// none. A second decommission, with too few nodes left for the replication factor,
// says it is blocked; recommission clears both.
func TestDecommissionUnderLoad(t *testing.T) {
	r := newRun(t, "decommission", runOptions{controlPlanes: 1, dataPlanes: 4, partitions: 4,
		cpFlags: []string{"--moves-in-flight-max", "2"}})
	r.waitProgress(mainTopic, -1, 300)
	var e api.Error
	if code := r.cpHTTP("POST", "/v1/nodes/42/decommission", &e); code != http.StatusNotFound || e.Error == "" {
		t.Fatalf("decommission of an unknown node: %d %q", code, e.Error)
	}
	if code := r.cpHTTP("POST", "/v1/nodes/x/decommission", &e); code != http.StatusBadRequest {
		t.Fatalf("decommission of node x: %d", code)
	}
	d := r.leaderOf(mainTopic, 0).ID
	before := r.node(d)
	if before.State != api.NodeLive || before.Replicas == 0 || before.Leaders == 0 {
		t.Fatalf("node %d before: %+v", d, before)
	}
	r.fault("decommission", fmt.Sprintf("dp%d", d), "")
	var n api.Node
	if code := r.cpHTTP("POST", fmt.Sprintf("/v1/nodes/%d/decommission", d), &n); code != http.StatusOK ||
		(n.State != api.NodeDraining && n.State != api.NodeDecommissioned) {
		t.Fatalf("decommission: %d %+v", code, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const fresh = "after-decommission"
	if resp, err := r.c.Admin(t).CreateTopics(ctx, 6, 3, nil, fresh); err != nil || resp[fresh].Err != nil {
		t.Fatalf("create %s: %v %v", fresh, err, resp[fresh].Err)
	}
	maxMoving := 0
	r.c.CheckFor(t, 2*time.Minute, func() error {
		r.supervise()
		moving := 0
		for _, st := range r.c.Metadata(t).Partitions {
			if st.Reassigning() {
				moving++
			}
		}
		maxMoving = max(maxMoving, moving)
		if n := r.node(d); n.State != api.NodeDecommissioned || n.Replicas != 0 || n.Leaders != 0 {
			return fmt.Errorf("node %d: %+v", d, n)
		}
		return nil
	})
	t.Logf("node %d decommissioned; at most %d partitions seen moving at once", d, maxMoving)
	if maxMoving > 2 {
		t.Errorf("%d reassignments in flight, --moves-in-flight-max 2", maxMoving)
	}
	for tp, st := range r.c.Metadata(t).Partitions {
		if slices.Contains(st.Replicas, d) {
			t.Errorf("%s still on node %d: %v", tp, d, st.Replicas)
		}
		if tp.Topic == mainTopic {
			dir := filepath.Join(r.c.DP(d).Dir(), fmt.Sprintf("%s-%d", tp.Topic, tp.Partition))
			r.c.CheckFor(t, 30*time.Second, func() error {
				if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
					return fmt.Errorf("%s still there (%v)", dir, err)
				}
				return nil
			})
		}
	}
	metrics := ""
	if resp, err := http.Get("http://" + r.c.CPs[0].HTTPAddr() + "/metrics"); err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		metrics = string(b)
	}
	if want := fmt.Sprintf(`gregor_cp_node_decommission_state{node="%d"} 2`, d); !strings.Contains(metrics, want) {
		t.Errorf("metrics lack %s", want)
	}
	r.waitProgress(mainTopic, -1, 200)

	// Three nodes left for RF 3: a second decommission cannot proceed, and says so.
	var other int32
	for _, dp := range r.c.DPs {
		if dp.ID != d {
			other = dp.ID
		}
	}
	r.cpHTTP("POST", fmt.Sprintf("/v1/nodes/%d/decommission", other), nil)
	r.c.CheckFor(t, 30*time.Second, func() error {
		if n := r.node(other); n.State != api.NodeDraining || len(n.Blocked) == 0 {
			return fmt.Errorf("node %d: %+v", other, n)
		}
		return nil
	})
	t.Logf("blocked: %s", r.node(other).Blocked[0])
	for _, id := range []int32{other, d} {
		if code := r.cpHTTP("POST", fmt.Sprintf("/v1/nodes/%d/recommission", id), &n); code != http.StatusOK || n.State != api.NodeLive || len(n.Blocked) != 0 {
			t.Fatalf("recommission %d: %d %+v", id, code, n)
		}
	}
	if st := r.partitionState(mainTopic, 0); st.Reassigning() {
		t.Errorf("a partition moving after the blocked decommission was cleared: %+v", st)
	}
	r.waitProgress(mainTopic, -1, 100)
	r.finish()
}
