// Package client is the Go client of the project server's researcher API
// (project-server/protocol): campaigns, their actions and rounds, hosts, work units,
// datasets, models, model downloads and classification. It is the one way texgrid's
// own tools (the project-server CLI, the grid harness, tests) call that API; it
// imports nothing but the protocol package.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/texgrid/texgrid/project-server/protocol"
)

// MaxResponseBytes bounds a JSON answer the client reads.
const MaxResponseBytes = 64 << 20

// Client calls one project server with one researcher token. It is safe for
// concurrent use.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// New returns a client for the server at base (e.g. "http://127.0.0.1:8480") acting
// with the researcher token. A nil hc uses a client with a 10-minute timeout.
func New(base, token string, hc *http.Client) *Client {
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Minute}
	}
	return &Client{base: strings.TrimRight(base, "/"), token: token, http: hc}
}

// Base returns the server URL the client calls.
func (c *Client) Base() string { return c.base }

// Error is a non-2xx answer: the HTTP status and the protocol error body (Code is
// empty when the body was not a protocol.ErrorBody).
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message)
	}
	return fmt.Sprintf("%s (HTTP %d %s)", e.Message, e.Status, e.Code)
}

// StatusOf returns the HTTP status of an *Error in err's chain, or 0.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

func (c *Client) newRequest(ctx context.Context, method, path string, body io.Reader) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set(protocol.HeaderVersion, strconv.Itoa(protocol.Version))
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// send does the request and returns the response when its status is 2xx; otherwise
// it reads the error body and returns an *Error.
func (c *Client) send(req *http.Request) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var eb protocol.ErrorBody
	if json.Unmarshal(b, &eb) == nil && eb.Error != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, &Error{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message})
	}
	return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, &Error{Status: resp.StatusCode, Message: strings.TrimSpace(string(b))})
}

// do sends in as JSON (when not nil) and decodes the answer into out (when not nil).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.send(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes))
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// Status is GET /api/v1/status.
func (c *Client) Status(ctx context.Context) (protocol.Status, error) {
	var st protocol.Status
	err := c.do(ctx, http.MethodGet, protocol.APIPrefix+"/status", nil, &st)
	return st, err
}

// CreateCampaign is POST /api/v1/campaigns.
func (c *Client) CreateCampaign(ctx context.Context, spec protocol.CampaignSpec) (protocol.Campaign, error) {
	var out protocol.Campaign
	err := c.do(ctx, http.MethodPost, protocol.APIPrefix+"/campaigns", spec, &out)
	return out, err
}

// Campaigns is GET /api/v1/campaigns: the caller's campaigns (every campaign for an
// admin).
func (c *Client) Campaigns(ctx context.Context) ([]protocol.Campaign, error) {
	var out []protocol.Campaign
	err := c.do(ctx, http.MethodGet, protocol.APIPrefix+"/campaigns", nil, &out)
	return out, err
}

// Campaign is GET /api/v1/campaigns/{id}.
func (c *Client) Campaign(ctx context.Context, id int64) (protocol.Campaign, error) {
	var out protocol.Campaign
	err := c.do(ctx, http.MethodGet, protocol.CampaignPath(id, ""), nil, &out)
	return out, err
}

// Act is POST /api/v1/campaigns/{id}/{action}, action one of protocol.Action*.
func (c *Client) Act(ctx context.Context, id int64, action string) (protocol.Campaign, error) {
	var out protocol.Campaign
	err := c.do(ctx, http.MethodPost, protocol.CampaignPath(id, action), nil, &out)
	return out, err
}

// Rounds is GET /api/v1/campaigns/{id}/rounds.
func (c *Client) Rounds(ctx context.Context, id int64) ([]protocol.RoundInfo, error) {
	var out []protocol.RoundInfo
	err := c.do(ctx, http.MethodGet, protocol.CampaignPath(id, "rounds"), nil, &out)
	return out, err
}

// Blob is GET /api/v1/blobs/{sha256}: it copies a model version to w and checks its
// hash header names the blob asked for.
func (c *Client) Blob(ctx context.Context, sha string, w io.Writer) (int64, error) {
	return c.download(ctx, protocol.BlobPath(sha), w)
}

// download copies the body of a GET to w.
func (c *Client) download(ctx context.Context, path string, w io.Writer) (int64, error) {
	req, err := c.newRequest(ctx, http.MethodGet, path, nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.send(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("GET %s: %w", path, err)
	}
	return n, nil
}

// Hosts is GET /api/v1/hosts.
func (c *Client) Hosts(ctx context.Context) ([]protocol.HostSummary, error) {
	var out []protocol.HostSummary
	err := c.do(ctx, http.MethodGet, protocol.HostsPath, nil, &out)
	return out, err
}

// Models is GET /api/v1/models.
func (c *Client) Models(ctx context.Context) ([]protocol.ModelInfo, error) {
	var out []protocol.ModelInfo
	err := c.do(ctx, http.MethodGet, protocol.ModelsPath, nil, &out)
	return out, err
}

// RoundResults is GET /api/v1/campaigns/{id}/rounds/{round}/results.
func (c *Client) RoundResults(ctx context.Context, id int64, round int) ([]protocol.ResultInfo, error) {
	var out []protocol.ResultInfo
	err := c.do(ctx, http.MethodGet, protocol.ResultsPath(id, round), nil, &out)
	return out, err
}

// Datasets is GET /api/v1/datasets.
func (c *Client) Datasets(ctx context.Context) ([]protocol.DatasetInfo, error) {
	var out []protocol.DatasetInfo
	err := c.do(ctx, http.MethodGet, protocol.DatasetsPath, nil, &out)
	return out, err
}

// WorkUnits is GET /api/v1/campaigns/{id}/rounds/{round}/work-units.
func (c *Client) WorkUnits(ctx context.Context, id int64, round int) ([]protocol.WorkUnitInfo, error) {
	var out []protocol.WorkUnitInfo
	err := c.do(ctx, http.MethodGet, protocol.WorkUnitsPath(id, round), nil, &out)
	return out, err
}

// Model is GET /api/v1/campaigns/{id}/model: it copies round's result model (round < 0:
// the newest) in format (protocol.FormatSafetensors or FormatONNX) to w.
func (c *Client) Model(ctx context.Context, id int64, round int, format string, w io.Writer) (int64, error) {
	return c.download(ctx, protocol.ModelPath(id, round, format), w)
}

// Classify is POST /api/v1/campaigns/{id}/classify with one image's bytes.
func (c *Client) Classify(ctx context.Context, id int64, name string, img []byte) (protocol.ClassifyResponse, error) {
	var out protocol.ClassifyResponse
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, err := mw.CreateFormFile("image", name)
	if err == nil {
		_, err = fw.Write(img)
	}
	if err == nil {
		err = mw.Close()
	}
	if err != nil {
		return out, fmt.Errorf("classify: %w", err)
	}
	path := protocol.ClassifyPath(id)
	req, err := c.newRequest(ctx, http.MethodPost, path, &buf)
	if err != nil {
		return out, err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	resp, err := c.send(req)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, MaxResponseBytes)).Decode(&out); err != nil {
		return out, fmt.Errorf("POST %s: decode answer: %w", path, err)
	}
	return out, nil
}
