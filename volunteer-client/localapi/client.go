package localapi

import (
	"bytes"
	"context"
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
)

// ErrNotRunning means the state directory has no running client to talk to.
var ErrNotRunning = errors.New("no volunteer-client is running for this state directory")

// Client calls a running volunteer-client's local API.
type Client struct {
	addr  string
	token string
	hc    *http.Client
	long  *http.Client // no overall timeout: WaitState bounds its own calls
}

// DefaultStateDir is the state directory of a client started without --state-dir:
// $TEXGRID_STATE_DIR, else $XDG_STATE_HOME/texgrid-volunteer, else
// ~/.local/state/texgrid-volunteer. getenv is os.Getenv outside tests.
func DefaultStateDir(getenv func(string) string) string {
	if d := getenv("TEXGRID_STATE_DIR"); d != "" {
		return d
	}
	if d := getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "texgrid-volunteer")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".local", "state", "texgrid-volunteer")
	}
	return ".texgrid-volunteer"
}

// Dial reads the address and token files of stateDir. It does not contact the client.
func Dial(stateDir string) (*Client, error) {
	addr, err := os.ReadFile(filepath.Join(stateDir, AddrFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w (%s has no %s)", ErrNotRunning, stateDir, AddrFile)
	}
	if err != nil {
		return nil, fmt.Errorf("local api address: %w", err)
	}
	tok, err := os.ReadFile(filepath.Join(stateDir, TokenFile))
	if err != nil {
		return nil, fmt.Errorf("local api token: %w", err)
	}
	return New(strings.TrimSpace(string(addr)), strings.TrimSpace(string(tok))), nil
}

// New returns a client for the API at addr ("127.0.0.1:port") with the given token.
func New(addr, token string) *Client {
	return &Client{addr: addr, token: token, hc: &http.Client{Timeout: 10 * time.Second}, long: &http.Client{}}
}

// WaitState returns the client's Status once its Seq is above after, or the current
// Status when timeout passes first (version 2; a version-1 client answers 404).
func (c *Client) WaitState(ctx context.Context, after uint64, timeout time.Duration) (*Status, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout+10*time.Second)
	defer cancel()
	q := url.Values{"after": {strconv.FormatUint(after, 10)}, "timeout": {strconv.Itoa(int(timeout.Round(time.Second) / time.Second))}}
	var s Status
	return &s, c.call(ctx, c.long, http.MethodGet, PathWait+"?"+q.Encode(), nil, &s)
}

// PauseFor pauses the client and lets it resume by itself after d (snooze, version 2).
func (c *Client) PauseFor(ctx context.Context, d time.Duration) (*Status, error) {
	var s Status
	return &s, c.do(ctx, http.MethodPost, PathPause+"?for="+url.QueryEscape(d.String()), nil, &s)
}

// State returns what the client is doing.
func (c *Client) State(ctx context.Context) (*Status, error) {
	var s Status
	return &s, c.do(ctx, http.MethodGet, PathState, nil, &s)
}

// Pause asks the client to stop computing after the current batch.
func (c *Client) Pause(ctx context.Context) (*Status, error) {
	var s Status
	return &s, c.do(ctx, http.MethodPost, PathPause, nil, &s)
}

// Resume lets a paused client compute again.
func (c *Client) Resume(ctx context.Context) (*Status, error) {
	var s Status
	return &s, c.do(ctx, http.MethodPost, PathResume, nil, &s)
}

// Prefs returns the effective preferences.
func (c *Client) Prefs(ctx context.Context) (*Prefs, error) {
	var p Prefs
	return &p, c.do(ctx, http.MethodGet, PathPreferences, nil, &p)
}

// SetPrefs applies a patch and returns the new effective preferences.
func (c *Client) SetPrefs(ctx context.Context, patch PrefsPatch) (*Prefs, error) {
	var p Prefs
	return &p, c.do(ctx, http.MethodPut, PathPreferences, patch, &p)
}

// ResetPrefs drops every local change and returns the effective preferences.
func (c *Client) ResetPrefs(ctx context.Context) (*Prefs, error) {
	var p Prefs
	return &p, c.do(ctx, http.MethodDelete, PathPreferences, nil, &p)
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	return c.call(ctx, c.hc, method, path, in, out)
}

func (c *Client) call(ctx context.Context, hc *http.Client, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.addr+path, body)
	if err != nil {
		return fmt.Errorf("local api %s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("local api %s %s: %w (is the client still running?)", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("local api %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		if json.Unmarshal(b, &e) == nil && e.Message != "" {
			return fmt.Errorf("local api %s %s: %s: %s", method, path, resp.Status, e.Message)
		}
		return fmt.Errorf("local api %s %s: %s", method, path, resp.Status)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("local api %s %s: decode answer: %w", method, path, err)
	}
	return nil
}
