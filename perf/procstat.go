package perf

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// clockTicksPerSec is USER_HZ, the unit of utime and stime in /proc/<pid>/stat. It is
// 100 on every Linux architecture Go supports (the kernel exports it as a constant to
// user space regardless of its internal HZ).
const clockTicksPerSec = 100

// ProcessCPU returns the CPU time (user + system) the process pid has used so far,
// including the waited-for children it reaped, in seconds.
func ProcessCPU(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("perf: cpu of pid %d: %w", pid, err)
	}
	return parseProcStatCPU(data)
}

// parseProcStatCPU reads utime, stime, cutime and cstime (fields 14–17) from a
// /proc/<pid>/stat line. The command name (field 2) is in parentheses and may itself
// contain spaces and parentheses, so fields are counted from the last ')'.
func parseProcStatCPU(data []byte) (float64, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("perf: /proc stat: no command name")
	}
	f := bytes.Fields(data[i+1:])
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 17-3+1 {
		return 0, fmt.Errorf("perf: /proc stat: %d fields", len(f)+2)
	}
	var ticks int64
	for n := 14; n <= 17; n++ {
		v, err := strconv.ParseInt(string(f[n-3]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("perf: /proc stat field %d: %w", n, err)
		}
		ticks += v
	}
	return float64(ticks) / clockTicksPerSec, nil
}

// cpuSum is the summed CPU time of pids, and each one's in byPID; processes that cannot
// be read count as zero and are reported in missing, so a vanished server shows up in
// the notes rather than as an error in the middle of a run.
func cpuSum(pids []int) (seconds float64, byPID map[int]float64, missing []int) {
	byPID = make(map[int]float64, len(pids))
	for _, pid := range pids {
		s, err := ProcessCPU(pid)
		if err != nil {
			missing = append(missing, pid)
			continue
		}
		byPID[pid] = s
		seconds += s
	}
	return seconds, byPID, missing
}

// processName is the command name of pid (from /proc/<pid>/comm), or "pid N".
func processName(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil || len(bytes.TrimSpace(data)) == 0 {
		return fmt.Sprintf("pid %d", pid)
	}
	return string(bytes.TrimSpace(data))
}

// ProcessCPUUse is one server process's CPU in a run's measured window.
type ProcessCPUUse struct {
	PID     int     `json:"pid"`
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
	// PerGB is Seconds per GB of payload moved (see Result.ServerCPUPerGB).
	PerGB float64 `json:"perGB"`
}
