//go:build unix

package sysinfo

import (
	"fmt"
	"syscall"
)

// FreeDisk returns the bytes available to this user on the file system holding path.
func FreeDisk(path string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("free disk of %s: %w", path, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
