// Package fakeserver is an in-memory project server speaking project-server/protocol,
// for the volunteer-client's unit tests. Tests queue work units and blobs, then inject
// faults: 5xx answers, dropped connections, late or closed results, aborts in heartbeat
// answers, and whole outages (the listener closed and reopened on the same port). It
// checks what a real server checks on the client's side of the contract (protocol
// header, bearer token, the result's sha256 header) and records every upload and
// failure report.
package fakeserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/poll"
)

// AccountKey is the only account key the fake accepts.
const AccountKey = "test-account-key"

// Upload is one result upload the fake received.
type Upload struct {
	WorkUnit int64
	Body     []byte
	SHA256   string
	Samples  int
	Loss     float64
	Outcome  string // accepted, late, replayed-accepted, rejected
	At       time.Time
}

// Server is the fake. Its methods are safe for concurrent use.
type Server struct {
	mu          sync.Mutex
	addr        string
	ln          net.Listener
	srv         *http.Server
	hosts       map[string]int64 // token -> host id
	nextHost    int64
	queue       []*protocol.WorkUnit
	issued      map[int64]*protocol.WorkUnit
	blobs       map[string][]byte
	late        map[int64]bool
	closed      map[int64]bool
	closeOnFail map[int64]bool // close a unit when its failure report arrives
	abort       map[int64]string
	accepted    map[int64]string // wu -> sha of the accepted body
	dropAns     map[int64]int    // wu -> answers to drop after processing the upload
	faults      []fault

	// Records.
	Uploads      []Upload
	Heartbeats   map[int64][]protocol.HeartbeatRequest
	Failures     map[int64][]protocol.FailureRequest // failure reports by work unit, refused ones too
	WorkRequests []protocol.WorkRequest
	Registered   []protocol.RegisterHostRequest
	Updates      []protocol.HostUpdateRequest
	Detached     int
	BlobGets     int
	Hits         map[string]int // requests by "METHOD /path", faults included
}

type fault struct {
	prefix string
	method string
	status int // 0: drop the connection
	left   int
}

// Start listens on 127.0.0.1 on a free port.
func Start() (*Server, error) {
	s := &Server{
		hosts: map[string]int64{}, issued: map[int64]*protocol.WorkUnit{}, blobs: map[string][]byte{},
		late: map[int64]bool{}, closed: map[int64]bool{}, closeOnFail: map[int64]bool{}, abort: map[int64]string{}, accepted: map[int64]string{}, dropAns: map[int64]int{},
		Heartbeats: map[int64][]protocol.HeartbeatRequest{}, Failures: map[int64][]protocol.FailureRequest{}, Hits: map[string]int{},
	}
	if err := s.listen("127.0.0.1:0"); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("fakeserver: %w", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 10 * time.Second}
	s.mu.Lock()
	s.addr, s.ln, s.srv = ln.Addr().String(), ln, srv
	s.mu.Unlock()
	go srv.Serve(ln) // ends when Stop closes srv
	return nil
}

// URL returns the base URL.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return "http://" + s.addr
}

// Stop closes the listener and every connection: the server is unreachable.
func (s *Server) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// Restart listens again on the same address after Stop, trying for up to 10 s while
// the address is still taken.
func (s *Server) Restart() error {
	return poll.Wait(context.Background(), 10*time.Second, func() error { return s.listen(s.addr) })
}

// Close stops the server for good.
func (s *Server) Close() { s.Stop() }

// AddHost registers a host directly and returns its token.
func (s *Server) AddHost() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addHostLocked()
}

func (s *Server) addHostLocked() string {
	s.nextHost++
	tok := fmt.Sprintf("host-token-%d", s.nextHost)
	s.hosts[tok] = s.nextHost
	return tok
}

// AddBlob stores a blob and returns its reference.
func (s *Server) AddBlob(b []byte) protocol.BlobRef {
	sum := sha256.Sum256(b)
	sha := hex.EncodeToString(sum[:])
	s.mu.Lock()
	s.blobs[sha] = append([]byte(nil), b...)
	s.mu.Unlock()
	return protocol.BlobRef{SHA256: sha, Size: int64(len(b)), URL: protocol.BlobPath(sha)}
}

