//go:build !linux

package grid

import "syscall"

// childAttr puts a child in its own process group; only Linux can also tie its life to
// the parent's.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
