package faultproxy

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// echoServer answers each connection by sending back everything it reads.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// roundTrip sends payload, half-closes, and returns what came back and the error.
func roundTrip(t *testing.T, addr string, payload []byte) ([]byte, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		_, _ = c.Write(payload)
		_ = c.(*net.TCPConn).CloseWrite()
	}()
	return io.ReadAll(c)
}

func TestProxy(t *testing.T) {
	t.Parallel()
	payload := bytes.Repeat([]byte("texgrid!"), 64<<10) // 512 KiB
	cases := []struct {
		name     string
		setup    func(p *Proxy)
		wantFull bool
		maxBack  int // with a cut: at most this many bytes come back
		cuts     int64
	}{
		{"clean", func(p *Proxy) {}, true, 0, 0},
		{"cut upload", func(p *Proxy) { p.CutNext(Up, 100_000) }, false, 100_000, 1},
		{"cut download", func(p *Proxy) { p.CutNext(Down, 50_000) }, false, 50_000, 1},
		{"cut beyond size never fires", func(p *Proxy) { p.CutNext(Down, int64(len(payload))+1) }, true, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p, err := Start(echoServer(t))
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			c.setup(p)
			got, err := roundTrip(t, p.Addr(), payload)
			if c.wantFull {
				if err != nil || !bytes.Equal(got, payload) {
					t.Fatalf("got %d bytes, err %v; want the full %d", len(got), err, len(payload))
				}
			} else if len(got) > c.maxBack || len(got) == len(payload) {
				t.Fatalf("got %d bytes back through a cut at %d", len(got), c.maxBack)
			}
			if n := p.Cuts.Load(); n != c.cuts {
				t.Fatalf("cut %d connections, want %d", n, c.cuts)
			}
			// After the fault the link works again.
			if got, err := roundTrip(t, p.Addr(), payload[:1000]); err != nil || !bytes.Equal(got, payload[:1000]) {
				t.Fatalf("after the fault: %d bytes, %v", len(got), err)
			}
		})
	}
}

func TestDown(t *testing.T) {
	t.Parallel()
	p, err := Start(echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.SetDown(true)
	if got, err := roundTrip(t, p.Addr(), []byte("hello")); err == nil && len(got) > 0 {
		t.Fatalf("down proxy passed %q", got)
	}
	if p.Refused.Load() == 0 {
		t.Fatal("no connection counted as refused")
	}
	p.SetDown(false)
	if got, err := roundTrip(t, p.Addr(), []byte("hello")); err != nil || string(got) != "hello" {
		t.Fatalf("up again: %q, %v", got, err)
	}
}
