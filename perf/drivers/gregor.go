package drivers

import (
	"fmt"
	"os"
	"path/filepath"
)

// Gregor is a single-node Gregor cluster (one gregor-cp, one gregor-dp) the harness
// started from built binaries, with the flags scripts/run.sh uses, on reserved loopback
// ports (ReservePorts) and with its data in a temporary directory.
type Gregor struct {
	// Bootstrap is the data plane's Kafka address.
	Bootstrap string
	// MetricsURL is the data plane's /metrics page.
	MetricsURL string
	cp, dp     *Process
	cleanup    func()
}

// GregorBinaries reports whether binDir holds gregor-cp and gregor-dp.
func GregorBinaries(binDir string) bool {
	for _, b := range []string{"gregor-cp", "gregor-dp"} {
		if st, err := os.Stat(filepath.Join(binDir, b)); err != nil || st.IsDir() {
			return false
		}
	}
	return true
}

// StartGregor starts gregor-cp and gregor-dp from binDir and waits for the Kafka port.
func StartGregor(binDir string) (g *Gregor, err error) {
	dir, err := os.MkdirTemp("", "gregor-bench-gregor-")
	if err != nil {
		return nil, err
	}
	// started, not g: a failed return sets the result g to nil before this runs.
	started := &Gregor{cleanup: func() { os.RemoveAll(dir) }}
	g = started
	defer func() {
		if err != nil {
			started.Stop()
		}
	}()
	abs, err := filepath.Abs(binDir)
	if err != nil {
		return nil, err
	}
	ports, err := ReservePorts(6)
	if err != nil {
		return nil, fmt.Errorf("gregor: %w", err)
	}
	defer ReleasePorts(ports)
	addr := func(i int) string { return ports[i].Addr() }
	for _, d := range []string{"cp1", "dp1"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	g.cp, err = StartProcess("gregor-cp", dir, filepath.Join(abs, "gregor-cp"),
		"--name", "cp1", "--data-dir", filepath.Join(dir, "cp1"), "--client-addr", addr(0), "--peer-addr", addr(1),
		"--initial-cluster", "cp1="+addr(1), "--listen", addr(2), "--http", addr(3))
	if err != nil {
		return nil, fmt.Errorf("gregor: %w", err)
	}
	if err := g.cp.WaitListening(addr(0)); err != nil {
		return nil, fmt.Errorf("gregor: %w", err)
	}
	g.dp, err = StartProcess("gregor-dp", dir, filepath.Join(abs, "gregor-dp"),
		"--id", "1", "--data-dir", filepath.Join(dir, "dp1"), "--listen", addr(4), "--cp", addr(0), "--http", addr(5))
	if err != nil {
		return nil, fmt.Errorf("gregor: %w", err)
	}
	if err := g.dp.WaitListening(addr(4)); err != nil {
		return nil, fmt.Errorf("gregor: %w", err)
	}
	g.Bootstrap, g.MetricsURL = addr(4), "http://"+addr(5)+"/metrics"
	return g, nil
}

// PIDs are the data plane's and control plane's processes.
func (g *Gregor) PIDs() []int { return []int{g.dp.PID(), g.cp.PID()} }

// Stop stops both processes and removes the data.
func (g *Gregor) Stop() {
	if g.dp != nil {
		_ = g.dp.Stop()
	}
	if g.cp != nil {
		_ = g.cp.Stop()
	}
	g.cleanup()
}
