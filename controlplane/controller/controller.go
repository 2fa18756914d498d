// Package controller is the control plane's controller: one control-plane node at a
// time, elected through etcd (concurrency.Election), keeps every partition's leader and
// ISR right as data-plane nodes come and go.
//
// It does not sit on the request path of topic admin or ISR changes: those are
// compare-and-swap transactions the client commits itself. It reacts to what only it
// can decide — a data-plane node's registration expiring, a node restarting, a node
// asking for a controlled shutdown — by moving leadership of that node's partitions
// and removing it from ISRs (Elect, a pure function, decides; the reconcile loop
// writes, fenced on the election key). It moves leaderships back to preferred replicas
// (PreferredLeader, after a delay) and runs the elections admins ask for
// (ElectLeaders, moves.go). It also observes who the controller is, for every node,
// elected or not.
//
// A term of controllership may run more than the reconcile loop: Config.OnTerm (the
// node runs the group coordinator there).
package controller

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
)

// Controller limits.
const (
	// reconcileInterval re-checks every partition even without a watch event, so a
	// write lost to a transient error is retried.
	reconcileInterval = time.Second
	// electionTxnPartitionsMax bounds the partitions changed in one controller
	// transaction: a failover of a node leading thousands of partitions takes a few
	// transactions, not thousands. A batch that loses a race is retried one by one.
	electionTxnPartitionsMax = 128
	// resignTimeout bounds resigning the election after a term.
	resignTimeout = 5 * time.Second
	// retryBackoffMin and retryBackoffMax bound the wait between attempts of the loops.
	retryBackoffMin = 50 * time.Millisecond
	retryBackoffMax = 2 * time.Second
)

// Config configures a Controller.
type Config struct {
	// Name is this node's name: the value of its election key.
	Name string
	// TTL is the controller session's lease (rounded up to whole seconds): a controller
	// that dies is replaced about this long after its last keepalive.
	TTL time.Duration
	// Logger receives the controller's logs.
	Logger *slog.Logger
	// Metrics is where the controller's counters are registered.
	Metrics *vm.Set
	// OnTerm, if set, runs for each term of controllership alongside the reconcile
	// loop, until its ctx ends (the term is over); the term ends only once it returned.
	OnTerm func(ctx context.Context, term Term)
	// NoAutoLeaderRebalance turns off moving leaderships back to preferred replicas
	// (Kafka's auto.leader.rebalance.enable=false); ElectLeaders still moves them.
	NoAutoLeaderRebalance bool
	// LeaderRebalanceDelay is how long a preferred replica must have been able to lead
	// before its leadership moves back (default DefaultLeaderRebalanceDelay).
	LeaderRebalanceDelay time.Duration
	// AutoBalance turns on the balancer (movement.go): replicas, then preferred
	// leaderships, evened out over the live nodes, and the replicas of nodes gone for
	// DeadNodeDelay moved to live ones.
	AutoBalance bool
	// MovesInFlightMax bounds the reassignments in progress for the controller to start
	// more of its own, for decommissions and the balancer (default
	// DefaultMovesInFlightMax). Reassignments admins ask for are not bounded.
	MovesInFlightMax int
	// DeadNodeDelay is how long a node must have been unregistered before the balancer
	// moves its replicas away (default DefaultDeadNodeDelay).
	DeadNodeDelay time.Duration
}

// Conn is how the controller reaches the cluster, once the node's etcd is up.
type Conn struct {
	// Etcd is the node's etcd client (sessions, the election, the controller observer).
	Etcd *clientv3.Client
	// Client commits the controller's transactions (and times them).
	Client *client.Client
	// View is the node's metadata view the controller reconciles against.
	View *client.Metadata
}

// Term is one term of controllership: the session whose lease holds the election key,
// and the election won. Writes of the term compare the key's create revision
// (Election.Key, Election.Rev), so they fail once the term is over.
type Term struct {
	Session  *concurrency.Session
	Election *concurrency.Election
}

