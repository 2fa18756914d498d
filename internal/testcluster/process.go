package testcluster

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/node"
)

// Binaries: gregor-cp and gregor-dp, built once per test binary (Main), with the race
// detector when the test binary has it, unless Main was given NodesWithoutRace.
var (
	binDir    string
	buildOnce sync.Once
	buildErr  error
	nodesRace = raceEnabled
)

// MainOption adjusts Main.
type MainOption func()

// NodesWithoutRace builds the node binaries without the race detector even when the
// tests run under it: for suites whose point is timing under faults (the fault suite),
// where a node slowed several times over would fail for want of speed, and whose node
// code the other packages' tests already run under the detector.
func NodesWithoutRace() MainOption { return func() { nodesRace = false } }

// Main runs a package's tests and removes the node binaries the harness built for
// them. A package whose tests start clusters of processes (Options.Processes) calls it
// from TestMain:
//
//	func TestMain(m *testing.M) { testcluster.Main(m) }
func Main(m *testing.M, opts ...MainOption) {
	for _, o := range opts {
		o()
	}
	dir, err := os.MkdirTemp("", "gregor-testcluster-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, "testcluster:", err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// Binaries returns the paths of the gregor-cp and gregor-dp binaries the harness runs,
// building them on first use, for tests that start a process of their own beside a
// cluster (a second process on a node's data directory, say).
func Binaries(t testing.TB) (cp, dp string) {
	t.Helper()
	cp, dp, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	return cp, dp
}

// binaries builds gregor-cp and gregor-dp into binDir once.
func binaries() (cp, dp string, err error) {
	if binDir == "" {
		return "", "", errors.New("testcluster: Options.Processes needs the package's TestMain to call testcluster.Main")
	}
	buildOnce.Do(func() {
		for _, b := range []struct{ name, pkg string }{
			{"gregor-cp", "github.com/gregor-streaming/gregor/cmd/cp"},
			{"gregor-dp", "github.com/gregor-streaming/gregor/cmd/dp"},
		} {
			args := []string{"build", "-o", filepath.Join(binDir, b.name)}
			if nodesRace {
				args = append(args, "-race")
			}
			if out, err := exec.Command("go", append(args, b.pkg)...).CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("testcluster: go build %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	return filepath.Join(binDir, "gregor-cp"), filepath.Join(binDir, "gregor-dp"), buildErr
}

// process is one run of a node binary. Its output goes to the log file in the node's
// directory (kept across restarts), and to stderr as well with GREGOR_TEST_LOG=1.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited
	err  error         // its exit status, once done
}

// startProcess starts bin with args and the test's environment plus env, logging to
// logPath.
func startProcess(bin, logPath string, env []string, args ...string) (*process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(f, "=== %s %s (%s)\n", filepath.Base(bin), strings.Join(args, " "), time.Now().Format(time.RFC3339Nano))
	var out io.Writer = f
	if os.Getenv("GREGOR_TEST_LOG") != "" {
		out = io.MultiWriter(f, os.Stderr)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, err
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) signal(sig syscall.Signal) error {
	select {
	case <-p.done:
		return fmt.Errorf("process %d has exited (%v)", p.pid(), p.err)
	default:
	}
	return p.cmd.Process.Signal(sig)
}

// waitStopped waits until every thread of the process is stopped (a SIGSTOP is
// delivered asynchronously: a thread running on another core may still answer a request
// just after the signal was sent).
func (p *process) waitStopped(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", p.pid()))
		if err != nil || len(tasks) == 0 {
			return fmt.Errorf("process %d: no threads to look at", p.pid())
		}
		stopped := true
		for _, path := range tasks {
			b, err := os.ReadFile(path)
			// The state follows the command name in parentheses: "pid (comm) T ...".
			if i := strings.LastIndexByte(string(b), ')'); err != nil || i < 0 || i+2 >= len(b) || (b[i+2] != 'T' && b[i+2] != 't') {
				stopped = false
				break
			}
		}
		if stopped {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d not stopped after %v", p.pid(), timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// kill sends SIGKILL (continuing a paused process first is not needed: SIGKILL ends a
// stopped process too) and waits for the exit.
func (p *process) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits for the exit, killing the process after timeout; it
// returns the exit status.
func (p *process) stop(timeout time.Duration) error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	_ = p.cmd.Process.Signal(syscall.SIGCONT) // a paused process handles SIGTERM once continued
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.kill()
	}
	return p.err
}

// waitAddresses waits for the addresses file the process writes in dir once it serves.
func (p *process) waitAddresses(dir string, timeout time.Duration) (node.Addresses, error) {
	deadline := time.After(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if a, err := node.ReadAddresses(dir); err == nil && a.PID == p.pid() {
			return a, nil
		}
		select {
		case <-p.done:
			return node.Addresses{}, fmt.Errorf("exited before serving: %v", p.err)
		case <-deadline:
			return node.Addresses{}, fmt.Errorf("no %s after %v", node.AddressesFileName, timeout)
		case <-tick.C:
		}
	}
}

// logTail returns the last n lines of the log at path.
func logTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > 2*n {
			lines = lines[len(lines)-n:]
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
