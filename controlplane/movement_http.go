package controlplane

// The HTTP API of replica movement (shapes in package controlplane/api): the nodes and
// their decommission state, decommission and recommission (Kafka has no API for them),
// and the reassignments in progress with how far each has got. Any control-plane member
// answers, from its metadata view; decommission and recommission write to etcd and
// answer once the member's view shows the write.

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/api"
	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/controlplane/controller"
)

// nodeWriteTimeout bounds a decommission or recommission: the etcd write and the wait
// for this member's view to show it.
const nodeWriteTimeout = 5 * time.Second

// registerMovementHTTP adds the movement endpoints to mux.
func (s *Server) registerMovementHTTP(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/nodes", s.handleNodes)
	mux.HandleFunc("POST /v1/nodes/{id}/decommission", s.handleDecommission)
	mux.HandleFunc("POST /v1/nodes/{id}/recommission", s.handleRecommission)
	mux.HandleFunc("GET /v1/reassignments", s.handleReassignments)
}

// writeJSON answers v with status code.
func (s *Server) writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		s.logger.Debug("write HTTP answer", "err", err)
	}
}

// writeError answers an api.Error with status code.
func (s *Server) writeError(w http.ResponseWriter, code int, msg string) {
	s.writeJSON(w, code, api.Error{Error: msg})
}

