package faultproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"sync"
	"time"
)

// Gate is an HTTP reverse proxy that holds the requests a test chooses until the test
// lets them through. It turns "this volunteer's result arrives after its round closed"
// from a race the test hopes to win into an order the test arranges. Requests that do
// not match pass straight through.
type Gate struct {
	srv   *http.Server
	ln    net.Listener
	proxy *httputil.ReverseProxy
	match func(*http.Request) bool
	done  chan struct{} // closed when Serve returns

	mu      sync.Mutex
	held    map[*http.Request]chan struct{} // each closed to let its request through
	open    bool                            // no more holding (Open or Close)
	arrived chan struct{}                   // closed and replaced whenever a request is held
}

// StartGate listens on 127.0.0.1 at a free port and forwards HTTP to the upstream
// host:port, holding each request for which match returns true.
func StartGate(upstream string, match func(*http.Request) bool) (*Gate, error) {
	u, err := url.Parse("http://" + upstream)
	if err != nil {
		return nil, fmt.Errorf("gate: upstream %q: %w", upstream, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("gate: %w", err)
	}
	g := &Gate{ln: ln, proxy: httputil.NewSingleHostReverseProxy(u), match: match,
		held: map[*http.Request]chan struct{}{}, arrived: make(chan struct{}), done: make(chan struct{})}
	g.srv = &http.Server{Handler: http.HandlerFunc(g.serve), ReadHeaderTimeout: 30 * time.Second}
	go func() {
		defer close(g.done)
		_ = g.srv.Serve(ln)
	}()
	return g, nil
}

// URL returns the gate's base URL ("http://127.0.0.1:port").
func (g *Gate) URL() string { return "http://" + g.ln.Addr().String() }

func (g *Gate) serve(w http.ResponseWriter, r *http.Request) {
	if g.match(r) {
		// Read the body first: the client has then sent everything and waits for the
		// answer, and the server notices if it gives up while held.
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		release := make(chan struct{})
		g.mu.Lock()
		if !g.open {
			g.held[r] = release
			close(g.arrived)
			g.arrived = make(chan struct{})
		} else {
			close(release)
		}
		g.mu.Unlock()
		select {
		case <-release:
		case <-r.Context().Done(): // the client gave up; a retry is held again
			g.mu.Lock()
			delete(g.held, r)
			g.mu.Unlock()
			return
		}
	}
	g.proxy.ServeHTTP(w, r)
}

// Held returns the method and path of each request now held, sorted.
func (g *Gate) Held() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for r := range g.held {
		out = append(out, r.Method+" "+r.URL.Path)
	}
	sort.Strings(out)
	return out
}

// WaitHeld blocks until at least one request is held, or ctx ends.
func (g *Gate) WaitHeld(ctx context.Context) error {
	for {
		g.mu.Lock()
		n, arrived := len(g.held), g.arrived
		g.mu.Unlock()
		if n > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("gate: no request held: %w", ctx.Err())
		case <-arrived:
		}
	}
}

// Release lets every request now held through and returns their method and path,
// sorted; matching requests that arrive later are held again.
func (g *Gate) Release() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for r, release := range g.held {
		out = append(out, r.Method+" "+r.URL.Path)
		close(release)
		delete(g.held, r)
	}
	sort.Strings(out)
	return out
}

// Open releases every held request and stops holding: from now on the gate is a
// plain proxy.
func (g *Gate) Open() {
	g.mu.Lock()
	g.open = true
	g.mu.Unlock()
	g.Release()
}

// Close opens the gate, stops listening and waits for the requests in flight.
func (g *Gate) Close() error {
	g.Open()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := g.srv.Shutdown(ctx)
	<-g.done
	if errors.Is(err, context.DeadlineExceeded) {
		err = g.srv.Close()
	}
	return err
}
