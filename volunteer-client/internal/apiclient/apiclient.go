// Package apiclient is the volunteer's side of project-server/protocol: one method per
// endpoint, errors decoded into *APIError with sentinels for the answers the agent acts
// on (late, closed, unauthorized), and Retryable saying which failures are worth a
// retry. It never retries by itself; the agent owns the retry policy.
package apiclient

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/volunteer-client/internal/backoff"
)

// Sentinels matched by errors.Is against an *APIError's code.
var (
	ErrLate         = errors.New("result is late: the round closed")
	ErrWUClosed     = errors.New("work unit is closed")
	ErrUnauthorized = errors.New("the server does not know this host or account key")
	ErrUpgrade      = errors.New("the server needs a newer volunteer-client")
	ErrInvalidDelta = errors.New("the server rejected the delta")
	ErrNotFound     = errors.New("the server does not know this object")
	ErrCorrupt      = errors.New("downloaded blob does not match its sha256")
)

// APIError is a non-2xx answer.
type APIError struct {
	Method, Path string
	Status       int
	Code         string // protocol.Code*; "" when the body was not a protocol error
	Message      string
	RetryAfter   time.Duration
}

// Error names the call, the status, the code and the server's message.
func (e *APIError) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if e.Code != "" {
		return fmt.Sprintf("%s %s: %d %s: %s", e.Method, e.Path, e.Status, e.Code, msg)
	}
	return fmt.Sprintf("%s %s: %d: %s", e.Method, e.Path, e.Status, msg)
}

// Is maps protocol codes onto the package sentinels.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrLate:
		// A stale result (asynchronous campaigns) is, like a late one, recorded and
		// credited without being merged: the client drops it the same way.
		return e.Code == protocol.CodeLate || e.Code == protocol.CodeStale
	case ErrWUClosed:
		return e.Code == protocol.CodeWUClosed
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrUpgrade:
		return e.Status == http.StatusUpgradeRequired
	case ErrInvalidDelta:
		return e.Code == protocol.CodeInvalidDelta
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	}
	return false
}

// Retryable reports whether err may go away by itself: transport failures, 5xx, 408,
// 429 and corrupt downloads. 4xx answers are final.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status >= 500 || ae.Status == http.StatusTooManyRequests || ae.Status == http.StatusRequestTimeout
	}
	return true // network errors, truncated bodies, sha mismatches
}

// ForRetry wraps err for backoff.Retry: permanent unless Retryable, with the server's
// Retry-After carried along.
func ForRetry(err error) error {
	if err == nil {
		return nil
	}
	if !Retryable(err) {
		return backoff.Permanent(err)
	}
	var ae *APIError
	if errors.As(err, &ae) && ae.RetryAfter > 0 {
		return &backoff.After{Err: err, Delay: ae.RetryAfter}
	}
	return err
}

// Client talks to one project server.
type Client struct {
	base    *url.URL
	token   string
	hc      *http.Client
	version string
}

// New returns a client for the server at baseURL ("http://host:port"); token may be
// empty before attach. clientVersion goes to the server in registration.
func New(baseURL, token, clientVersion string) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server URL %q: want http(s)://host[:port]", baseURL)
	}
	return &Client{base: u, token: token, version: clientVersion, hc: &http.Client{
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			ResponseHeaderTimeout: 2 * time.Minute,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   2,
		},
	}}, nil
}

// BaseURL returns the server URL.
func (c *Client) BaseURL() string { return c.base.String() }

// Register is POST /api/v1/hosts.
func (c *Client) Register(ctx context.Context, req protocol.RegisterHostRequest) (*protocol.RegisterHostResponse, error) {
	var out protocol.RegisterHostResponse
	if err := c.doJSON(ctx, http.MethodPost, protocol.APIPrefix+"/hosts", req, &out); err != nil {
		return nil, err
	}
	if out.Token == "" {
		return nil, fmt.Errorf("register host: the server sent no token")
	}
	return &out, nil
}

// Detach is DELETE /api/v1/hosts/self.
func (c *Client) Detach(ctx context.Context) error {
	return c.doJSON(ctx, http.MethodDelete, protocol.DetachPath, nil, nil)
}

// UpdateHost is PATCH /api/v1/hosts/self: refreshed capabilities at start-up.
func (c *Client) UpdateHost(ctx context.Context, req protocol.HostUpdateRequest) error {
	return c.doJSON(ctx, http.MethodPatch, protocol.DetachPath, req, nil)
}

