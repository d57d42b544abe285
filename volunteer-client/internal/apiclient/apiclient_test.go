package apiclient_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/volunteer-client/internal/apiclient"
	"github.com/texgrid/texgrid/volunteer-client/internal/fakeserver"
)

func TestErrorsMapToSentinels(t *testing.T) {
	t.Parallel()
	srv, err := fakeserver.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	tok := srv.AddHost()
	c, _ := apiclient.New(srv.URL(), tok, "test")
	ctx := context.Background()
	srv.QueueWork(&protocol.WorkUnit{ID: 1, Round: 2}, &protocol.WorkUnit{ID: 2}, &protocol.WorkUnit{ID: 3})
	for i := 0; i < 3; i++ {
		if _, err := c.RequestWork(ctx, protocol.WorkRequest{Threads: 1}); err != nil {
			t.Fatal(err)
		}
	}
	srv.SetLate(2)
	srv.SetClosed(3)
	body := []byte("delta")
	r := apiclient.Result{Delta: body, Samples: 1}
	cases := []struct {
		name      string
		call      func() error
		want      error
		retryable bool
	}{
		{"late", func() error { _, err := c.UploadResult(ctx, 2, withSHA(r)); return err }, apiclient.ErrLate, false},
		{"closed", func() error { _, err := c.UploadResult(ctx, 3, withSHA(r)); return err }, apiclient.ErrWUClosed, false},
		{"not issued", func() error { _, err := c.UploadResult(ctx, 99, withSHA(r)); return err }, apiclient.ErrNotFound, false},
		{"unknown token", func() error {
			bad, _ := apiclient.New(srv.URL(), "nope", "test")
			_, err := bad.RequestWork(ctx, protocol.WorkRequest{})
			return err
		}, apiclient.ErrUnauthorized, false},
		{"5xx", func() error {
			srv.Fail(http.MethodPost, protocol.APIPrefix+"/work", 503, 1)
			_, err := c.RequestWork(ctx, protocol.WorkRequest{})
			return err
		}, nil, true},
		{"dropped connection", func() error {
			srv.Fail(http.MethodPost, protocol.APIPrefix+"/work", 0, 1)
			_, err := c.RequestWork(ctx, protocol.WorkRequest{})
			return err
		}, nil, true},
	}
	for _, cs := range cases {
		err := cs.call()
		if err == nil {
			t.Errorf("%s: no error", cs.name)
			continue
		}
		if cs.want != nil && !errors.Is(err, cs.want) {
			t.Errorf("%s: %v, want %v", cs.name, err, cs.want)
		}
		if apiclient.Retryable(err) != cs.retryable {
			t.Errorf("%s: Retryable = %v, want %v (%v)", cs.name, !cs.retryable, cs.retryable, err)
		}
	}
	res, err := c.UploadResult(ctx, 1, withSHA(r))
	if err != nil || res.Outcome != protocol.OutcomeAccepted || res.Round != 2 {
		t.Errorf("upload = %+v %v", res, err)
	}
	if res, err := c.UploadResult(ctx, 1, withSHA(r)); err != nil || !res.Replayed {
		t.Errorf("replayed upload = %+v %v, want the same answer marked replayed", res, err)
	}
}

func withSHA(r apiclient.Result) apiclient.Result {
	r.SHA256 = fakeSHA(r.Delta)
	return r
}

func TestFetchBlobVerifies(t *testing.T) {
	t.Parallel()
	srv, err := fakeserver.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c, _ := apiclient.New(srv.URL(), srv.AddHost(), "test")
	ref := srv.AddBlob([]byte("model weights"))
	dst := filepath.Join(t.TempDir(), "base")
	if err := c.FetchBlob(context.Background(), ref, dst); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(dst); string(b) != "model weights" {
		t.Fatalf("blob %q", b)
	}
	cases := []struct {
		name string
		body []byte
	}{
		{"flipped", []byte("model weighTs")},
		{"short", []byte("model")},
		{"long", []byte("model weights and more")},
	}
	for _, cs := range cases {
		srv.CorruptBlob(ref.SHA256, cs.body)
		d := filepath.Join(t.TempDir(), "b")
		err := c.FetchBlob(context.Background(), ref, d)
		if !errors.Is(err, apiclient.ErrCorrupt) || !apiclient.Retryable(err) {
			t.Errorf("%s: %v, want retryable ErrCorrupt", cs.name, err)
		}
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s: a corrupt blob was left at the destination", cs.name)
		}
	}
}

func TestNewRejectsBadURL(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"", "ftp://x", "localhost:8080", "http://"} {
		if _, err := apiclient.New(u, "", "v"); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
}

// TestStaleIsLate: an asynchronous campaign's stale answer is dropped like a late one
// (both were recorded and credited, neither merged); other conflicts are not late.
func TestStaleIsLate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		code string
		late bool
	}{
		{protocol.CodeLate, true},
		{protocol.CodeStale, true},
		{protocol.CodeWUClosed, false},
		{protocol.CodeConflict, false},
	}
	for _, tc := range cases {
		err := error(&apiclient.APIError{Method: "PUT", Path: "/x", Status: http.StatusConflict, Code: tc.code})
		if got := errors.Is(err, apiclient.ErrLate); got != tc.late {
			t.Errorf("code %s: errors.Is(ErrLate) = %v, want %v", tc.code, got, tc.late)
		}
	}
}
