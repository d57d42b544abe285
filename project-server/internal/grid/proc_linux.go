package grid

import "syscall"

// childAttr puts a child in its own process group, so a signal to the demo's terminal
// does not reach it before the demo has decided what to do, and has the kernel kill it
// with its parent, so a test binary that is itself killed leaves nothing running.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
