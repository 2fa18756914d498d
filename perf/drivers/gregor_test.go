package drivers

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/internal/testutil"
)

// fakeGregor is a stand-in for gregor-cp and gregor-dp: it checks it was given the flags
// of scripts/run.sh and listens where --client-addr (cp) or --listen (dp) say, with
// SO_REUSEADDR as the real ones (Go's listeners, gnet) set it: the port is reserved
// beside it (ReservePorts).
const fakeGregor = `#!/usr/bin/env python3
import socket, sys, time
args = sys.argv[1:]
flags = dict(zip(args[::2], args[1::2]))
need = {"gregor-cp": ["--name", "--data-dir", "--client-addr", "--peer-addr", "--listen", "--http"],
        "gregor-dp": ["--id", "--data-dir", "--listen", "--cp", "--http"]}[sys.argv[0].split("/")[-1]]
missing = [f for f in need if f not in flags]
if missing:
    sys.exit("missing flags: %s" % missing)
host, port = flags.get("--client-addr", flags["--listen"]).rsplit(":", 1)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, int(port))); s.listen(8)
time.sleep(60)
`

func TestStartGregor(t *testing.T) {
	_, err := exec.LookPath("python3")
	testutil.NeedDep(t, err, "python3 runs the fake gregor binaries (a fresh machine has it)")
	bin := t.TempDir()
	if GregorBinaries(bin) {
		t.Fatal("empty dir has binaries")
	}
	for _, b := range []string{"gregor-cp", "gregor-dp"} {
		if err := os.WriteFile(filepath.Join(bin, b), []byte(fakeGregor), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if !GregorBinaries(bin) {
		t.Fatal("binaries not found")
	}
	g, err := StartGregor(bin)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(g.Bootstrap, "127.0.0.1:") || !strings.HasSuffix(g.MetricsURL, "/metrics") || len(g.PIDs()) != 2 {
		t.Errorf("%+v %v", g, g.PIDs())
	}
	c, err := net.DialTimeout("tcp", g.Bootstrap, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	start := time.Now()
	g.Stop()
	if time.Since(start) > 5*time.Second {
		t.Errorf("stop took %v", time.Since(start))
	}
	for _, pid := range g.PIDs() {
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid))); err == nil {
			if data, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat")); !strings.Contains(string(data), ") Z ") {
				t.Errorf("process %d still running", pid)
			}
		}
	}
}

// TestStartGregorFails checks that a cluster that cannot start is reported, not a
// panic, and that its data directory is removed.
func TestStartGregorFails(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // where StartGregor makes its data directory
	bin := t.TempDir()
	for _, b := range []string{"gregor-cp", "gregor-dp"} {
		if err := os.WriteFile(filepath.Join(bin, b), []byte("#!/bin/sh\necho no etcd here >&2\nexit 1\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	g, err := StartGregor(bin)
	if err == nil || g != nil || !strings.Contains(err.Error(), "gregor-cp exited while starting") || !strings.Contains(err.Error(), "no etcd here") {
		t.Fatalf("StartGregor = %v, %v", g, err)
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("left in TMPDIR: %v", left)
	}
}

// TestMinLeaseTTL checks etcd's shortest lease for gregor-cp's timers: the default
// timers give 2 s, so a 1 s registration TTL needs shorter ones.
func TestMinLeaseTTL(t *testing.T) {
	for _, tc := range []struct {
		heartbeat, election int
		want                time.Duration
	}{
		{100, 1000, 2 * time.Second}, // 15 ticks of 100 ms: 1.5 s, rounded up
		{50, 500, time.Second},       // 0.75 s
		{100, 600, time.Second},      // 0.9 s
		{100, 700, time.Second},      // 3·7/2 = 10 ticks (integers, as etcd counts): 1 s
		{100, 800, 2 * time.Second},  // 12 ticks: 1.2 s
		{0, 1000, 0},
	} {
		if got := MinLeaseTTL(tc.heartbeat, tc.election); got != tc.want {
			t.Errorf("MinLeaseTTL(%d, %d) = %v, want %v", tc.heartbeat, tc.election, got, tc.want)
		}
	}
}
