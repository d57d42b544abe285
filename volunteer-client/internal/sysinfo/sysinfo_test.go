package sysinfo_test

import (
	"testing"

	"github.com/texgrid/texgrid/volunteer-client/internal/sysinfo"
)

func TestParseMeminfo(t *testing.T) {
	t.Parallel()
	total, avail := sysinfo.ParseMeminfo([]byte("MemTotal:        8000000 kB\nMemFree:  100 kB\nMemAvailable:    4000000 kB\nbroken line\n"))
	if total != 8000000<<10 || avail != 4000000<<10 {
		t.Errorf("total %d avail %d", total, avail)
	}
	if tot, av := sysinfo.ParseMeminfo(nil); tot != 0 || av != 0 {
		t.Errorf("empty meminfo: %d %d", tot, av)
	}
}

func TestProbe(t *testing.T) {
	t.Parallel()
	in := sysinfo.Probe()
	if in.Cores < 1 || in.OS == "" || in.MemTotalBytes <= 0 {
		t.Errorf("probe %+v", in)
	}
	if free, err := sysinfo.FreeDisk(t.TempDir()); err != nil || free <= 0 {
		t.Errorf("free disk %d %v", free, err)
	}
	if _, err := sysinfo.LoadAvg(); err != nil {
		t.Error(err)
	}
}
