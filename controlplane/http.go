package controlplane

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sort"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// HTTP limits.
const (
	httpReadHeaderTimeout = 5 * time.Second
	httpWriteTimeout      = 10 * time.Second
	httpIdleTimeout       = time.Minute
)

// startHTTP binds the HTTP listener and serves in the background.
func (s *Server) startHTTP() error {
	ln, err := net.Listen("tcp", s.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("controlplane: http listen %s: %w", s.cfg.HTTPAddr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", s.handleMetrics)
	mux.HandleFunc("GET /healthz", s.handleHealthz)
	mux.HandleFunc("GET /readyz", s.handleReadyz)
	mux.HandleFunc("GET /v1/cluster", s.handleCluster)
	s.registerMovementHTTP(mux)
	s.httpLn = ln
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: httpReadHeaderTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       httpIdleTimeout,
	}
	go func() {
		if err := s.http.Serve(ln); err != nil && err != http.ErrServerClosed {
			s.logger.Error("http server stopped", "err", err)
		}
	}()
	return nil
}

func (s *Server) handleMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	s.metrics.set.WritePrometheus(w)
	vm.WriteProcessMetrics(w)
}

// handleHealthz answers 200 while the process serves HTTP: liveness only.
func (s *Server) handleHealthz(w http.ResponseWriter, _ *http.Request) {
	_, _ = w.Write([]byte("ok\n"))
}

// handleReadyz answers 200 when this member has started, sees an etcd leader and can
// do a linearizable read (so it is part of a quorum); 503 otherwise.
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	if err := s.checkReady(r.Context()); err != nil {
		http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ready\n"))
}

func (s *Server) checkReady(ctx context.Context) error {
	if !s.ready.Load() {
		return fmt.Errorf("starting")
	}
	if s.etcd.Server.Leader() == 0 {
		return fmt.Errorf("no etcd leader")
	}
	ctx, cancel := context.WithTimeout(ctx, readyCheckTimeout)
	defer cancel()
	if _, err := s.ec.Get(ctx, cluster.ControllerPrefix, clientv3.WithCountOnly()); err != nil {
		return fmt.Errorf("linearizable read: %w", err)
	}
	return nil
}

// ClusterView is the JSON document served at /v1/cluster.
type ClusterView struct {
	Name         string `json:"name"`
	Ready        bool   `json:"ready"`
	IsController bool   `json:"isController"`
	// Controller is the active controller's name as this node last saw it.
	Controller string       `json:"controller"`
	EtcdMember string       `json:"etcdMemberId"`
	EtcdLeader string       `json:"etcdLeaderId"`
	Members    []MemberView `json:"members"`
	// MetadataRevision is the etcd revision the brokers/topics/partitions below reflect.
	MetadataRevision int64            `json:"metadataRevision"`
	Brokers          []cluster.Broker `json:"brokers"`
	// ControlledShutdown lists the nodes in controlled shutdown: stopping, their
	// leaderships being moved away.
	ControlledShutdown        []int32     `json:"controlledShutdown"`
	Topics                    []TopicView `json:"topics"`
	OfflinePartitions         int         `json:"offlinePartitions"`
	UnderReplicatedPartitions int         `json:"underReplicatedPartitions"`
	// PreferredReplicaImbalance counts the partitions led by another node than their
	// preferred leader (replicas[0]), offline ones included.
	PreferredReplicaImbalance int `json:"preferredReplicaImbalance"`
	// InternalListener is where data-plane nodes forward group requests.
	InternalListener string `json:"internalListener,omitempty"`
	// Groups are the consumer groups with their members, committed offsets and lag:
	// live state on the active controller, the last persisted state elsewhere
	// (GroupsSource says which: "coordinator" or "etcd").
	Groups       []GroupView `json:"groups"`
	GroupsSource string      `json:"groupsSource"`
}

// MemberView is one etcd member.
type MemberView struct {
	Name       string   `json:"name"`
	ID         string   `json:"id"`
	PeerURLs   []string `json:"peerURLs"`
	ClientURLs []string `json:"clientURLs"`
}

// TopicView is a topic and its partition states.
type TopicView struct {
	cluster.Topic
	PartitionStates []PartitionView `json:"partitionStates"`
}

// PartitionView is one partition's state.
type PartitionView struct {
	Partition int32 `json:"partition"`
	cluster.PartitionState
}

func (s *Server) handleCluster(w http.ResponseWriter, r *http.Request) {
	v := ClusterView{
		Name:               s.cfg.Name,
		Ready:              s.ready.Load(),
		IsController:       s.IsController(),
		Controller:         s.Controller(),
		EtcdMember:         s.etcd.Server.MemberID().String(),
		EtcdLeader:         s.etcd.Server.Leader().String(),
		InternalListener:   s.ListenAddr(),
		Brokers:            []cluster.Broker{},
		ControlledShutdown: []int32{},
		Topics:             []TopicView{},
		Groups:             []GroupView{},
	}
	if s.ready.Load() {
		ctx, cancel := context.WithTimeout(r.Context(), readyCheckTimeout)
		hws := s.highWatermarks(ctx)
		if rt := s.groupRT.Load(); rt != nil {
			v.Groups, v.GroupsSource = rt.Views(hws), "coordinator"
		} else if gs, err := s.groupViewsFromStore(ctx, hws); err == nil {
			v.Groups, v.GroupsSource = gs, "etcd"
		}
		cancel()
		if v.Groups == nil {
			v.Groups = []GroupView{}
		}
	}
	for _, m := range s.etcd.Server.Cluster().Members() {
		v.Members = append(v.Members, MemberView{Name: m.Name, ID: m.ID.String(), PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs})
	}
	sort.Slice(v.Members, func(i, j int) bool { return v.Members[i].Name < v.Members[j].Name })
	if snap := s.snapshot(); snap != nil {
		v.MetadataRevision = snap.Revision
		for _, b := range snap.Brokers {
			v.Brokers = append(v.Brokers, b)
		}
		sort.Slice(v.Brokers, func(i, j int) bool { return v.Brokers[i].ID < v.Brokers[j].ID })
		for _, b := range v.Brokers {
			if snap.InControlledShutdown(b.ID) {
				v.ControlledShutdown = append(v.ControlledShutdown, b.ID)
			}
		}
		byTopic := map[string][]PartitionView{}
		for tp, st := range snap.Partitions {
			byTopic[tp.Topic] = append(byTopic[tp.Topic], PartitionView{Partition: tp.Partition, PartitionState: st})
		}
		for _, t := range snap.Topics {
			ps := byTopic[t.Name]
			sort.Slice(ps, func(i, j int) bool { return ps[i].Partition < ps[j].Partition })
			v.Topics = append(v.Topics, TopicView{Topic: t, PartitionStates: ps})
		}
		sort.Slice(v.Topics, func(i, j int) bool { return v.Topics[i].Name < v.Topics[j].Name })
		health := partitionHealth(snap)
		v.OfflinePartitions, v.UnderReplicatedPartitions = health.offline, health.underReplicated
		v.PreferredReplicaImbalance = health.imbalanced
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		s.logger.Warn("write cluster view", "err", err)
	}
}
