package perf

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"runtime"
	"strings"
)

// Machine describes the host a run was made on.
type Machine struct {
	Cores    int    `json:"cores"`
	CPU      string `json:"cpu"`
	Kernel   string `json:"kernel"`
	MemoryGB string `json:"memory"`
	Go       string `json:"go"`
}

// String is the one-line description reports print.
func (m Machine) String() string {
	return strings.Join([]string{
		itoa(m.Cores) + " cores (" + m.CPU + ")", "Linux " + m.Kernel, m.MemoryGB + " RAM", m.Go,
	}, ", ")
}

func itoa(n int) string { return trimFloat(float64(n)) }

// DescribeMachine reads the host's CPU model, kernel and memory from /proc.
func DescribeMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), CPU: "unknown CPU", Kernel: "unknown", MemoryGB: "unknown", Go: runtime.Version()}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(data))
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) >= 2 && f[0] == "MemTotal:" {
				var kb float64
				for _, c := range f[1] {
					kb = kb*10 + float64(c-'0')
				}
				m.MemoryGB = formatBytes(kb * 1024)
			}
		}
	}
	return m
}

// GitCommit returns the short commit of the working tree in dir, with "-dirty" when it
// has uncommitted changes, or "unknown" outside a repository.
func GitCommit(dir string) string {
	out, err := exec.Command("git", "-C", dir, "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	st, err := exec.Command("git", "-C", dir, "status", "--porcelain", "--untracked-files=no").Output()
	if err == nil && len(bytes.TrimSpace(st)) > 0 {
		c += "-dirty"
	}
	return c
}

// LoadAverage is the 1, 5 and 15 minute load averages from /proc/loadavg, "" if unknown.
func LoadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}
