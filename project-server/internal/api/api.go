// Package api is the project server's HTTP interface: the gin routes of the wire
// protocol (project-server/protocol), their authentication, size limits and protocol
// version check, and the Prometheus endpoint. Handlers decode and check input, call the
// scheduler, and write protocol types; they hold no state of their own.
package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/texgrid/texgrid/project-server/internal/auth"
	"github.com/texgrid/texgrid/project-server/internal/datasets"
	"github.com/texgrid/texgrid/project-server/internal/scheduler"
	"github.com/texgrid/texgrid/project-server/internal/store"
	"github.com/texgrid/texgrid/project-server/protocol"
)

// MaxJSONBytes bounds every JSON request body.
const MaxJSONBytes = 1 << 20

// ServerVersion is reported by GET /api/v1/status.
var ServerVersion = "dev"

// Handler serves the API over a scheduler.
type Handler struct {
	s        *scheduler.Scheduler
	metrics  *Metrics
	log      *slog.Logger
	people   *auth.People
	datasets datasets.Source
}

// New builds the gin engine with every route.
func New(s *scheduler.Scheduler, m *Metrics, log *slog.Logger, opts ...Option) http.Handler {
	gin.SetMode(gin.ReleaseMode)
	h := &Handler{s: s, metrics: m, log: log, people: &auth.People{DB: s.DB()}}
	for _, o := range opts {
		o(h)
	}
	r := gin.New()
	r.Use(h.requestID, h.recover, h.observe)
	r.NoRoute(func(c *gin.Context) {
		h.fail(c, &scheduler.Error{Code: protocol.CodeNotFound, Message: fmt.Sprintf("no endpoint %s %s", c.Request.Method, c.Request.URL.Path)})
	})
	r.HandleMethodNotAllowed = true
	r.NoMethod(func(c *gin.Context) {
		h.fail(c, &scheduler.Error{Code: protocol.CodeMethodNotAllowed,
			Message: fmt.Sprintf("method %s is not allowed on %s", c.Request.Method, c.Request.URL.Path)})
	})
	if m != nil {
		r.GET("/metrics", gin.WrapH(m.Handler()))
	}
	v1 := r.Group(protocol.APIPrefix)
	v1.GET("/status", h.status)
	v1.GET("/blobs/:sha", h.anyToken, h.blob)
	v1.HEAD("/blobs/:sha", h.anyToken, h.blob)

	api := v1.Group("", h.version)
	api.POST("/hosts", h.registerHost)
	host := api.Group("", h.hostToken)
	host.GET("/hosts/self", h.hostSelf)
	host.DELETE("/hosts/self", h.detach)
	host.PATCH("/hosts/self", h.updateHost)
	host.POST("/work", h.work)
	host.POST("/work/:id/heartbeat", h.heartbeat)
	host.PUT("/work/:id/result", h.result)
	host.POST("/work/:id/failure", h.failure)

	res := api.Group("/campaigns", h.researcherToken)
	res.POST("", h.createCampaign)
	res.GET("", h.listCampaigns)
	res.GET("/:id", h.owner, h.getCampaign)
	res.GET("/:id/rounds", h.owner, h.rounds)
	res.GET("/:id/rounds/:round/results", h.owner, h.roundResults)
	res.POST("/:id/:action", h.owner, h.act)
	h.viewRoutes(api)
	return r
}

func (h *Handler) fail(c *gin.Context, err error) {
	e := scheduler.AsError(err)
	if e.Code == protocol.CodeInternal {
		h.logger(c).Error("request failed", "method", c.Request.Method, "path", c.Request.URL.Path, "err", err)
	}
	c.AbortWithStatusJSON(Status(e.Code), protocol.ErrorBody{Error: &protocol.Error{Code: e.Code, Message: e.Message}})
}

func (h *Handler) recover(c *gin.Context) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			h.logger(c).Error("handler panic", "path", c.Request.URL.Path, "panic", v)
			h.fail(c, fmt.Errorf("panic: %v", v))
		}
	}()
	c.Next()
}

func (h *Handler) observe(c *gin.Context) {
	if h.metrics == nil {
		c.Next()
		return
	}
	start := time.Now()
	c.Next()
	route := c.FullPath()
	if route == "" {
		route = "unmatched"
	}
	h.metrics.observe(c.Request.Method, route, c.Writer.Status(), time.Since(start))
}

