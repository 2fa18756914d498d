package drivers

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/gregor-streaming/gregor/internal/reserve"
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

// StartProcess starts bin with args, its output going to <dir>/<name>.log (appended to,
// so a process started again under the same name keeps its earlier runs' output).
func StartProcess(name, dir, bin string, args ...string) (*Process, error) {
	path, err := exec.LookPath(bin)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (install it with scripts/install-peers.sh)", bin, err)
	}
	logPath := filepath.Join(dir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
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

// LogTail is the end of the process's output.
func (p *Process) LogTail() string {
	data, _ := os.ReadFile(p.logPath)
	if len(data) > logTailBytes {
		data = data[len(data)-logTailBytes:]
	}
	return strings.TrimSpace(string(data))
}

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// LogPath is the file the process's output goes to.
func (p *Process) LogPath() string { return p.logPath }

// Kill sends SIGKILL to the process's group, as a crash would end it, and waits until it
// has exited.
func (p *Process) Kill() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = syscall.Kill(-p.PID(), syscall.SIGKILL)
	<-p.exited
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

// ReservePorts reserves n loopback TCP ports (package internal/reserve): each stays
// bound, not listening, until its Close, so no other process's bind to port 0 takes it
// while the server it is meant for starts and binds it beside the reservation (every
// server started here sets SO_REUSEADDR: Go's listeners, gnet with WithReuseAddr,
// redis-server). Passing explicit ports, rather than port 0 read back, keeps the
// drivers working with any build of Gregor, which bench-compare's base may be.
// Close them once the server listens.
func ReservePorts(n int) ([]*reserve.Reservation, error) {
	rs := make([]*reserve.Reservation, 0, n)
	for range n {
		r, err := reserve.TCP("127.0.0.1:0")
		if err != nil {
			ReleasePorts(rs)
			return nil, err
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// ReleasePorts closes reservations.
func ReleasePorts(rs []*reserve.Reservation) {
	for _, r := range rs {
		_ = r.Close()
	}
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
