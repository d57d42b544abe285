package api

import (
	"net/http"
	"testing"

	"github.com/texgrid/texgrid/project-server/protocol"
)

// TestStatus: every protocol error code answers with the status the protocol pairs it
// with, and an unknown code is an internal error, never a 2xx.
func TestStatus(t *testing.T) {
	t.Parallel()
	cases := []struct {
		code string
		want int
	}{
		{protocol.CodeBadRequest, http.StatusBadRequest},
		{protocol.CodeProtocolTooNew, http.StatusBadRequest},
		{protocol.CodeUnauthorized, http.StatusUnauthorized},
		{protocol.CodeForbidden, http.StatusForbidden},
		{protocol.CodeNotFound, http.StatusNotFound},
		{protocol.CodeMethodNotAllowed, http.StatusMethodNotAllowed},
		{protocol.CodeLate, http.StatusConflict},
		{protocol.CodeStale, http.StatusConflict},
		{protocol.CodeWUClosed, http.StatusConflict},
		{protocol.CodeConflict, http.StatusConflict},
		{protocol.CodeDuplicate, http.StatusConflict},
		{protocol.CodeAccountLimit, http.StatusConflict},
		{protocol.CodeTooLarge, http.StatusRequestEntityTooLarge},
		{protocol.CodeInvalidDelta, http.StatusUnprocessableEntity},
		{protocol.CodeUpgradeRequired, http.StatusUpgradeRequired},
		{protocol.CodeRateLimited, http.StatusTooManyRequests},
		{protocol.CodeInternal, http.StatusInternalServerError},
		{"no_such_code", http.StatusInternalServerError},
	}
	for _, tc := range cases {
		if got := Status(tc.code); got != tc.want {
			t.Errorf("Status(%q) = %d, want %d", tc.code, got, tc.want)
		}
	}
	if len(statusOf) != len(cases)-1 {
		t.Errorf("statusOf pairs %d codes; this test lists %d: add the new code here", len(statusOf), len(cases)-1)
	}
}