// CorruptBlob replaces a blob's served bytes, keeping its name.
func (s *Server) CorruptBlob(sha string, b []byte) {
	s.mu.Lock()
	s.blobs[sha] = b
	s.mu.Unlock()
}

// QueueWork adds work units handed out in order by POST /work.
func (s *Server) QueueWork(wus ...*protocol.WorkUnit) {
	s.mu.Lock()
	s.queue = append(s.queue, wus...)
	s.mu.Unlock()
}

// SetLate makes the result upload of a work unit answer 409 late.
func (s *Server) SetLate(id int64) { s.mu.Lock(); s.late[id] = true; s.mu.Unlock() }

// SetClosed makes uploads and heartbeats of a work unit answer 409 wu_closed.
func (s *Server) SetClosed(id int64) { s.mu.Lock(); s.closed[id] = true; s.mu.Unlock() }

// CloseOnFailure closes a work unit when its failure report arrives (the report answers
// wu_closed), as when a campaign is stopped while the host is reporting; heartbeats
// before the report see the unit open, so a test does not depend on which comes first.
func (s *Server) CloseOnFailure(id int64) { s.mu.Lock(); s.closeOnFail[id] = true; s.mu.Unlock() }

// SetAbort makes heartbeats of a work unit answer abort with reason.
func (s *Server) SetAbort(id int64, reason string) { s.mu.Lock(); s.abort[id] = reason; s.mu.Unlock() }

// Fail makes the next n requests whose path starts with prefix (and method, if not
// empty) answer status; status 0 drops the connection without an answer.
func (s *Server) Fail(method, prefix string, status, n int) {
	s.mu.Lock()
	s.faults = append(s.faults, fault{prefix: prefix, method: method, status: status, left: n})
	s.mu.Unlock()
}

// ClearFaults drops every fault still pending from Fail.
func (s *Server) ClearFaults() { s.mu.Lock(); s.faults = nil; s.mu.Unlock() }

// DropAnswers makes the next n result uploads of a work unit be processed in full
// (accepted and recorded) and then lose their answer: the connection is closed.
func (s *Server) DropAnswers(id int64, n int) { s.mu.Lock(); s.dropAns[id] = n; s.mu.Unlock() }

// UploadsOf returns the uploads of a work unit.
func (s *Server) UploadsOf(id int64) []Upload {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Upload
	for _, u := range s.Uploads {
		if u.WorkUnit == id {
			out = append(out, u)
		}
	}
	return out
}