// describeNodes lists every node snap knows: registered, holding replicas, or with a
// decommission key; ordered by id.
func describeNodes(snap *client.Snapshot) []api.Node {
	nodes := map[int32]*api.Node{}
	get := func(id int32) *api.Node {
		n, ok := nodes[id]
		if !ok {
			n = &api.Node{ID: id}
			nodes[id] = n
		}
		return n
	}
	for id, b := range snap.Brokers {
		n := get(id)
		n.Registered, n.Host, n.Port, n.Rack = true, b.Host, b.Port, b.Rack
		n.ControlledShutdown = snap.InControlledShutdown(id)
	}
	for tp, st := range snap.Partitions {
		if _, ok := snap.Topics[tp.Topic]; !ok {
			continue
		}
		for _, id := range st.Replicas {
			get(id).Replicas++
		}
		if st.Leader != cluster.NoLeader {
			get(st.Leader).Leaders++
		}
	}
	blocked := controller.DecommissionBlocked(snap)
	for id, d := range snap.Decommissions {
		n := get(id)
		n.DecommissionRequestedMs, n.DecommissionCompletedMs = d.RequestedMs, d.CompletedMs
		n.Blocked = blocked[id]
	}
	out := make([]api.Node, 0, len(nodes))
	for id, n := range nodes {
		switch d, ok := snap.Decommissions[id]; {
		case ok && d.State == cluster.DecommissionDone:
			n.State = api.NodeDecommissioned
		case ok:
			n.State = api.NodeDraining
		case n.Registered:
			n.State = api.NodeLive
		default:
			n.State = api.NodeUnregistered
		}
		out = append(out, *n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// handleNodes answers GET /v1/nodes.
func (s *Server) handleNodes(w http.ResponseWriter, _ *http.Request) {
	snap := s.snapshot()
	if snap == nil {
		s.writeError(w, http.StatusServiceUnavailable, "starting")
		return
	}
	s.writeJSON(w, http.StatusOK, api.NodeList{Nodes: describeNodes(snap)})
}

// nodeFromPath parses the {id} of a node path; it answers 400 and returns false if it
// is not a node id, 503 if the node is starting.
func (s *Server) nodeFromPath(w http.ResponseWriter, r *http.Request) (int32, *client.Snapshot, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 32)
	if err != nil || id < 0 {
		s.writeError(w, http.StatusBadRequest, "node id "+strconv.Quote(r.PathValue("id"))+" is not a non-negative 32-bit integer")
		return 0, nil, false
	}
	snap := s.snapshot()
	if snap == nil {
		s.writeError(w, http.StatusServiceUnavailable, "starting")
		return 0, nil, false
	}
	return int32(id), snap, true
}

// answerNode answers the node id as the view shows it once it includes rev.
func (s *Server) answerNode(ctx context.Context, w http.ResponseWriter, id int32, rev int64) {
	snap, err := s.view.WaitRevision(ctx, rev)
	if err != nil {
		s.writeError(w, http.StatusServiceUnavailable, "written, but this member's view did not show it in time: "+err.Error())
		return
	}
	for _, n := range describeNodes(snap) {
		if n.ID == id {
			s.writeJSON(w, http.StatusOK, n)
			return
		}
	}
	s.writeJSON(w, http.StatusOK, api.Node{ID: id, State: api.NodeUnregistered})
}

// knownNode reports whether snap knows node id: registered, holding replicas, or with a
// decommission key.
func knownNode(snap *client.Snapshot, id int32) bool {
	if _, ok := snap.Brokers[id]; ok || snap.Decommissioning(id) {
		return true
	}
	for _, st := range snap.Partitions {
		if slices.Contains(st.Replicas, id) {
			return true
		}
	}
	return false
}

// handleDecommission answers POST /v1/nodes/{id}/decommission: the node's decommission
// key is put (state draining) unless it exists; the controller does the rest.
func (s *Server) handleDecommission(w http.ResponseWriter, r *http.Request) {
	id, snap, ok := s.nodeFromPath(w, r)
	if !ok {
		return
	}
	if !knownNode(snap, id) {
		s.writeError(w, http.StatusNotFound, "node "+strconv.Itoa(int(id))+" is not known: not registered and holding no replica")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), nodeWriteTimeout)
	defer cancel()
	d, err := s.cli.Decommission(ctx, id)
	if err != nil {
		s.writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	s.logger.Info("decommission asked for", "node", id, "state", d.State)
	s.answerNode(ctx, w, id, d.ModRevision)
}

// handleRecommission answers POST /v1/nodes/{id}/recommission: the node's decommission
// key is deleted; replicas may be placed on it again.
func (s *Server) handleRecommission(w http.ResponseWriter, r *http.Request) {
	id, snap, ok := s.nodeFromPath(w, r)
	if !ok {
		return
	}
	if !knownNode(snap, id) {
		s.writeError(w, http.StatusNotFound, "node "+strconv.Itoa(int(id))+" is not known: not registered, holding no replica, not decommissioned")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), nodeWriteTimeout)
	defer cancel()
	rev, err := s.cli.Recommission(ctx, id)
	if err != nil {
		s.writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	s.logger.Info("recommissioned", "node", id)
	s.answerNode(ctx, w, id, rev)
}

// describeReassignments lists the partitions of snap being reassigned, by topic and
// partition.
func describeReassignments(snap *client.Snapshot) []api.Reassignment {
	out := []api.Reassignment{}
	for tp, st := range snap.Partitions {
		if _, ok := snap.Topics[tp.Topic]; !ok || !st.Reassigning() {
			continue
		}
		inSync := []int32{}
		for _, id := range st.AddingReplicas {
			if slices.Contains(st.ISR, id) {
				inSync = append(inSync, id)
			}
		}
		out = append(out, api.Reassignment{Topic: tp.Topic, Partition: tp.Partition, Replicas: nonNil(st.Replicas),
			TargetReplicas: nonNil(st.TargetReplicas()), AddingReplicas: nonNil(st.AddingReplicas),
			RemovingReplicas: nonNil(st.RemovingReplicas), AddingInSync: inSync, Leader: st.Leader, ISR: nonNil(st.ISR)})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Topic != out[j].Topic {
			return out[i].Topic < out[j].Topic
		}
		return out[i].Partition < out[j].Partition
	})
	return out
}

// nonNil returns ids, or an empty slice for nil: JSON lists, never null.
func nonNil(ids []int32) []int32 {
	if ids == nil {
		return []int32{}
	}
	return ids
}

// handleReassignments answers GET /v1/reassignments.
func (s *Server) handleReassignments(w http.ResponseWriter, _ *http.Request) {
	snap := s.snapshot()
	if snap == nil {
		s.writeError(w, http.StatusServiceUnavailable, "starting")
		return
	}
	s.writeJSON(w, http.StatusOK, api.ReassignmentList{Reassignments: describeReassignments(snap),
		MovesInFlightMax: s.ctl.MovesInFlightMax(), AutoBalance: s.cfg.AutoBalance})
}
