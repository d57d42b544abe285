//go:build !unix

package server

import "net"

// peerClosed cannot peek on this platform; closedByPeer falls back to a short read.
func peerClosed(net.Conn) (closed, ok bool) { return false, false }