// HostInfo is GET /api/v1/hosts/self: the host's record (credit, results).
func (c *Client) HostInfo(ctx context.Context) (*protocol.HostInfo, error) {
	var out protocol.HostInfo
	if err := c.doJSON(ctx, http.MethodGet, protocol.HostSelfPath, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RequestWork is POST /api/v1/work.
func (c *Client) RequestWork(ctx context.Context, req protocol.WorkRequest) (*protocol.WorkResponse, error) {
	var out protocol.WorkResponse
	if err := c.doJSON(ctx, http.MethodPost, protocol.APIPrefix+"/work", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Heartbeat is POST /api/v1/work/{id}/heartbeat.
func (c *Client) Heartbeat(ctx context.Context, id int64, req protocol.HeartbeatRequest) (*protocol.HeartbeatResponse, error) {
	var out protocol.HeartbeatResponse
	if err := c.doJSON(ctx, http.MethodPost, protocol.WorkPath(id, "heartbeat"), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ReportFailure is POST /api/v1/work/{id}/failure (protocol version 2): the host gives
// up a work unit it cannot finish. A 409 answer matches ErrWUClosed (aborted or
// ended) or is a conflict (its result is already in); a server older than version 2
// answers 404 (ErrNotFound). The report carries no non-finite number.
func (c *Client) ReportFailure(ctx context.Context, id int64, req protocol.FailureRequest) (*protocol.FailureResponse, error) {
	var out protocol.FailureResponse
	if err := c.doJSON(ctx, http.MethodPost, protocol.WorkPath(id, "failure"), req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Result is one finished work unit's upload.
type Result struct {
	Delta   []byte // safetensors body
	SHA256  string // hex of Delta
	Samples int
	Loss    float64
}

// UploadResult is PUT /api/v1/work/{id}/result. A 409 late answer returns an error
// matching ErrLate. Sending the same bytes again is safe: the server replays.
func (c *Client) UploadResult(ctx context.Context, id int64, r Result) (*protocol.ResultResponse, error) {
	path := protocol.WorkPath(id, "result")
	req, err := c.newRequest(ctx, http.MethodPut, path, bytes.NewReader(r.Delta))
	if err != nil {
		return nil, err
	}
	req.ContentLength = int64(len(r.Delta))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(r.Delta)), nil }
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set(protocol.HeaderSHA256, r.SHA256)
	req.Header.Set(protocol.HeaderSamples, strconv.Itoa(r.Samples))
	req.Header.Set(protocol.HeaderLoss, strconv.FormatFloat(r.Loss, 'g', -1, 64))
	var out protocol.ResultResponse
	if err := c.do(req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// FetchBlob downloads a blob into dst, verifying its size and sha256 before the file
// appears under dst (written to a temporary name and renamed). A mismatch returns an
// error matching ErrCorrupt and leaves nothing behind.
func (c *Client) FetchBlob(ctx context.Context, ref protocol.BlobRef, dst string) error {
	p := ref.URL
	if p == "" {
		p = protocol.BlobPath(ref.SHA256)
	}
	req, err := c.newRequest(ctx, http.MethodGet, p, nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", p, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeError(req, resp)
	}
	f, err := os.CreateTemp(filepath.Dir(dst), ".blob-*")
	if err != nil {
		return fmt.Errorf("blob %.12s: %w", ref.SHA256, err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	h := sha256.New()
	limit := ref.Size
	if limit <= 0 {
		limit = 1 << 32
	}
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return fmt.Errorf("GET %s: %w", p, err)
	}
	if ref.Size > 0 && n != ref.Size {
		return fmt.Errorf("blob %.12s: got %d bytes, want %d: %w", ref.SHA256, n, ref.Size, ErrCorrupt)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != strings.ToLower(ref.SHA256) {
		return fmt.Errorf("blob %.12s: body hashes to %.12s: %w", ref.SHA256, got, ErrCorrupt)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("blob %.12s: %w", ref.SHA256, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("blob %.12s: %w", ref.SHA256, err)
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return fmt.Errorf("blob %.12s: %w", ref.SHA256, err)
	}
	return nil
}

func (c *Client) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	u := *c.base
	rel, err := url.Parse(path)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	u.Path = strings.TrimRight(c.base.Path, "/") + rel.Path
	u.RawQuery = rel.RawQuery
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set(protocol.HeaderVersion, strconv.Itoa(protocol.Version))
	req.Header.Set("User-Agent", "texgrid-volunteer-client/"+c.version)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

func (c *Client) doJSON(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	var raw []byte
	if in != nil {
		var err error
		if raw, err = json.Marshal(in); err != nil {
			return err
		}
		body = bytes.NewReader(raw)
	}
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil }
	}
	return c.do(req, out)
}

func (c *Client) do(req *http.Request, out any) error {
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeError(req, resp)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", req.Method, req.URL.Path, err)
	}
	if out == nil || len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", req.Method, req.URL.Path, err)
	}
	return nil
}

func decodeError(req *http.Request, resp *http.Response) error {
	e := &APIError{Method: req.Method, Path: req.URL.Path, Status: resp.StatusCode}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var body protocol.ErrorBody
	if json.Unmarshal(b, &body) == nil && body.Error != nil {
		e.Code, e.Message = body.Error.Code, body.Error.Message
	} else {
		e.Message = strings.TrimSpace(string(b))
		if len(e.Message) > 200 {
			e.Message = e.Message[:200]
		}
	}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if secs, err := strconv.Atoi(s); err == nil && secs > 0 {
			e.RetryAfter = time.Duration(secs) * time.Second
		}
	}
	return e
}
