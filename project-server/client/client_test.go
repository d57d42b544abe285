package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/project-server/protocol"
)

// TestErrors: the client sends the protocol header and token, and turns each kind of
// refusal into an *Error carrying the status and, when the body has one, the code.
// (The real server is exercised through this client in internal/server's tests.)
func TestErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		status   int
		body     string
		wantCode string
		wantMsg  string
	}{
		{"protocol error", 403, `{"error":{"code":"forbidden","message":"campaign 1 belongs to another researcher"}}`, protocol.CodeForbidden, "another researcher"},
		{"plain text", 502, "bad gateway", "", "bad gateway"},
		{"empty body", 500, "", "", "HTTP 500"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get(protocol.HeaderVersion) == "" || r.Header.Get("Authorization") != "Bearer tgr_x" {
					http.Error(w, "missing headers", http.StatusTeapot)
					return
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer ts.Close()
			_, err := New(ts.URL+"/", "tgr_x", nil).Campaign(context.Background(), 1)
			var e *Error
			if !errors.As(err, &e) || e.Status != tc.status || e.Code != tc.wantCode || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("err %v (%#v), want status %d code %q saying %q", err, e, tc.status, tc.wantCode, tc.wantMsg)
			}
			if StatusOf(err) != tc.status {
				t.Fatalf("StatusOf = %d", StatusOf(err))
			}
		})
	}
}
