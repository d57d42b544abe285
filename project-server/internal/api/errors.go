package api

import (
	"net/http"

	"github.com/texgrid/texgrid/project-server/protocol"
)

// statusOf pairs every protocol error code with its HTTP status, as the protocol
// documents each code; an unknown code is an internal error.
var statusOf = map[string]int{
	protocol.CodeBadRequest:       http.StatusBadRequest,
	protocol.CodeProtocolTooNew:   http.StatusBadRequest,
	protocol.CodeUnauthorized:     http.StatusUnauthorized,
	protocol.CodeForbidden:        http.StatusForbidden,
	protocol.CodeNotFound:         http.StatusNotFound,
	protocol.CodeMethodNotAllowed: http.StatusMethodNotAllowed,
	protocol.CodeLate:             http.StatusConflict,
	protocol.CodeStale:            http.StatusConflict,
	protocol.CodeWUClosed:         http.StatusConflict,
	protocol.CodeConflict:         http.StatusConflict,
	protocol.CodeDuplicate:        http.StatusConflict,
	protocol.CodeAccountLimit:     http.StatusConflict,
	protocol.CodeTooLarge:         http.StatusRequestEntityTooLarge,
	protocol.CodeInvalidDelta:     http.StatusUnprocessableEntity,
	protocol.CodeUpgradeRequired:  http.StatusUpgradeRequired,
	protocol.CodeRateLimited:      http.StatusTooManyRequests,
	protocol.CodeInternal:         http.StatusInternalServerError,
}

// Status returns the HTTP status the protocol pairs with an error code.
func Status(code string) int {
	if st, ok := statusOf[code]; ok {
		return st
	}
	return http.StatusInternalServerError
}