// version enforces the Texgrid-Protocol header: missing or malformed is 400, older than
// protocol.MinVersion is 426 naming the version to install, newer than protocol.Version
// is 400 protocol_too_new naming the version this server speaks. The version is kept
// on the request for the handlers (see clientVersion).
func (h *Handler) version(c *gin.Context) {
	v := c.GetHeader(protocol.HeaderVersion)
	if v == "" {
		h.fail(c, &scheduler.Error{Code: protocol.CodeBadRequest,
			Message: fmt.Sprintf("missing header %s: send %s: %d", protocol.HeaderVersion, protocol.HeaderVersion, protocol.Version)})
		return
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		h.fail(c, &scheduler.Error{Code: protocol.CodeBadRequest, Message: fmt.Sprintf("header %s %q is not an integer", protocol.HeaderVersion, v)})
		return
	}
	if n < protocol.MinVersion {
		h.fail(c, &scheduler.Error{Code: protocol.CodeUpgradeRequired, Message: fmt.Sprintf(
			"protocol version %d is no longer supported; this server accepts %d..%d: install a client that speaks protocol %d",
			n, protocol.MinVersion, protocol.Version, protocol.Version)})
		return
	}
	if n > protocol.Version {
		h.fail(c, &scheduler.Error{Code: protocol.CodeProtocolTooNew, Message: fmt.Sprintf(
			"protocol version %d is newer than this server's %d (it accepts %d..%d): send %s: %d or update the server",
			n, protocol.Version, protocol.MinVersion, protocol.Version, protocol.HeaderVersion, protocol.Version)})
		return
	}
	c.Set(clientVersionKey, n)
	c.Next()
}

// clientVersionKey holds the caller's protocol version in the gin context.
const clientVersionKey = "protocol"

func (h *Handler) hostToken(c *gin.Context) {
	tok, err := auth.Bearer(c.Request)
	if err != nil {
		h.fail(c, &scheduler.Error{Code: protocol.CodeUnauthorized, Message: err.Error()})
		return
	}
	if strings.HasPrefix(tok, auth.ResearcherTokenPrefix) {
		h.fail(c, &scheduler.Error{Code: protocol.CodeForbidden, Message: "a researcher token cannot act as a host"})
		return
	}
	id, err := h.s.Host(c.Request.Context(), tok)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.Set("host", id)
	c.Next()
}

func (h *Handler) researcherToken(c *gin.Context) {
	tok, err := auth.Bearer(c.Request)
	if err != nil {
		h.fail(c, &scheduler.Error{Code: protocol.CodeUnauthorized, Message: err.Error()})
		return
	}
	if strings.HasPrefix(tok, auth.HostTokenPrefix) {
		h.fail(c, &scheduler.Error{Code: protocol.CodeForbidden, Message: "a host token cannot use researcher routes"})
		return
	}
	id, err := h.s.Researcher(c.Request.Context(), tok)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.Set("researcher", id)
	c.Next()
}

func (h *Handler) anyToken(c *gin.Context) {
	tok, err := auth.Bearer(c.Request)
	if err != nil {
		h.fail(c, &scheduler.Error{Code: protocol.CodeUnauthorized, Message: err.Error()})
		return
	}
	if strings.HasPrefix(tok, auth.ResearcherTokenPrefix) {
		if _, err := h.s.Researcher(c.Request.Context(), tok); err != nil {
			h.fail(c, err)
			return
		}
	} else if _, err := h.s.Host(c.Request.Context(), tok); err != nil {
		h.fail(c, err)
		return
	}
	c.Next()
}

// bind decodes a JSON body of at most MaxJSONBytes into v. Strict bodies refuse unknown
// fields (researcher input, where a typo must not fall back to a default).
func (h *Handler) bind(c *gin.Context, v any, strict bool) bool {
	b, err := io.ReadAll(http.MaxBytesReader(c.Writer, c.Request.Body, MaxJSONBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			h.fail(c, &scheduler.Error{Code: protocol.CodeTooLarge, Message: fmt.Sprintf("the JSON body is over %d bytes", MaxJSONBytes)})
		} else {
			h.fail(c, &scheduler.Error{Code: protocol.CodeBadRequest, Message: "reading the body failed: " + err.Error()})
		}
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		h.fail(c, &scheduler.Error{Code: protocol.CodeBadRequest, Message: "malformed JSON body: " + err.Error()})
		return false
	}
	if dec.More() {
		h.fail(c, &scheduler.Error{Code: protocol.CodeBadRequest, Message: "malformed JSON body: data after the object"})
		return false
	}
	return true
}

func pathID(c *gin.Context, h *Handler, what string) (int64, bool) {
	id, err := strconv.ParseInt(c.Param("id"), 10, 64)
	if err != nil || id <= 0 {
		h.fail(c, &scheduler.Error{Code: protocol.CodeBadRequest, Message: fmt.Sprintf("%s id %q is not a positive integer", what, c.Param("id"))})
		return 0, false
	}
	return id, true
}

func (h *Handler) status(c *gin.Context) {
	st := protocol.Status{ServerVersion: ServerVersion, ProtocolVersion: protocol.Version, MinProtocol: protocol.MinVersion}
	var n int64
	db := h.s.DB().WithContext(c.Request.Context())
	if err := db.Model(&store.Campaign{}).Count(&n).Error; err != nil {
		h.fail(c, err)
		return
	}
	st.Campaigns = int(n)
	if err := db.Model(&store.Host{}).Where("detached = ?", false).Count(&n).Error; err != nil {
		h.fail(c, err)
		return
	}
	st.Hosts = int(n)
	c.JSON(http.StatusOK, st)
}

func (h *Handler) registerHost(c *gin.Context) {
	var req protocol.RegisterHostRequest
	if !h.bind(c, &req, false) {
		return
	}
	resp, err := h.s.RegisterHost(c.Request.Context(), &req)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, resp)
}

