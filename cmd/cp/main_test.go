package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/gregor-streaming/gregor/controlplane"
	"github.com/gregor-streaming/gregor/controlplane/client"
	"github.com/gregor-streaming/gregor/controlplane/cluster"
	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
)

func TestMain(m *testing.M) {
	controlplane.SetGRPCLogger(slog.New(slog.DiscardHandler))
	testcluster.Main(m)
}

// cpBinary is gregor-cp as the harness built it from this package.
func cpBinary(t *testing.T) string {
	t.Helper()
	cp, _ := testcluster.Binaries(t)
	return cp
}

// startMembers starts n gregor-cp processes as one control plane (no data-plane nodes),
// with timers for busy cores and a 1s controller lease, and waits for its controller.
func startMembers(t *testing.T, n int) *testcluster.Cluster {
	t.Helper()
	c := testcluster.New(t, testcluster.Options{ControlPlanes: n, ControlPlaneOnly: true, Processes: true,
		ControllerTTL: time.Second, CPFlags: []string{"--etcd-heartbeat-ms", "50", "--etcd-election-ms", "500"}})
	c.WaitController(t)
	return c
}

// TestThreeProcessFailover: three gregor-cp processes; SIGKILL the active controller;
// another takes over, topic creation and leader failover work again; the killed member
// restarts on its data dir and rejoins.
func TestThreeProcessFailover(t *testing.T) {
	c := startMembers(t, 3)
	first := c.WaitController(t)

	var eps []string
	for _, m := range c.CPs {
		eps = append(eps, m.ClientAddr())
	}
	cli := c.ControlPlaneClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Two data-plane registrations, each with its own client so that one can die alone.
	dpClient := func() *client.Client {
		c, err := client.New(client.Config{Endpoints: eps, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	dp1, dp2 := dpClient(), dpClient()
	for i, c := range []*client.Client{dp1, dp2} {
		if _, err := c.Register(ctx, cluster.Broker{ID: int32(i + 1), Host: "127.0.0.1", Port: int32(9092 + i)}, 3*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := cli.CreateTopic(ctx, client.TopicSpec{Name: "before", Partitions: 2, ReplicationFactor: 2}); err != nil {
		t.Fatal(err)
	}

	killed := first
	start := time.Now()
	c.Kill(killed)
	var second *testcluster.CP
	testutil.CheckFor(t, 20*time.Second, func() error {
		second = c.WaitController(t)
		if second == first {
			return fmt.Errorf("survivors still see %s as controller", first.Name())
		}
		return nil
	})
	failover := time.Since(start)
	t.Logf("controller failover after SIGKILL of %s: %s took over in %v (etcd election 500ms, controller TTL 1s)", first.Name(), second.Name(), failover.Round(time.Millisecond))

	// Topic creation works again (the client may first have to leave the dead member).
	testutil.CheckFor(t, 20*time.Second, func() error {
		_, _, err := cli.CreateTopic(ctx, client.TopicSpec{Name: "after", Partitions: 2, ReplicationFactor: 2})
		if errors.Is(err, kerr.TopicAlreadyExists) {
			return nil
		}
		return err
	})
	// The new controller moves leadership when a data-plane node dies.
	dp1.Close()
	testutil.CheckFor(t, 20*time.Second, func() error {
		for _, topic := range []string{"before", "after"} {
			for p := int32(0); p < 2; p++ {
				st, err := cli.GetPartition(ctx, cluster.TopicPartition{Topic: topic, Partition: p})
				if err != nil {
					return err
				}
				if st.Leader != 2 {
					return fmt.Errorf("%s-%d: leader %d, want 2", topic, p, st.Leader)
				}
			}
		}
		return nil
	})

	// The killed member restarts on its data dir and rejoins.
	c.Restart(killed)
	testutil.CheckFor(t, 30*time.Second, killed.Ready)
	testutil.CheckFor(t, 15*time.Second, func() error {
		if got := c.WaitController(t); got != second {
			return fmt.Errorf("controller is %s after rejoin, want %s", got.Name(), second.Name())
		}
		v, err := killed.View()
		if err != nil {
			return err
		}
		if len(v.Members) != 3 || len(v.Topics) != 2 {
			return fmt.Errorf("rejoined member sees %d members, %d topics", len(v.Members), len(v.Topics))
		}
		return nil
	})
}

// TestEnvAndHelp: --help lists every flag with its environment variable; an environment
// variable sets a flag; a bad one is refused.
func TestEnvAndHelp(t *testing.T) {
	out, err := exec.Command(cpBinary(t), "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v\n%s", err, out)
	}
	for _, want := range []string{"--name [GREGOR_CP_NAME]", "--data-dir [GREGOR_CP_DATA_DIR]", "--client-addr [GREGOR_CP_CLIENT_ADDR]",
		"--peer-addr [GREGOR_CP_PEER_ADDR]", "--initial-cluster [GREGOR_CP_INITIAL_CLUSTER]", "--listen [GREGOR_CP_LISTEN]", "--http [GREGOR_CP_HTTP]"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("--help lacks %q:\n%s", want, out)
		}
	}
	cmd := exec.Command(cpBinary(t))
	cmd.Env = append(os.Environ(), "GREGOR_CP_ETCD_ELECTION_MS=notanumber")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "GREGOR_CP_ETCD_ELECTION_MS") {
		t.Fatalf("bad env var accepted: %v\n%s", err, out)
	}
}
