package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTicks is the kernel's USER_HZ, the unit of /proc/PID/stat's CPU
// times: 100 on every Linux this runs on.
const clockTicks = 100

// cpuMeter measures the CPU time a process spends over a window.
type cpuMeter struct {
	pid   int
	ticks int64
	at    time.Time
}

// startCPU starts measuring pid's CPU time; a pid of zero or less
// measures nothing.
func startCPU(pid int) cpuMeter {
	m := cpuMeter{pid: pid, at: time.Now()}
	if pid > 0 {
		m.ticks, _ = readTicks(pid)
	}
	return m
}

// share returns the share of one core the process used since startCPU,
// or -1 if it cannot be read.
func (m cpuMeter) share() float64 {
	if m.pid <= 0 {
		return -1
	}
	now, err := readTicks(m.pid)
	if err != nil {
		return -1
	}
	return float64(now-m.ticks) / clockTicks / time.Since(m.at).Seconds()
}

// readTicks returns pid's user plus system CPU time in clock ticks.
func readTicks(pid int) (int64, error) {
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	return cpuTicks(string(stat))
}

// childNamed returns the id of a child process of this one whose command
// name is name, or 0 if there is none.
func childNamed(name string) int {
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, path := range stats {
		stat, err := os.ReadFile(path)
		if err != nil || !strings.Contains(string(stat), "("+name+")") {
			continue
		}
		if ppid, err := parentOf(string(stat)); err == nil && ppid == os.Getpid() {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
			return pid
		}
	}
	return 0
}

// loadAverage returns the machine's load averages over 1, 5 and 15
// minutes, as /proc/loadavg gives them, or "-".
func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "-"
	}
	fields := strings.Fields(string(raw))
	if len(fields) < 3 {
		return "-"
	}
	return strings.Join(fields[:3], " ")
}

// load1 returns the machine's load average over the last minute, or "-".
func load1() string {
	load, _, _ := strings.Cut(loadAverage(), " ")
	return load
}