func (h *Handler) hostSelf(c *gin.Context) {
	host, err := h.s.HostInfo(c.Request.Context(), c.GetInt64("host"))
	if err != nil {
		h.fail(c, err)
		return
	}
	info := protocol.HostInfo{HostID: host.ID, Name: host.Name, Cores: host.Cores, GFLOPS: host.GFLOPS, Credit: host.Credit,
		ResultsValid: host.ResultsValid, ResultsInvalid: host.ResultsInvalid, ResultsFailed: host.ResultsFailed, ResultsFlagged: host.ResultsFlagged, LastContact: host.LastContact}
	if n := host.ResultsValid + host.ResultsInvalid; n > 0 {
		info.ErrorRate = float64(host.ResultsInvalid) / float64(n)
	}
	c.JSON(http.StatusOK, info)
}

func (h *Handler) detach(c *gin.Context) {
	if err := h.s.DetachHost(c.Request.Context(), c.GetInt64("host")); err != nil {
		h.fail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

func (h *Handler) updateHost(c *gin.Context) {
	var req protocol.HostUpdateRequest
	if !h.bind(c, &req, false) {
		return
	}
	if err := h.s.UpdateHost(c.Request.Context(), c.GetInt64("host"), &req); err != nil {
		h.fail(c, err)
		return
	}
	c.Status(http.StatusNoContent)
}

func (h *Handler) work(c *gin.Context) {
	var req protocol.WorkRequest
	if !h.bind(c, &req, false) {
		return
	}
	resp, err := h.s.RequestWork(c.Request.Context(), c.GetInt64("host"), c.GetInt(clientVersionKey), &req)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, resp)
}

func (h *Handler) heartbeat(c *gin.Context) {
	id, ok := pathID(c, h, "work unit")
	if !ok {
		return
	}
	var req protocol.HeartbeatRequest
	if !h.bind(c, &req, false) {
		return
	}
	resp, err := h.s.Heartbeat(c.Request.Context(), c.GetInt64("host"), id, &req)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, resp)
}

func (h *Handler) result(c *gin.Context) {
	id, ok := pathID(c, h, "work unit")
	if !ok {
		return
	}
	meta := scheduler.ResultMeta{SHA256: strings.ToLower(strings.TrimSpace(c.GetHeader(protocol.HeaderSHA256)))}
	if v := c.GetHeader(protocol.HeaderSamples); v != "" {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			h.fail(c, &scheduler.Error{Code: protocol.CodeBadRequest, Message: fmt.Sprintf("header %s %q is not an integer", protocol.HeaderSamples, v)})
			return
		}
		meta.Samples = n
	} else {
		h.fail(c, &scheduler.Error{Code: protocol.CodeBadRequest, Message: "missing header " + protocol.HeaderSamples})
		return
	}
	if v := c.GetHeader(protocol.HeaderLoss); v != "" {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			h.fail(c, &scheduler.Error{Code: protocol.CodeBadRequest, Message: fmt.Sprintf("header %s %q is not a number", protocol.HeaderLoss, v)})
			return
		}
		meta.Loss = f
	}
	resp, err := h.s.SubmitResult(c.Request.Context(), c.GetInt64("host"), id, meta, c.Request.ContentLength, c.Request.Body)
	if err != nil {
		if errors.Is(err, scheduler.ErrTooLarge) {
			c.Header("Connection", "close")
		}
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, resp)
}

func (h *Handler) blob(c *gin.Context) {
	sha := c.Param("sha")
	f, size, modTime, err := h.s.ModelBlob(c.Request.Context(), sha)
	if err != nil {
		h.fail(c, err)
		return
	}
	defer f.Close()
	c.Header(protocol.HeaderSHA256, sha)
	c.Header("ETag", `"`+sha+`"`)
	c.Header("Content-Type", "application/octet-stream")
	c.Header("Cache-Control", "public, max-age=31536000, immutable")
	_ = size
	http.ServeContent(c.Writer, c.Request, "", modTime, f)
}

func (h *Handler) createCampaign(c *gin.Context) {
	var cs protocol.CampaignSpec
	if !h.bind(c, &cs, true) {
		return
	}
	camp, err := h.s.CreateCampaign(c.Request.Context(), c.GetInt64("researcher"), cs)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusCreated, camp)
}

func (h *Handler) listCampaigns(c *gin.Context) {
	cs, err := h.s.Campaigns(c.Request.Context())
	if err == nil {
		cs, err = h.visible(c, cs)
	}
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, cs)
}

func (h *Handler) getCampaign(c *gin.Context) {
	id, ok := pathID(c, h, "campaign")
	if !ok {
		return
	}
	camp, err := h.s.Campaign(c.Request.Context(), id)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, camp)
}

func (h *Handler) rounds(c *gin.Context) {
	id, ok := pathID(c, h, "campaign")
	if !ok {
		return
	}
	rs, err := h.s.Rounds(c.Request.Context(), id)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, rs)
}

func (h *Handler) act(c *gin.Context) {
	id, ok := pathID(c, h, "campaign")
	if !ok {
		return
	}
	camp, err := h.s.Act(c.Request.Context(), id, c.Param("action"))
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, camp)
}
