package drivers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Limits on starting and stopping a peer.
const (
	peerStartTimeout = 15 * time.Second
	peerStopTimeout  = 10 * time.Second
	logTailBytes     = 2048
)

// Process is a server the harness started: a peer (nats-server, redis-server) or Gregor.
// It runs in its own process group and is killed with the harness: Pdeathsig sends it
// SIGKILL if the harness dies without stopping it.
type Process struct {
	Name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	waitErr error
}

// StartProcess starts bin with args, its output going to <dir>/<name>.log.
func StartProcess(name, dir, bin string, args ...string) (*Process, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (install it with scripts/install-peers.sh)", bin, err)
	}
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	logf.Close() // the child holds its own descriptor
	p := &Process{Name: name, cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// PID is the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// WaitListening waits until addr accepts TCP connections, failing early if the process
// exits; the error carries the tail of its log.
func (p *Process) WaitListening(addr string) error {
	deadline := time.Now().Add(peerStartTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited while starting (%v): %s", p.Name, p.waitErr, p.LogTail())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s not listening on %s after %v: %s", p.Name, addr, peerStartTimeout, p.LogTail())
}

// GregorAddresses is the addresses.json a gregor-cp or gregor-dp process writes in its
// data directory once it serves (see docs/nodes.md). It is read here rather than with
// package node, which would link the servers into the bench tool.
type GregorAddresses struct {
	PID    int    `json:"pid"`
	Kafka  string `json:"kafka"`
	HTTP   string `json:"http"`
	Client string `json:"client"`
}

// WaitAddresses waits for the addresses file this process writes in dataDir once it
// serves, failing early if the process exits.
func (p *Process) WaitAddresses(dataDir string) (GregorAddresses, error) {
	deadline := time.Now().Add(peerStartTimeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			return GregorAddresses{}, fmt.Errorf("%s exited while starting (%v): %s", p.Name, p.waitErr, p.LogTail())
		default:
		}
		var a GregorAddresses
		if b, err := os.ReadFile(filepath.Join(dataDir, "addresses.json")); err == nil && json.Unmarshal(b, &a) == nil && a.PID == p.PID() {
			return a, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return GregorAddresses{}, fmt.Errorf("%s wrote no addresses.json within %v: %s", p.Name, peerStartTimeout, p.LogTail())
}

// LogTail is the end of the process's output.
func (p *Process) LogTail() string {
	data, _ := os.ReadFile(p.logPath)
	if len(data) > logTailBytes {
		data = data[len(data)-logTailBytes:]
	}
	return strings.TrimSpace(string(data))
}

// Stop asks the process to exit (SIGTERM to its group), then kills it after
// peerStopTimeout. It is safe to call more than once.
func (p *Process) Stop() error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	_ = syscall.Kill(-p.PID(), syscall.SIGTERM)
	select {
	case <-p.exited:
		return nil
	case <-time.After(peerStopTimeout):
		_ = syscall.Kill(-p.PID(), syscall.SIGKILL)
		<-p.exited
		return fmt.Errorf("%s did not stop within %v, killed", p.Name, peerStopTimeout)
	}
}

// FreePort returns a loopback TCP port that was free a moment ago. Another process may
// take it before the peer binds it; starting the peer then fails and says so. Only the
// third-party peers (nats-server, redis-server) use it: they take a port number and
// cannot report one they picked (redis-server's port 0 turns TCP off); Gregor's
// processes bind port 0 and report it (WaitAddresses).
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// procScanMax bounds how many processes PIDListening looks at.
const procScanMax = 100_000

// PIDListening finds the local process with a listening TCP socket on port, through
// /proc/net/tcp{,6} (socket inode) and /proc/<pid>/fd (who holds it). It is how the
// harness accounts CPU to a broker it did not start. It needs permission to read other
// processes' fds (same user or root).
func PIDListening(port int) (int, error) {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range bytes.Split(data, []byte{'\n'})[1:] {
			fs := strings.Fields(string(line))
			if len(fs) < 10 || fs[3] != "0A" { // 0A: TCP_LISTEN
				continue
			}
			_, portHex, ok := strings.Cut(fs[1], ":")
			if !ok {
				continue
			}
			if p, err := strconv.ParseUint(portHex, 16, 16); err == nil && int(p) == port {
				inodes["socket:["+fs[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("no listening socket on port %d", port)
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	for i, e := range procs {
		if i >= procScanMax {
			break
		}
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if err == nil && inodes[link] {
				return pid, nil
			}
		}
	}
	return 0, errors.New("the process listening on port " + strconv.Itoa(port) + " is not readable")
}

// portOf returns the port of a host:port address, 0 if it has none.
func portOf(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}

// isLoopback reports whether host:port names this machine.
func isLoopback(addr string) bool {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
