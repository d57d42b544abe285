package faultproxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/texgrid/texgrid/trainer/poll"
)

// recordingServer answers every request with its body and records what reached it.
type recordingServer struct {
	mu   sync.Mutex
	seen []string // "METHOD /path body"
}

func (s *recordingServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.seen = append(s.seen, r.Method+" "+r.URL.Path+" "+string(b))
	s.mu.Unlock()
	_, _ = w.Write(b)
}

func (s *recordingServer) reached() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

// send does one request through the gate and returns the answer's body.
func send(ctx context.Context, base, method, path, body string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func isPut(r *http.Request) bool { return r.Method == http.MethodPut }

func TestGateHoldsUntilReleased(t *testing.T) {
	t.Parallel()
	up := &recordingServer{}
	ts := httptest.NewServer(up)
	defer ts.Close()
	g, err := StartGate(strings.TrimPrefix(ts.URL, "http://"), isPut)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	type answer struct {
		body string
		err  error
	}
	held := make(chan answer, 1)
	go func() {
		b, err := send(ctx, g.URL(), http.MethodPut, "/work/1/result", "delta-1")
		held <- answer{b, err}
	}()
	if err := g.WaitHeld(ctx); err != nil {
		t.Fatal(err)
	}
	if got := g.Held(); !slices.Equal(got, []string{"PUT /work/1/result"}) {
		t.Errorf("Held() = %v", got)
	}
	// Requests that do not match pass while the other is held.
	if b, err := send(ctx, g.URL(), http.MethodPost, "/work/1/heartbeat", "hb"); err != nil || b != "hb" {
		t.Fatalf("heartbeat through the gate: %q, %v", b, err)
	}
	if got := up.reached(); !slices.Equal(got, []string{"POST /work/1/heartbeat hb"}) {
		t.Fatalf("upstream saw %v before the release; want only the heartbeat", got)
	}
	if got := g.Release(); !slices.Equal(got, []string{"PUT /work/1/result"}) {
		t.Errorf("Release() = %v", got)
	}
	if a := <-held; a.err != nil || a.body != "delta-1" {
		t.Fatalf("held request after release: %q, %v", a.body, a.err)
	}
	if got := up.reached(); len(got) != 2 || got[1] != "PUT /work/1/result delta-1" {
		t.Errorf("upstream saw %v; want the upload, whole, after the heartbeat", got)
	}
	if len(g.Held()) != 0 {
		t.Errorf("still held after release: %v", g.Held())
	}
}

func TestGateDropsAbandonedRequests(t *testing.T) {
	t.Parallel()
	up := &recordingServer{}
	ts := httptest.NewServer(up)
	defer ts.Close()
	g, err := StartGate(strings.TrimPrefix(ts.URL, "http://"), isPut)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	reqCtx, giveUp := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := send(reqCtx, g.URL(), http.MethodPut, "/work/2/result", "delta-2")
		errc <- err
	}()
	if err := g.WaitHeld(ctx); err != nil {
		t.Fatal(err)
	}
	giveUp()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("abandoned request: %v, want context.Canceled", err)
	}
	// The gate notices the client left and forgets the request; nothing reaches the server.
	poll.Until(t, 30*time.Second, "the gate to forget the abandoned request", func() bool { return len(g.Held()) == 0 })
	if got := g.Release(); len(got) != 0 {
		t.Errorf("Release() let %v through after the client left", got)
	}
	if got := up.reached(); len(got) != 0 {
		t.Errorf("upstream saw %v", got)
	}
}

func TestGateOpenStopsHolding(t *testing.T) {
	t.Parallel()
	up := &recordingServer{}
	ts := httptest.NewServer(up)
	defer ts.Close()
	g, err := StartGate(strings.TrimPrefix(ts.URL, "http://"), isPut)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	g.Open()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if b, err := send(ctx, g.URL(), http.MethodPut, "/work/3/result", "delta-3"); err != nil || b != "delta-3" {
		t.Fatalf("PUT through an open gate: %q, %v", b, err)
	}
}
