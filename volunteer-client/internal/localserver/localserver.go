// Package localserver serves volunteer-client/localapi on 127.0.0.1: a random port
// written to the state directory, and a fresh random bearer token in a 0600 file, so
// only users who can read the state directory control the client. It answers from the
// agent's status and the preferences store; it never blocks on training.
package localserver

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/texgrid/texgrid/volunteer-client/internal/prefs"
	"github.com/texgrid/texgrid/volunteer-client/internal/state"
	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

// Controller is what the API controls: the agent.
type Controller interface {
	Status() localapi.Status
	// WaitChange returns the Status once its Seq is above after, or when ctx ends.
	WaitChange(ctx context.Context, after uint64) localapi.Status
	Pause()
	PauseFor(d time.Duration) // pause, then resume by itself after d
	Resume()
	Touch() // the Status shows something that changed outside the controller (preferences)
}

// MetricsSource is a Controller that also has Prometheus metrics; the API serves them
// at GET PathMetrics, behind the same token as everything else, so only who can read
// the state directory (and a Prometheus given the token file) sees them.
type MetricsSource interface {
	MetricsHandler() http.Handler
}

// PathMetrics is where the local API serves the client's metrics.
const PathMetrics = "/metrics"

// Server is a running local API.
type Server struct {
	Addr  string
	token string
	dir   *state.Dir
	srv   *http.Server
	done  chan struct{}
	stop  context.CancelFunc // ends the requests' context: long waits return at Close
}

// Start listens on 127.0.0.1:0, writes the address and token files and serves until
// Close. The files are removed by Close.
func Start(dir *state.Dir, c Controller, p *prefs.Store) (*Server, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, fmt.Errorf("local api token: %w", err)
	}
	s := &Server{token: hex.EncodeToString(raw[:]), dir: dir, done: make(chan struct{})}
	if err := state.WriteFile(dir.File(localapi.TokenFile), []byte(s.token+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("local api token: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("local api: %w", err)
	}
	s.Addr = ln.Addr().String()
	if err := state.WriteFile(dir.File(localapi.AddrFile), []byte(s.Addr+"\n"), 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("local api address: %w", err)
	}
	base, stop := context.WithCancel(context.Background())
	s.stop = stop
	s.srv = &http.Server{Handler: Handler(s.token, c, p), ReadHeaderTimeout: 5 * time.Second,
		BaseContext: func(net.Listener) context.Context { return base }}
	go func() {
		defer close(s.done)
		s.srv.Serve(ln)
	}()
	return s, nil
}

// Close stops serving and removes the address and token files.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s.stop() // a tray's pending wait answers now instead of holding Shutdown
	err := s.srv.Shutdown(ctx)
	<-s.done
	os.Remove(s.dir.File(localapi.AddrFile))
	os.Remove(s.dir.File(localapi.TokenFile))
	return err
}

// Handler returns the API's routes guarded by token.
func Handler(token string, c Controller, p *prefs.Store) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+localapi.PathState, func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, c.Status())
	})
	mux.HandleFunc("GET "+localapi.PathWait, func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		after, err := strconv.ParseUint(q.Get("after"), 10, 64)
		if err != nil {
			reply(w, http.StatusBadRequest, localapi.Error{Message: fmt.Sprintf("wait: after = %q, want the seq of the last Status seen (an unsigned integer)", q.Get("after"))})
			return
		}
		timeout := 30 * time.Second
		if v := q.Get("timeout"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || time.Duration(n)*time.Second > localapi.MaxWait {
				reply(w, http.StatusBadRequest, localapi.Error{Message: fmt.Sprintf("wait: timeout = %q, want whole seconds 1..%d", v, int(localapi.MaxWait/time.Second))})
				return
			}
			timeout = time.Duration(n) * time.Second
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		reply(w, http.StatusOK, c.WaitChange(ctx, after))
	})
	mux.HandleFunc("POST "+localapi.PathPause, func(w http.ResponseWriter, r *http.Request) {
		v := r.URL.Query().Get("for")
		if v == "" {
			c.Pause()
			reply(w, http.StatusOK, c.Status())
			return
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second || d > localapi.MaxSnooze {
			reply(w, http.StatusBadRequest, localapi.Error{Message: fmt.Sprintf("pause: for = %q, want a duration such as \"1h\" between 1s and %s", v, localapi.MaxSnooze)})
			return
		}
		c.PauseFor(d)
		reply(w, http.StatusOK, c.Status())
	})
	mux.HandleFunc("POST "+localapi.PathResume, func(w http.ResponseWriter, r *http.Request) {
		c.Resume()
		reply(w, http.StatusOK, c.Status())
	})
	mux.HandleFunc("GET "+localapi.PathPreferences, func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, p.Get())
	})
	mux.HandleFunc("PUT "+localapi.PathPreferences, func(w http.ResponseWriter, r *http.Request) {
		var patch localapi.PrefsPatch
		dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&patch); err != nil {
			reply(w, http.StatusBadRequest, localapi.Error{Message: "preferences: " + err.Error()})
			return
		}
		np, err := p.Set(patch)
		if errors.Is(err, localapi.ErrBadPrefs) {
			reply(w, http.StatusBadRequest, localapi.Error{Message: err.Error()})
			return
		}
		if err != nil {
			reply(w, http.StatusInternalServerError, localapi.Error{Message: err.Error()})
			return
		}
		c.Touch()
		reply(w, http.StatusOK, np)
	})
	if ms, ok := c.(MetricsSource); ok {
		mux.Handle("GET "+PathMetrics, ms.MetricsHandler())
	}
	mux.HandleFunc("DELETE "+localapi.PathPreferences, func(w http.ResponseWriter, r *http.Request) {
		np, err := p.Reset()
		if err != nil {
			reply(w, http.StatusInternalServerError, localapi.Error{Message: err.Error()})
			return
		}
		c.Touch()
		reply(w, http.StatusOK, np)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
			reply(w, http.StatusUnauthorized, localapi.Error{Message: "missing or wrong token; read it from " + localapi.TokenFile + " in the state directory"})
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
