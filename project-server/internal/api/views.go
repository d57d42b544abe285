package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/texgrid/texgrid/configs"
	"github.com/texgrid/texgrid/project-server/internal/eval"
	"github.com/texgrid/texgrid/project-server/internal/scheduler"
	"github.com/texgrid/texgrid/project-server/internal/store"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/data"
	"github.com/texgrid/texgrid/trainer/onnx"
	"github.com/texgrid/texgrid/trainer/safetensors"
	"github.com/texgrid/texgrid/trainer/spec"
)

// The researcher read routes of protocol version 5 (hosts, work units, models, model
// downloads, classification). The functions that compute their answers are exported:
// the web pages (internal/webui) call the same ones.

func (h *Handler) viewRoutes(api *gin.RouterGroup) {
	r := api.Group("", h.researcherToken)
	r.GET("/hosts", h.listHosts)
	r.GET("/models", h.listModels)
	r.GET("/datasets", h.listDatasets)
	r.GET("/campaigns/:id/rounds/:round/work-units", h.owner, h.workUnits)
	r.GET("/campaigns/:id/model", h.owner, h.modelDownload)
	r.POST("/campaigns/:id/classify", h.owner, h.classify)
}

func bad(format string, args ...any) error {
	return &scheduler.Error{Code: protocol.CodeBadRequest, Message: fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &scheduler.Error{Code: protocol.CodeNotFound, Message: fmt.Sprintf(format, args...)}
}

// Hosts lists every attached host, newest contact first, with the work units each
// holds now.
func Hosts(ctx context.Context, db *store.DB) ([]protocol.HostSummary, error) {
	rows, err := db.R.WithContext(ctx).Raw(`SELECT h.id, h.name, h.os, h.arch, h.cores, h.gflops, h.credit, h.results_valid,
		h.results_invalid, h.last_contact, (SELECT COUNT(*) FROM work_units w WHERE w.host_id = h.id AND w.state = ?)
		FROM hosts h WHERE h.detached = ? ORDER BY h.last_contact DESC, h.id`, store.WUIssued, false).Rows()
	if err != nil {
		return nil, fmt.Errorf("list hosts: %w", err)
	}
	defer rows.Close()
	out := []protocol.HostSummary{}
	for rows.Next() {
		var hs protocol.HostSummary
		if err := rows.Scan(&hs.HostID, &hs.Name, &hs.OS, &hs.Arch, &hs.Cores, &hs.GFLOPS, &hs.Credit, &hs.ResultsValid,
			&hs.ResultsInvalid, &hs.LastContact, &hs.Working); err != nil {
			return nil, fmt.Errorf("list hosts: %w", err)
		}
		out = append(out, hs)
	}
	return out, rows.Err()
}

// WorkUnits lists the work units of one round of a campaign in issue order; round < 0
// lists those of every round.
func WorkUnits(ctx context.Context, db *store.DB, campaign int64, round int) ([]protocol.WorkUnitInfo, error) {
	q := `SELECT w.id, w.round, w.slot, w.attempt, w.host_id, h.name, w.state, w.fragment_count, w.progress,
		w.issued_at, w.deadline, w.finished_at FROM work_units w JOIN hosts h ON h.id = w.host_id WHERE w.campaign_id = ?`
	args := []any{campaign}
	if round >= 0 {
		q += " AND w.round = ?"
		args = append(args, round)
	}
	rows, err := db.R.WithContext(ctx).Raw(q+" ORDER BY w.id", args...).Rows()
	if err != nil {
		return nil, fmt.Errorf("work units of campaign %d: %w", campaign, err)
	}
	defer rows.Close()
	out := []protocol.WorkUnitInfo{}
	for rows.Next() {
		var w protocol.WorkUnitInfo
		if err := rows.Scan(&w.ID, &w.Round, &w.Slot, &w.Attempt, &w.HostID, &w.HostName, &w.State, &w.FragmentCount,
			&w.Progress, &w.IssuedAt, &w.Deadline, &w.FinishedAt); err != nil {
			return nil, fmt.Errorf("work units of campaign %d: %w", campaign, err)
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

// Models lists the model specs shipped in the binary.
func Models() ([]protocol.ModelInfo, error) {
	out := []protocol.ModelInfo{}
	for _, name := range configs.ModelNames() {
		b, err := configs.Model(name)
		if err != nil {
			return nil, err
		}
		sp, err := spec.Parse(b)
		if err != nil {
			return nil, fmt.Errorf("model %s: %w", name, err)
		}
		out = append(out, protocol.ModelInfo{Name: name, Description: sp.Description, Layers: len(sp.Layers)})
	}
	return out, nil
}

// campaignModel is what a download or a classification needs of a campaign.
type campaignModel struct {
	c    *protocol.Campaign
	spec []byte
	sha  string
	path string
}

// roundModel finds the result model of a round (round < 0: the campaign's newest).
func roundModel(ctx context.Context, s *scheduler.Scheduler, id int64, round int) (*campaignModel, error) {
	c, err := s.Campaign(ctx, id)
	if err != nil {
		return nil, err
	}
	m := &campaignModel{c: c, sha: c.ModelSHA256}
	if round >= 0 {
		rs, err := s.Rounds(ctx, id)
		if err != nil {
			return nil, err
		}
		m.sha = ""
		for _, rd := range rs {
			if rd.Round == round {
				m.sha = rd.ResultModel
			}
		}
		if m.sha == "" {
			return nil, notFound("round %d of campaign %d has no result model (yet)", round, id)
		}
	}
	if err := s.DB().R.WithContext(ctx).Raw("SELECT model_spec FROM campaigns WHERE id = ?", id).Row().Scan(&m.spec); err != nil {
		return nil, fmt.Errorf("model spec of campaign %d: %w", id, err)
	}
	if m.path, err = s.Blobs().Path(m.sha); err != nil {
		return nil, fmt.Errorf("campaign %d model %.12s: %w", id, m.sha, err)
	}
	return m, nil
}

// ModelFile is a model ready to send.
type ModelFile struct {
	Name    string // file name to save as
	Body    io.ReadSeeker
	ModTime time.Time
	close   func() error
}

// Close releases the file behind Body.
func (f *ModelFile) Close() error {
	if f.close == nil {
		return nil
	}
	return f.close()
}

// Model returns a round's result model (round < 0: the newest) as safetensors, or
// exported to ONNX with the campaign's class names and fragment size.
func Model(ctx context.Context, s *scheduler.Scheduler, id int64, round int, format string) (*ModelFile, error) {
	if format != protocol.FormatSafetensors && format != protocol.FormatONNX {
		return nil, bad("format %q: use %s or %s", format, protocol.FormatSafetensors, protocol.FormatONNX)
	}
	m, err := roundModel(ctx, s, id, round)
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("campaign-%d-latest", id)
	if round >= 0 {
		name = fmt.Sprintf("campaign-%d-round-%d", id, round)
	}
	if format == protocol.FormatSafetensors {
		f, _, mod, err := s.ModelBlob(ctx, m.sha)
		if err != nil {
			return nil, err
		}
		return &ModelFile{Name: name + ".safetensors", Body: f, ModTime: mod, close: f.Close}, nil
	}
	sp, err := spec.Parse(m.spec)
	if err != nil {
		return nil, fmt.Errorf("campaign %d spec: %w", id, err)
	}
	r, err := sp.Resolve(len(m.c.Classes), m.c.Spec.FragmentSize)
	if err != nil {
		return nil, fmt.Errorf("campaign %d spec: %w", id, err)
	}
	st, err := safetensors.ReadFile(m.path, safetensors.Options{Expect: r.Params, RequireFinite: true})
	if err != nil {
		return nil, fmt.Errorf("campaign %d model %.12s: %w", id, m.sha, err)
	}
	b, err := onnx.Export(r, st.Tensors, m.c.Classes, nil)
	if err != nil {
		return nil, fmt.Errorf("campaign %d: export to ONNX: %w", id, err)
	}
	var mod time.Time
	if fi, err := os.Stat(m.path); err == nil {
		mod = fi.ModTime()
	}
	return &ModelFile{Name: name + ".onnx", Body: bytes.NewReader(b), ModTime: mod}, nil
}

// Classify classifies one image (PNG or JPEG bytes) with the campaign's newest model.
func Classify(ctx context.Context, s *scheduler.Scheduler, id int64, img io.Reader) (*protocol.ClassifyResponse, error) {
	m, err := roundModel(ctx, s, id, -1)
	if err != nil {
		return nil, err
	}
	g, err := data.DecodeGray(io.LimitReader(img, protocol.MaxClassifyBytes))
	if err != nil {
		return nil, bad("the upload is not a PNG or JPEG image this server reads: %v", err)
	}
	c, err := eval.Classify(ctx, eval.Model{Spec: m.spec, Path: m.path, Classes: m.c.Classes, FragmentSize: m.c.Spec.FragmentSize}, g, 1)
	if errors.Is(err, eval.ErrSmallImage) {
		return nil, bad("%v", err)
	}
	if err != nil {
		return nil, fmt.Errorf("classify with campaign %d: %w", id, err)
	}
	return &protocol.ClassifyResponse{ModelSHA256: m.sha, Classes: m.c.Classes, Probabilities: c.Probs, Top: m.c.Classes[c.Top],
		Fragments: c.Fragments, Engine: c.Engine, Millis: float64(c.Elapsed.Microseconds()) / 1000}, nil
}

func (h *Handler) listHosts(c *gin.Context) {
	hs, err := Hosts(c.Request.Context(), h.s.DB())
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, hs)
}

func (h *Handler) listModels(c *gin.Context) {
	ms, err := Models()
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, ms)
}

func (h *Handler) workUnits(c *gin.Context) {
	id, ok := pathID(c, h, "campaign")
	if !ok {
		return
	}
	round, err := strconv.Atoi(c.Param("round"))
	if err != nil || round < 0 {
		h.fail(c, bad("round %q is not a round number (0, 1, ...)", c.Param("round")))
		return
	}
	if _, err := h.s.Campaign(c.Request.Context(), id); err != nil {
		h.fail(c, err)
		return
	}
	ws, err := WorkUnits(c.Request.Context(), h.s.DB(), id, round)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, ws)
}

// queryRound reads the optional ?round= parameter; -1 when absent.
func queryRound(c *gin.Context) (int, error) {
	v := c.Query("round")
	if v == "" {
		return -1, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, bad("round %q is not a round number (0, 1, ...)", v)
	}
	return n, nil
}

func (h *Handler) modelDownload(c *gin.Context) {
	id, ok := pathID(c, h, "campaign")
	if !ok {
		return
	}
	round, err := queryRound(c)
	if err != nil {
		h.fail(c, err)
		return
	}
	f, err := Model(c.Request.Context(), h.s, id, round, c.Query("format"))
	if err != nil {
		h.fail(c, err)
		return
	}
	defer f.Close()
	c.Header("Content-Type", "application/octet-stream")
	c.Header("Content-Disposition", `attachment; filename="`+f.Name+`"`)
	http.ServeContent(c.Writer, c.Request, "", f.ModTime, f.Body)
}

func (h *Handler) classify(c *gin.Context) {
	id, ok := pathID(c, h, "campaign")
	if !ok {
		return
	}
	c.Request.Body = http.MaxBytesReader(c.Writer, c.Request.Body, protocol.MaxClassifyBytes+1<<20)
	fh, err := c.FormFile("image")
	if err != nil {
		h.fail(c, bad("send the image as the multipart form field \"image\": %v", err))
		return
	}
	f, err := fh.Open()
	if err != nil {
		h.fail(c, bad("reading the uploaded image: %v", err))
		return
	}
	defer f.Close()
	res, err := Classify(c.Request.Context(), h.s, id, f)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, res)
}
