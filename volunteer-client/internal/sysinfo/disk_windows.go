//go:build windows

package sysinfo

import (
	"fmt"

	"golang.org/x/sys/windows"
)

// FreeDisk returns the bytes available to this user on the volume holding path.
func FreeDisk(path string) (int64, error) {
	p, err := windows.UTF16PtrFromString(path)
	if err != nil {
		return 0, fmt.Errorf("free disk of %s: %w", path, err)
	}
	var free, total, all uint64
	if err := windows.GetDiskFreeSpaceEx(p, &free, &total, &all); err != nil {
		return 0, fmt.Errorf("free disk of %s: %w", path, err)
	}
	return int64(free), nil
}