// Controller campaigns for controllership, reconciles while elected, and observes who
// the controller is.
type Controller struct {
	cfg  Config
	conn Conn // set by Run, before its loops start
	// kick wakes the reconcile loop when the metadata changes.
	kick chan struct{}
	// isController is set while this node is the active controller.
	isController atomic.Bool
	// current is the name of the active controller as last observed ("" if none).
	current atomic.Pointer[string]
	// term is the election won while this node is the active controller (nil
	// otherwise): the fence of ElectLeaders' writes.
	term atomic.Pointer[concurrency.Election]
	// writeMu serialises the reconcile pass and ElectLeaders: each decides from the
	// view and writes, and must not race the other's writes.
	writeMu sync.Mutex
	// preferredSince is when each partition was first seen movable back to its
	// preferred replica (rebalance); used by the reconcile pass only, under writeMu.
	preferredSince map[cluster.TopicPartition]time.Time
	// goneSince is when each unregistered node holding replicas was first seen gone
	// (balancer); used by the reconcile pass only, under writeMu.
	goneSince map[int32]time.Time

	// controllerChanges counts changes of the active controller seen by this node.
	controllerChanges *vm.Counter
	// electionsWon counts the times this node became the controller.
	electionsWon *vm.Counter
	// leaderElections counts partition leader changes written by this node as controller.
	leaderElections *vm.Counter
	// reassignmentsStarted, reassignmentsCompleted and reassignmentsCancelled count the
	// reassignments this node started (asked for, or its own moves), completed and
	// cancelled as controller.
	reassignmentsStarted   *vm.Counter
	reassignmentsCompleted *vm.Counter
	reassignmentsCancelled *vm.Counter
}

// New returns a controller that has not started campaigning (Run). Its counters are
// registered in cfg.Metrics at once.
func New(cfg Config) *Controller {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = vm.NewSet()
	}
	if cfg.LeaderRebalanceDelay <= 0 {
		cfg.LeaderRebalanceDelay = DefaultLeaderRebalanceDelay
	}
	if cfg.MovesInFlightMax <= 0 {
		cfg.MovesInFlightMax = DefaultMovesInFlightMax
	}
	if cfg.DeadNodeDelay <= 0 {
		cfg.DeadNodeDelay = DefaultDeadNodeDelay
	}
	c := &Controller{cfg: cfg, kick: make(chan struct{}, 1), preferredSince: map[cluster.TopicPartition]time.Time{},
		goneSince:              map[int32]time.Time{},
		controllerChanges:      cfg.Metrics.NewCounter("gregor_cp_controller_changes_total"),
		electionsWon:           cfg.Metrics.NewCounter("gregor_cp_controller_elections_won_total"),
		leaderElections:        cfg.Metrics.NewCounter("gregor_cp_partition_leader_elections_total"),
		reassignmentsStarted:   cfg.Metrics.NewCounter("gregor_cp_reassignments_started_total"),
		reassignmentsCompleted: cfg.Metrics.NewCounter("gregor_cp_reassignments_completed_total"),
		reassignmentsCancelled: cfg.Metrics.NewCounter("gregor_cp_reassignments_cancelled_total"),
	}
	c.current.Store(new(string))
	return c
}

// Run campaigns for controllership and observes the controller, over conn, until ctx
// ends. It is called once.
func (c *Controller) Run(ctx context.Context, conn Conn) {
	c.conn = conn
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); c.campaign(ctx) }()
	go func() { defer wg.Done(); c.observeController(ctx) }()
	wg.Wait()
}

// Wake asks the reconcile loop to run now (the metadata changed); it never blocks.
func (c *Controller) Wake() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// IsController reports whether this node is the active controller.
func (c *Controller) IsController() bool { return c.isController.Load() }

// Current returns the name of the active controller as this node last saw it.
func (c *Controller) Current() string { return *c.current.Load() }

// campaign runs for the node's lifetime: it campaigns for controllership, leads while
// elected, and campaigns again after losing the session.
func (c *Controller) campaign(ctx context.Context) {
	ttl := int((c.cfg.TTL + time.Second - 1) / time.Second)
	backoff := retryBackoffMin
	for ctx.Err() == nil {
		sess, err := concurrency.NewSession(c.conn.Etcd, concurrency.WithTTL(ttl), concurrency.WithContext(ctx))
		if err != nil {
			c.cfg.Logger.Warn("controller session failed; retrying", "err", err)
			sleepCtx(ctx, backoff)
			backoff = min(2*backoff, retryBackoffMax)
			continue
		}
		backoff = retryBackoffMin
		e := concurrency.NewElection(sess, cluster.ControllerPrefix)
		cctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-sess.Done():
				cancel() // the session expired: stop campaigning with a dead lease
			case <-cctx.Done():
			}
		}()
		err = e.Campaign(cctx, c.cfg.Name)
		if err == nil {
			c.lead(cctx, sess, e)
			rctx, rcancel := context.WithTimeout(context.Background(), resignTimeout)
			_ = e.Resign(rctx)
			rcancel()
		}
		cancel()
		_ = sess.Close()
	}
}

