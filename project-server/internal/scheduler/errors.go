package scheduler

import (
	"errors"
	"fmt"

	"github.com/texgrid/texgrid/project-server/protocol"
)

// Error is a domain refusal: a code from the protocol and a message naming what was
// wrong. The API maps the code to its HTTP status. Nothing was changed unless the code
// is invalid_delta, late, stale, duplicate or account_limit, which are recorded.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Is matches errors with the same code, so errors.Is(err, ErrLate) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && t.Message == ""
}

// Sentinels for errors.Is; real errors carry a message.
var (
	ErrBadRequest   = &Error{Code: protocol.CodeBadRequest}
	ErrUnauthorized = &Error{Code: protocol.CodeUnauthorized}
	ErrForbidden    = &Error{Code: protocol.CodeForbidden}
	ErrNotFound     = &Error{Code: protocol.CodeNotFound}
	ErrLate         = &Error{Code: protocol.CodeLate}
	ErrStale        = &Error{Code: protocol.CodeStale}
	ErrWUClosed     = &Error{Code: protocol.CodeWUClosed}
	ErrConflict     = &Error{Code: protocol.CodeConflict}
	ErrInvalidDelta = &Error{Code: protocol.CodeInvalidDelta}
	ErrTooLarge     = &Error{Code: protocol.CodeTooLarge}
)

func fail(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// AsError returns err as a protocol refusal, or an internal error that hides details.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: protocol.CodeInternal, Message: "the server failed; retry later"}
}
