//go:build windows

package state

import (
	"io/fs"
	"os"

	"golang.org/x/sys/windows"
)

var errWouldBlock = windows.ERROR_LOCK_VIOLATION

// lockFile takes a non-blocking exclusive lock on the first byte of f; Windows drops
// it with the process.
func lockFile(f *os.File) error {
	ol := new(windows.Overlapped)
	return windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, ol)
}

// owner is not checked on Windows: the profile directory's ACL protects the state.
func owner(fs.FileInfo) (int, bool) { return 0, false }

// tooOpen is false on Windows, whose permission bits do not describe the ACL.
func tooOpen(fs.FileMode) bool { return false }