// lead is the active controller's loop: reconcile on every metadata change and every
// reconcileInterval, until the session ends or ctx is canceled.
func (c *Controller) lead(ctx context.Context, sess *concurrency.Session, e *concurrency.Election) {
	c.isController.Store(true)
	c.term.Store(e)
	defer func() {
		c.term.Store(nil)
		c.writeMu.Lock()
		clear(c.preferredSince)
		clear(c.goneSince)
		c.writeMu.Unlock()
		c.isController.Store(false)
	}()
	c.electionsWon.Inc()
	c.cfg.Logger.Info("became controller", "key", e.Key(), "rev", e.Rev())
	if c.cfg.OnTerm != nil {
		tctx, tcancel := context.WithCancel(ctx)
		termDone := make(chan struct{})
		go func() { defer close(termDone); c.cfg.OnTerm(tctx, Term{Session: sess, Election: e}) }()
		defer func() { tcancel(); <-termDone }()
	}
	t := time.NewTicker(reconcileInterval)
	defer t.Stop()
	for {
		c.reconcile(ctx, e)
		select {
		case <-ctx.Done():
			c.cfg.Logger.Info("controller stepping down")
			return
		case <-sess.Done():
			c.cfg.Logger.Warn("controller session lost")
			return
		case <-c.kick:
		case <-t.C:
		}
	}
}

// planElections applies Elect to every partition of snap, with the nodes that count as
// live for it (liveFor) and those in controlled shutdown. It returns the old and new states of the changed
// partitions, and the nodes that lost a leadership or ISR membership because they
// restarted.
func planElections(snap *client.Snapshot) (olds, nexts []cluster.PartitionState, restarted map[int32]bool) {
	for tp, st := range snap.Partitions {
		topic, ok := snap.Topics[tp.Topic]
		if !ok {
			continue // a topic being deleted
		}
		nodes, stale := nodesFor(st, snap)
		if next, changed := Elect(st, nodes, topic.UncleanLeaderElection()); changed {
			olds = append(olds, st)
			nexts = append(nexts, next)
			for _, id := range stale {
				if restarted == nil {
					restarted = map[int32]bool{}
				}
				restarted[id] = true
			}
		}
	}
	return olds, nexts, restarted
}

// liveFor returns the nodes that count as live for a partition, and the registered
// nodes it leaves out. A node registered after the partition's state was written (its
// broker epoch above the state's mod revision) while that state names it leader or ISR
// member is out: the state was written for an earlier process of the node, which
// crashed — the node restarted and took its registration over, or re-registered after
// an expiry no pass saw — and whose log may have lost what it had not flushed, so its
// leadership and ISR membership are void, as Kafka voids them when a broker comes back
// with a new epoch. Moving them writes the state, which makes it newer than the
// registration: a partition left offline elects the node on the next pass, with a new
// leader epoch, and an offline partition elects a returning ISR member in any case.
// Comparing revisions rather than remembering each node's epoch also holds across a
// change of controller.
func liveFor(st cluster.PartitionState, brokers map[int32]cluster.Broker) (map[int32]cluster.Broker, []int32) {
	if st.Leader == cluster.NoLeader {
		return brokers, nil
	}
	var stale []int32
	check := func(id int32) {
		if b, ok := brokers[id]; ok && b.Epoch > st.ModRevision && !slices.Contains(stale, id) {
			stale = append(stale, id)
		}
	}
	check(st.Leader)
	for _, id := range st.ISR {
		check(id)
	}
	if stale == nil {
		return brokers, nil
	}
	live := maps.Clone(brokers)
	for _, id := range stale {
		delete(live, id)
	}
	return live, stale
}

// reconcile plans elections on the current view and writes them, fenced on this node
// still holding the election key, in batches of electionTxnPartitionsMax; then it
// completes and starts replica moves (reconcileMoves); then, unless turned off, it
// moves leaderships back to preferred replicas (rebalance).
func (c *Controller) reconcile(ctx context.Context, e *concurrency.Election) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	snap := c.conn.View.Snapshot()
	olds, nexts, restarted := planElections(snap)
	for id := range restarted {
		c.cfg.Logger.Info("node restarted: moving what its earlier process held", "node", id, "epoch", snap.Brokers[id].Epoch)
	}
	for start := 0; start < len(olds); start += electionTxnPartitionsMax {
		end := min(start+electionTxnPartitionsMax, len(olds))
		c.writeElections(ctx, e, olds[start:end], nexts[start:end])
	}
	if len(olds) > 0 {
		return // the next pass, on a view with these writes, may rebalance
	}
	if c.reconcileMoves(ctx, e, snap, time.Now()) {
		return // the next pass decides on a view with these writes
	}
	if !c.cfg.NoAutoLeaderRebalance {
		c.rebalance(ctx, e, snap, time.Now())
	}
}

