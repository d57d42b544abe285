package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"regexp"
	"time"

	"github.com/gin-gonic/gin"
)

// HeaderRequestID carries a request's id: taken from the request when it is well formed
// (so a load balancer's id follows the request through), made up otherwise, and always
// answered back.
const HeaderRequestID = "X-Request-Id"

// validRequestID bounds what an incoming id may be, so a client cannot write arbitrary
// text into the logs.
var validRequestID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

type loggerKey struct{}

// WithLogger returns ctx carrying log, for Logger to find.
func WithLogger(ctx context.Context, log *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, log)
}

// Logger returns the logger ctx carries (with the request id of its request), or
// fallback when it carries none.
func Logger(ctx context.Context, fallback *slog.Logger) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return fallback
}

// requestID gives every request an id and a logger that writes it on each line, and
// logs the request and its response at debug level (a 5xx response at warn).
func (h *Handler) requestID(c *gin.Context) {
	id := c.GetHeader(HeaderRequestID)
	if !validRequestID.MatchString(id) {
		id = newRequestID()
	}
	c.Header(HeaderRequestID, id)
	log := h.log.With("request_id", id)
	c.Request = c.Request.WithContext(WithLogger(c.Request.Context(), log))
	start := time.Now()
	log.Debug("request", "method", c.Request.Method, "path", c.Request.URL.Path, "remote", c.ClientIP())
	c.Next()
	level := slog.LevelDebug
	if c.Writer.Status() >= 500 {
		level = slog.LevelWarn
	}
	log.Log(c.Request.Context(), level, "response", "status", c.Writer.Status(),
		"bytes", c.Writer.Size(), "duration", time.Since(start))
}

// logger is the request's logger.
func (h *Handler) logger(c *gin.Context) *slog.Logger { return Logger(c.Request.Context(), h.log) }

func newRequestID() string {
	var b [12]byte
	rand.Read(b[:]) // never fails (crypto/rand documents it)
	return hex.EncodeToString(b[:])
}
