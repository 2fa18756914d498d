package node_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
	"github.com/gregor-streaming/gregor/node"
)

// TestStopMovesLeadershipsFirst: Stop begins with a controlled shutdown, so that when
// the node's registration goes, the partitions it led are led by others already (in
// the metadata's own order of changes); with controlled shutdown turned off they still
// name it then, and move only afterwards.
func TestStopMovesLeadershipsFirst(t *testing.T) {
	for _, tc := range []struct {
		name    string
		timeout time.Duration
		moved   bool
	}{
		{"controlled", 0, true},
		{"off", -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp := startControlPlane(t)
			var dps []*node.DataPlane
			for id := int32(1); id <= 3; id++ {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				dp, err := node.StartDataPlane(ctx, node.Config{
					ID: id, DataDir: t.TempDir(), Listen: "127.0.0.1:0", ControlPlane: []string{cp.ClientAddr()},
					RegistrationTTL: 2 * time.Second, ControlledShutdownTimeout: tc.timeout, Logger: testutil.Quiet(),
				})
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				dps = append(dps, dp)
				t.Cleanup(func() { _ = dp.Stop(context.Background()) })
			}
			cl, err := client.New(client.Config{Endpoints: []string{cp.ClientAddr()}, Logger: testutil.Quiet()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cl.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, _, err := cl.CreateTopic(ctx, client.TopicSpec{Name: "s", Partitions: 3, ReplicationFactor: 3}); err != nil {
				t.Fatal(err)
			}
			// Follow the changes in order: which partitions named node 1 leader when its
			// registration went.
			var mu sync.Mutex
			leaders := map[cluster.TopicPartition]int32{}
			var ledAtExit []cluster.TopicPartition
			exited := false
			mu.Lock()
			md, err := cl.WatchMetadata(ctx, func(ch client.Change) {
				mu.Lock()
				defer mu.Unlock()
				switch {
				case ch.Kind == client.PartitionPut:
					leaders[ch.TopicPartition] = ch.State.Leader
				case ch.Kind == client.BrokerDeleted && ch.BrokerID == 1 && !exited:
					exited = true
					for tp, l := range leaders {
						if l == 1 {
							ledAtExit = append(ledAtExit, tp)
						}
					}
				}
			})
			if err != nil {
				mu.Unlock()
				t.Fatal(err)
			}
			t.Cleanup(md.Close)
			for tp, st := range md.Snapshot().Partitions {
				leaders[tp] = st.Leader
			}
			mu.Unlock()
			// Every follower in sync, so that the leaderships have somewhere to go.
			testutil.CheckFor(t, 20*time.Second, func() error {
				snap := md.Snapshot()
				led := 0
				for tp, st := range snap.Partitions {
					if len(st.ISR) != 3 {
						return fmt.Errorf("%s: ISR %v", tp, st.ISR)
					}
					if st.Leader == 1 {
						led++
					}
				}
				if len(snap.Partitions) != 3 || led == 0 {
					return fmt.Errorf("%d partitions, %d led by node 1", len(snap.Partitions), led)
				}
				return nil
			})
			sctx, scancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer scancel()
			if err := dps[0].Stop(sctx); err != nil {
				t.Fatal(err)
			}
			testutil.CheckFor(t, 10*time.Second, func() error {
				mu.Lock()
				defer mu.Unlock()
				if !exited {
					return errors.New("node 1 still registered")
				}
				return nil
			})
			mu.Lock()
			defer mu.Unlock()
			if moved := len(ledAtExit) == 0; moved != tc.moved {
				t.Fatalf("node 1 led %v when its registration went; want moved before: %v", ledAtExit, tc.moved)
			}
		})
	}
}
