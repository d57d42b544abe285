//go:build unix

package server

import (
	"net"
	"syscall"
)

// peerClosed looks at a TCP connection without consuming or waiting: it reports
// closed when the peer has sent FIN (a zero-length peek) or the connection failed, and
// ok=false when the connection cannot be inspected this way.
func peerClosed(c net.Conn) (closed, ok bool) {
	sc, isSys := c.(syscall.Conn)
	if !isSys {
		return false, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false, false
	}
	var n int
	var rerr error
	buf := make([]byte, 1)
	cerr := raw.Read(func(fd uintptr) bool {
		n, _, rerr = syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait for readiness
	})
	if cerr != nil {
		return true, true
	}
	switch {
	case rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK || rerr == syscall.EINTR:
		return false, true // open, nothing pending
	case rerr != nil:
		return true, true // reset or otherwise broken
	default:
		return n == 0, true // 0 bytes: orderly shutdown by the peer
	}
}