// writeElections writes a batch of partition changes in one transaction; if any
// compare fails, each is retried alone so one conflict does not hold up the rest. What
// is not written is planned again on the next pass.
func (c *Controller) writeElections(ctx context.Context, e *concurrency.Election, olds, nexts []cluster.PartitionState) {
	if len(olds) == 0 {
		return
	}
	ok, _, err := c.electionTxn(ctx, e, olds, nexts)
	if err != nil {
		c.cfg.Logger.Warn("controller write failed", "partitions", len(olds), "err", err)
		return
	}
	if ok {
		return
	}
	for i := range olds {
		if _, _, err := c.electionTxn(ctx, e, olds[i:i+1], nexts[i:i+1]); err != nil {
			c.cfg.Logger.Warn("controller write failed", "partition", olds[i].TopicPartition().String(), "err", err)
		}
	}
}

// electionTxn commits the changes if every partition is unchanged since it was read and
// this node still holds the controller key. It returns whether it did, and the
// transaction's revision.
func (c *Controller) electionTxn(ctx context.Context, e *concurrency.Election, olds, nexts []cluster.PartitionState) (bool, int64, error) {
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(e.Key()), "=", e.Rev())}
	ops := make([]clientv3.Op, 0, len(olds))
	for i, old := range olds {
		key := cluster.PartitionKey(old.Topic, old.Partition)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(key), "=", old.ModRevision))
		ops = append(ops, clientv3.OpPut(key, cluster.MustJSON(nexts[i])))
	}
	resp, err := c.conn.Client.Txn(ctx, "controller_elect", cmps, ops)
	if err != nil {
		return false, 0, fmt.Errorf("controller: elect %d partitions: %w", len(olds), err)
	}
	if resp.Succeeded {
		for i, old := range olds {
			n := nexts[i]
			if n.Leader != old.Leader {
				c.leaderElections.Inc()
			}
			c.cfg.Logger.Info("partition state changed", "partition", old.TopicPartition().String(),
				"leader", n.Leader, "leaderEpoch", n.LeaderEpoch, "isr", n.ISR, "partitionEpoch", n.PartitionEpoch)
		}
	}
	return resp.Succeeded, resp.Header.Revision, nil
}

// observeController follows the controller election key for the whole life of the node
// (controller or not), for /v1/cluster and the controller-changes metric.
func (c *Controller) observeController(ctx context.Context) {
	backoff := retryBackoffMin
	var lastKey string
	for ctx.Err() == nil {
		err := func() error {
			gctx, gcancel := context.WithTimeout(ctx, client.DefaultRequestTimeout)
			resp, err := c.conn.Etcd.Get(gctx, cluster.ControllerPrefix, clientv3.WithFirstCreate()...)
			gcancel()
			if err != nil {
				return err
			}
			backoff = retryBackoffMin
			lastKey = c.setController(resp, lastKey)
			wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
			defer cancel()
			wch := c.conn.Etcd.Watch(wctx, cluster.ControllerPrefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
			for wr := range wch {
				if err := wr.Err(); err != nil {
					return err
				}
				gctx, gcancel := context.WithTimeout(ctx, client.DefaultRequestTimeout)
				resp, err := c.conn.Etcd.Get(gctx, cluster.ControllerPrefix, clientv3.WithFirstCreate()...)
				gcancel()
				if err != nil {
					return err
				}
				lastKey = c.setController(resp, lastKey)
			}
			return nil
		}()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			c.cfg.Logger.Warn("controller observer: retrying", "err", err)
		}
		sleepCtx(ctx, backoff)
		backoff = min(2*backoff, retryBackoffMax)
	}
}

// setController records the current controller from the election's first-created key
// and counts a change when the key differs from lastKey. It returns the current key.
func (c *Controller) setController(resp *clientv3.GetResponse, lastKey string) string {
	name, key := "", ""
	if len(resp.Kvs) > 0 {
		name, key = string(resp.Kvs[0].Value), string(resp.Kvs[0].Key)
	}
	c.current.Store(&name)
	if key != "" && key != lastKey {
		c.controllerChanges.Inc()
		c.cfg.Logger.Info("controller is", "name", name)
	}
	return key
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
