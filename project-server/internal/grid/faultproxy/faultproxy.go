// Package faultproxy is a TCP proxy for fault tests: it forwards 127.0.0.1 connections to
// one upstream and, on command, cuts connections after a number of bytes in a chosen
// direction or refuses new ones, the way a flaky home network would. It exists for
// tests and the demo; it never listens beyond loopback.
package faultproxy

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Direction selects which way bytes are counted for a cut.
type Direction int

// Directions: Up is client to upstream (uploads), Down is upstream to client (downloads).
const (
	Up Direction = iota
	Down
)

// cut is a pending fault: the next connection that moves After bytes in Dir is reset.
type cut struct {
	dir   Direction
	after int64
}

// Proxy forwards connections from its loopback address to the upstream.
type Proxy struct {
	upstream string
	ln       net.Listener

	mu      sync.Mutex
	cuts    []cut // consumed one per connection, in order
	refuse  bool
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
	closed  bool
	Cuts    atomic.Int64 // connections cut so far
	Refused atomic.Int64 // connections refused while down
}

// Start listens on 127.0.0.1 at a free port and forwards to upstream.
func Start(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{upstream: upstream, ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr returns the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// CutNext arranges for the next connection that carries more than after bytes in dir
// to be reset at that point. Several calls queue several cuts, one per connection.
func (p *Proxy) CutNext(dir Direction, after int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cuts = append(p.cuts, cut{dir, after})
}

// PendingCuts returns how many queued cuts have not fired yet.
func (p *Proxy) PendingCuts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.cuts)
}

// SetDown makes the proxy refuse (accept and immediately reset) new connections while
// down is true, and resets the open ones when it goes down.
func (p *Proxy) SetDown(down bool) {
	p.mu.Lock()
	p.refuse = down
	var open []net.Conn
	if down {
		for c := range p.conns {
			open = append(open, c)
		}
	}
	p.mu.Unlock()
	for _, c := range open {
		reset(c)
	}
}

// Close stops accepting, resets open connections and waits for every goroutine.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	open := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		open = append(open, c)
	}
	p.mu.Unlock()
	err := p.ln.Close()
	for _, c := range open {
		reset(c)
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.closed || p.refuse {
			p.mu.Unlock()
			p.Refused.Add(1)
			reset(c)
			continue
		}
		p.conns[c] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go p.handle(c)
	}
}

func (p *Proxy) handle(client net.Conn) {
	defer p.wg.Done()
	defer func() {
		p.mu.Lock()
		delete(p.conns, client)
		p.mu.Unlock()
	}()
	up, err := net.Dial("tcp", p.upstream)
	if err != nil {
		reset(client)
		return
	}
	p.mu.Lock()
	p.conns[up] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.conns, up)
		p.mu.Unlock()
	}()

	var once sync.Once
	kill := func() {
		once.Do(func() {
			p.Cuts.Add(1)
			reset(client)
			reset(up)
		})
	}
	done := make(chan struct{}, 2)
	go func() { p.pipe(up, client, Up, kill); done <- struct{}{} }()
	go func() { p.pipe(client, up, Down, kill); done <- struct{}{} }()
	<-done
	<-done
	client.Close()
	up.Close()
}

// claim takes the first queued cut for dir that fires within a connection that has
// moved n bytes so far, returning how many of those bytes may still pass.
func (p *Proxy) claim(dir Direction, n int64) (int64, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, c := range p.cuts {
		if c.dir == dir && n > c.after {
			p.cuts = append(p.cuts[:i:i], p.cuts[i+1:]...)
			return c.after, true
		}
	}
	return 0, false
}

// pipe copies src to dst in one direction until EOF, which it passes on as a half-close,
// or until a queued cut for that direction fires: then exactly the cut's byte count has
// been forwarded and kill resets both connections. On any other error it closes both,
// so the opposite pipe returns too.
func (p *Proxy) pipe(dst, src net.Conn, dir Direction, kill func()) {
	buf := make([]byte, 32<<10)
	var sent int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			if after, ok := p.claim(dir, sent+int64(n)); ok {
				if keep := after - sent; keep > 0 {
					_, _ = dst.Write(buf[:keep])
				}
				kill()
				return
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				src.Close()
				dst.Close()
				return
			}
			sent += int64(n)
		}
		if rerr != nil {
			tc, ok := dst.(*net.TCPConn)
			if ok && errors.Is(rerr, io.EOF) {
				_ = tc.CloseWrite()
				return
			}
			src.Close()
			dst.Close()
			return
		}
	}
}

// reset closes a TCP connection with RST instead of FIN, as a dropped link looks.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
