// Package sysinfo measures the volunteer's machine for registration and for the memory
// and disk caps: cores, memory from /proc/meminfo, free disk space, OS and host name.
package sysinfo

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// Info is what the client tells the server about this machine.
type Info struct {
	Name          string
	OS, Arch      string
	Cores         int
	MemTotalBytes int64
	MemAvailBytes int64
}

// Probe reads the machine's description; memory is 0 when /proc/meminfo is missing.
func Probe() Info {
	name, _ := os.Hostname()
	in := Info{Name: name, OS: runtime.GOOS, Arch: runtime.GOARCH, Cores: runtime.NumCPU()}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		in.MemTotalBytes, in.MemAvailBytes = ParseMeminfo(b)
	}
	return in
}

// ParseMeminfo returns MemTotal and MemAvailable in bytes from /proc/meminfo text.
func ParseMeminfo(b []byte) (total, avail int64) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		if len(f) > 2 && f[2] == "kB" {
			v <<= 10
		}
		switch f[0] {
		case "MemTotal:":
			total = v
		case "MemAvailable:":
			avail = v
		}
	}
	return total, avail
}

// LoadAvg returns the 1-minute load average from /proc/loadavg.
func LoadAvg() (float64, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, fmt.Errorf("load average: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("load average: empty /proc/loadavg")
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, fmt.Errorf("load average: %w", err)
	}
	return v, nil
}
