//go:build unix

package state

import (
	"io/fs"
	"os"
	"syscall"
)

var errWouldBlock = syscall.EWOULDBLOCK

// lockFile takes a non-blocking exclusive flock; the kernel drops it with the process.
func lockFile(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
}

// owner returns the uid owning a file.
func owner(fi fs.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}

// tooOpen reports whether group or others have any access.
func tooOpen(m fs.FileMode) bool { return m.Perm()&0o077 != 0 }
