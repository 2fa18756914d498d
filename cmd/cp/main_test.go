package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/gregor-streaming/gregor/controlplane"
	"github.com/gregor-streaming/gregor/controlplane/client"
)

// binPath is the gregor-cp binary built once by TestMain.
var binPath string

func TestMain(m *testing.M) {
	controlplane.SetGRPCLogger(slog.New(slog.DiscardHandler))
	dir, err := os.MkdirTemp("", "gregor-cp-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "gregor-cp")
	build := exec.Command("go", "build", "-o", binPath, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build gregor-cp:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func checkFor(t testing.TB, timeout, interval time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", timeout, err)
		}
		time.Sleep(interval)
	}
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// member is one gregor-cp process.
type member struct {
	name, client, peer, http, dataDir, logPath string
	cmd                                        *exec.Cmd
	exited                                     chan struct{}
}

func (m *member) start(t *testing.T, initial string) {
	t.Helper()
	logf, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	m.cmd = exec.Command(binPath, "--name", m.name, "--data-dir", m.dataDir, "--client-addr", m.client,
		"--peer-addr", m.peer, "--initial-cluster", initial, "--listen", "127.0.0.1:0", "--http", m.http,
		"--etcd-heartbeat-ms", "50", "--etcd-election-ms", "500", "--controller-ttl", "1s", "--log-level", "warn")
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m.exited = make(chan struct{})
	go func() { _ = m.cmd.Wait(); logf.Close(); close(m.exited) }()
}

// stop ends the process: SIGTERM, then SIGKILL if it has not exited in time.
func (m *member) stop() {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(syscall.SIGCONT) // a paused member would not hear SIGTERM
	_ = m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(10 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.exited
	}
}

func (m *member) kill() {
	_ = m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.exited
}

var httpClient = &http.Client{Timeout: 2 * time.Second}

func (m *member) view() (controlplane.ClusterView, error) {
	var v controlplane.ClusterView
	resp, err := httpClient.Get("http://" + m.http + "/v1/cluster")
	if err != nil {
		return v, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return v, fmt.Errorf("%s /v1/cluster: %w", m.name, err)
	}
	return v, nil
}

func (m *member) ready() error {
	resp, err := httpClient.Get("http://" + m.http + "/readyz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s /readyz %d: %s", m.name, resp.StatusCode, body)
	}
	return nil
}

// agreedController returns the controller every given member reports, with exactly one
// of them reporting itself as controller.
func agreedController(ms []*member) (string, error) {
	name := ""
	self := 0
	for _, m := range ms {
		v, err := m.view()
		if err != nil {
			return "", err
		}
		if v.Controller == "" || (name != "" && v.Controller != name) {
			return "", fmt.Errorf("%s sees controller %q, others %q", m.name, v.Controller, name)
		}
		name = v.Controller
		if v.IsController {
			self++
			if v.Controller != m.name {
				return "", fmt.Errorf("%s is controller but reports %q", m.name, v.Controller)
			}
		}
	}
	if self != 1 {
		return "", fmt.Errorf("%d members act as controller", self)
	}
	return name, nil
}

// TestThreeProcessFailover: three gregor-cp processes; SIGKILL the active controller;
// another takes over, topic creation and leader failover work again; the killed member
// restarts on its data dir and rejoins.
func TestThreeProcessFailover(t *testing.T) {
	dir := t.TempDir()
	var ms []*member
	var initial []string
	for i := 1; i <= 3; i++ {
		m := &member{name: fmt.Sprintf("cp%d", i), client: freeAddr(t), peer: freeAddr(t), http: freeAddr(t),
			dataDir: filepath.Join(dir, fmt.Sprintf("cp%d", i)), logPath: filepath.Join(dir, fmt.Sprintf("cp%d.log", i))}
		ms = append(ms, m)
		initial = append(initial, m.name+"="+m.peer)
	}
	t.Cleanup(func() {
		for _, m := range ms {
			m.stop()
		}
		if t.Failed() {
			for _, m := range ms {
				b, _ := os.ReadFile(m.logPath)
				t.Logf("%s log:\n%s", m.name, b)
			}
		}
	})
	for _, m := range ms {
		m.start(t, strings.Join(initial, ","))
	}
	for _, m := range ms {
		checkFor(t, 30*time.Second, 50*time.Millisecond, m.ready)
	}
	var first string
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() (err error) { first, err = agreedController(ms); return err })

	var eps []string
	for _, m := range ms {
		eps = append(eps, m.client)
	}
	cli, err := client.New(client.Config{Endpoints: eps, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
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
		if _, err := c.Register(ctx, client.Broker{ID: int32(i + 1), Host: "127.0.0.1", Port: int32(9092 + i)}, 3*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := cli.CreateTopic(ctx, client.TopicSpec{Name: "before", Partitions: 2, ReplicationFactor: 2}); err != nil {
		t.Fatal(err)
	}

	var killed *member
	var survivors []*member
	for _, m := range ms {
		if m.name == first {
			killed = m
		} else {
			survivors = append(survivors, m)
		}
	}
	start := time.Now()
	killed.kill()
	var second string
	checkFor(t, 20*time.Second, 10*time.Millisecond, func() (err error) {
		second, err = agreedController(survivors)
		if err == nil && second == first {
			err = fmt.Errorf("survivors still see %s as controller", first)
		}
		return err
	})
	failover := time.Since(start)
	t.Logf("controller failover after SIGKILL of %s: %s took over in %v (etcd election 500ms, controller TTL 1s)", first, second, failover.Round(time.Millisecond))

	// Topic creation works again (the client may first have to leave the dead member).
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		_, _, err := cli.CreateTopic(ctx, client.TopicSpec{Name: "after", Partitions: 2, ReplicationFactor: 2})
		if errors.Is(err, kerr.TopicAlreadyExists) {
			return nil
		}
		return err
	})
	// The new controller moves leadership when a data-plane node dies.
	dp1.Close()
	checkFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		for _, topic := range []string{"before", "after"} {
			for p := int32(0); p < 2; p++ {
				st, err := cli.GetPartition(ctx, client.TopicPartition{Topic: topic, Partition: p})
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
	killed.start(t, strings.Join(initial, ","))
	checkFor(t, 30*time.Second, 50*time.Millisecond, killed.ready)
	checkFor(t, 15*time.Second, 20*time.Millisecond, func() error {
		got, err := agreedController(ms)
		if err != nil {
			return err
		}
		if got != second {
			return fmt.Errorf("controller is %s after rejoin, want %s", got, second)
		}
		v, err := killed.view()
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
	out, err := exec.Command(binPath, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("--help: %v\n%s", err, out)
	}
	for _, want := range []string{"--name [GREGOR_CP_NAME]", "--data-dir [GREGOR_CP_DATA_DIR]", "--client-addr [GREGOR_CP_CLIENT_ADDR]",
		"--peer-addr [GREGOR_CP_PEER_ADDR]", "--initial-cluster [GREGOR_CP_INITIAL_CLUSTER]", "--listen [GREGOR_CP_LISTEN]", "--http [GREGOR_CP_HTTP]"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("--help lacks %q:\n%s", want, out)
		}
	}
	cmd := exec.Command(binPath)
	cmd.Env = append(os.Environ(), "GREGOR_CP_ETCD_ELECTION_MS=notanumber")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "GREGOR_CP_ETCD_ELECTION_MS") {
		t.Fatalf("bad env var accepted: %v\n%s", err, out)
	}
}