// Snapshot runs f under the server's lock, for reading the records.
func (s *Server) Snapshot(f func(s *Server)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(protocol.ErrorBody{Error: &protocol.Error{Code: code, Message: msg}})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func (s *Server) injected(w http.ResponseWriter, r *http.Request) bool {
	s.mu.Lock()
	var f *fault
	for i := range s.faults {
		ff := &s.faults[i]
		if ff.left > 0 && strings.HasPrefix(r.URL.Path, ff.prefix) && (ff.method == "" || ff.method == r.Method) {
			ff.left--
			f = ff
			break
		}
	}
	s.mu.Unlock()
	if f == nil {
		return false
	}
	io.Copy(io.Discard, r.Body)
	if f.status == 0 {
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
				return true
			}
		}
		panic(http.ErrAbortHandler)
	}
	writeErr(w, f.status, protocol.CodeInternal, "injected failure")
	return true
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.Hits[r.Method+" "+r.URL.Path]++
	s.mu.Unlock()
	if s.injected(w, r) {
		return
	}
	if v, err := strconv.Atoi(r.Header.Get(protocol.HeaderVersion)); err != nil || v < protocol.MinVersion {
		writeErr(w, http.StatusUpgradeRequired, protocol.CodeUpgradeRequired, "send Texgrid-Protocol")
		return
	}
	p := r.URL.Path
	if p == protocol.APIPrefix+"/hosts" && r.Method == http.MethodPost {
		s.register(w, r)
		return
	}
	s.mu.Lock()
	host, ok := s.hosts[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
	s.mu.Unlock()
	if !ok {
		writeErr(w, http.StatusUnauthorized, protocol.CodeUnauthorized, "unknown host token")
		return
	}
	switch {
	case p == protocol.DetachPath && r.Method == http.MethodDelete:
		s.mu.Lock()
		delete(s.hosts, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		s.Detached++
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case p == protocol.HostSelfPath && r.Method == http.MethodGet:
		s.mu.Lock()
		valid := 0
		for _, u := range s.Uploads {
			if u.Outcome == protocol.OutcomeAccepted || u.Outcome == protocol.OutcomeLate {
				valid++
			}
		}
		s.mu.Unlock()
		// One credit per accepted result, as the fake's result answers say.
		writeJSON(w, protocol.HostInfo{HostID: host, Credit: float64(valid), ResultsValid: valid, LastContact: time.Now()})
	case p == protocol.DetachPath && r.Method == http.MethodPatch:
		var req protocol.HostUpdateRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			writeErr(w, http.StatusBadRequest, protocol.CodeBadRequest, err.Error())
			return
		}
		s.mu.Lock()
		s.Updates = append(s.Updates, req)
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case p == protocol.APIPrefix+"/work" && r.Method == http.MethodPost:
		s.work(w, r)
	case strings.HasPrefix(p, protocol.APIPrefix+"/blobs/") && r.Method == http.MethodGet:
		s.mu.Lock()
		b, ok := s.blobs[strings.TrimPrefix(p, protocol.APIPrefix+"/blobs/")]
		s.BlobGets++
		s.mu.Unlock()
		if !ok {
			writeErr(w, http.StatusNotFound, protocol.CodeNotFound, "no such blob")
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b)
	case strings.HasPrefix(p, protocol.APIPrefix+"/work/"):
		rest := strings.Split(strings.TrimPrefix(p, protocol.APIPrefix+"/work/"), "/")
		id, err := strconv.ParseInt(rest[0], 10, 64)
		if err != nil || len(rest) != 2 {
			writeErr(w, http.StatusNotFound, protocol.CodeNotFound, "no such route")
			return
		}
		switch {
		case rest[1] == "heartbeat" && r.Method == http.MethodPost:
			s.heartbeat(w, r, id)
		case rest[1] == "result" && r.Method == http.MethodPut:
			s.result(w, r, id)
		case rest[1] == "failure" && r.Method == http.MethodPost:
			s.failure(w, r, id)
		default:
			writeErr(w, http.StatusNotFound, protocol.CodeNotFound, "no such route")
		}
	default:
		writeErr(w, http.StatusNotFound, protocol.CodeNotFound, "no such route")
	}
}

func (s *Server) register(w http.ResponseWriter, r *http.Request) {
	var req protocol.RegisterHostRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, protocol.CodeBadRequest, err.Error())
		return
	}
	if req.AccountKey != AccountKey {
		writeErr(w, http.StatusUnauthorized, protocol.CodeUnauthorized, "unknown account key")
		return
	}
	s.mu.Lock()
	s.Registered = append(s.Registered, req)
	tok := s.addHostLocked()
	id := s.nextHost
	s.mu.Unlock()
	writeJSON(w, protocol.RegisterHostResponse{HostID: id, Token: tok})
}

func (s *Server) work(w http.ResponseWriter, r *http.Request) {
	var req protocol.WorkRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, protocol.CodeBadRequest, err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.WorkRequests = append(s.WorkRequests, req)
	if len(s.queue) == 0 {
		writeJSON(w, protocol.WorkResponse{RetryAfterSeconds: 1, Message: "no work queued"})
		return
	}
	wu := s.queue[0]
	s.queue = s.queue[1:]
	s.issued[wu.ID] = wu
	writeJSON(w, protocol.WorkResponse{WorkUnit: wu})
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request, id int64) {
	var req protocol.HeartbeatRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, protocol.CodeBadRequest, err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	wu, ok := s.issued[id]
	if !ok {
		writeErr(w, http.StatusNotFound, protocol.CodeNotFound, "work unit not issued")
		return
	}
	if s.closed[id] {
		writeErr(w, http.StatusConflict, protocol.CodeWUClosed, "work unit closed")
		return
	}
	s.Heartbeats[id] = append(s.Heartbeats[id], req)
	resp := protocol.HeartbeatResponse{Deadline: wu.Deadline}
	if reason, ok := s.abort[id]; ok {
		resp.Abort, resp.Reason = true, reason
	}
	writeJSON(w, resp)
}

// failure records a failure report; a closed unit answers 409 wu_closed, as the
// real server does for an aborted one.
func (s *Server) failure(w http.ResponseWriter, r *http.Request, id int64) {
	var req protocol.FailureRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, protocol.CodeBadRequest, err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	wu, ok := s.issued[id]
	if !ok {
		writeErr(w, http.StatusNotFound, protocol.CodeNotFound, "work unit not issued")
		return
	}
	s.Failures[id] = append(s.Failures[id], req)
	if s.closeOnFail[id] {
		s.closed[id] = true
	}
	if s.closed[id] {
		writeErr(w, http.StatusConflict, protocol.CodeWUClosed, "work unit closed")
		return
	}
	writeJSON(w, protocol.FailureResponse{Round: wu.Round, Reissued: true, Replayed: len(s.Failures[id]) > 1})
}

func (s *Server) result(w http.ResponseWriter, r *http.Request, id int64) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return // the client went away
	}
	sum := sha256.Sum256(body)
	sha := hex.EncodeToString(sum[:])
	up := Upload{WorkUnit: id, Body: body, SHA256: r.Header.Get(protocol.HeaderSHA256), At: time.Now()}
	up.Samples, _ = strconv.Atoi(r.Header.Get(protocol.HeaderSamples))
	up.Loss, _ = strconv.ParseFloat(r.Header.Get(protocol.HeaderLoss), 64)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dropAns[id] > 0 {
		s.dropAns[id]--
		w = dropWriter{w}
	}
	wu, ok := s.issued[id]
	switch {
	case !ok:
		up.Outcome = "rejected"
		s.Uploads = append(s.Uploads, up)
		writeErr(w, http.StatusNotFound, protocol.CodeNotFound, "work unit not issued")
	case up.SHA256 != sha:
		up.Outcome = "rejected"
		s.Uploads = append(s.Uploads, up)
		writeErr(w, http.StatusBadRequest, protocol.CodeBadRequest, "Texgrid-Sha256 does not match the body")
	case s.closed[id]:
		up.Outcome = "rejected"
		s.Uploads = append(s.Uploads, up)
		writeErr(w, http.StatusConflict, protocol.CodeWUClosed, "work unit closed")
	case s.late[id]:
		up.Outcome = protocol.OutcomeLate
		s.Uploads = append(s.Uploads, up)
		writeErr(w, http.StatusConflict, protocol.CodeLate, "round closed")
	case s.accepted[id] != "":
		up.Outcome = "replayed"
		s.Uploads = append(s.Uploads, up)
		writeJSON(w, protocol.ResultResponse{Outcome: protocol.OutcomeAccepted, Round: wu.Round, Credit: 1, Replayed: true})
	default:
		up.Outcome = protocol.OutcomeAccepted
		s.accepted[id] = sha
		s.Uploads = append(s.Uploads, up)
		writeJSON(w, protocol.ResultResponse{Outcome: protocol.OutcomeAccepted, Round: wu.Round, Credit: 1})
	}
}

// Accepted returns the sha256 of the accepted result of a work unit, or "".
func (s *Server) Accepted(id int64) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted[id]
}

// dropWriter closes the connection instead of writing an answer.
type dropWriter struct{ http.ResponseWriter }

func (d dropWriter) WriteHeader(int) { d.drop() }
func (d dropWriter) Write([]byte) (int, error) {
	d.drop()
	return 0, io.ErrClosedPipe
}
func (d dropWriter) drop() {
	if hj, ok := d.ResponseWriter.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			c.Close()
		}
	}
}
