package webui

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/texgrid/texgrid/project-server/internal/api"
	"github.com/texgrid/texgrid/project-server/internal/auth"
	"github.com/texgrid/texgrid/project-server/internal/scheduler"
	"github.com/texgrid/texgrid/project-server/internal/store"
	"github.com/texgrid/texgrid/project-server/protocol"
)

type campaignHandler func(w http.ResponseWriter, r *http.Request, me *auth.Researcher, id int64)

// owned passes only the campaign's owner or an admin; others get a 403 page, and an
// unknown campaign a 404 page.
func (h *Handler) owned(next campaignHandler) researcherHandler {
	return func(w http.ResponseWriter, r *http.Request, me *auth.Researcher) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil || id <= 0 {
			h.fail(w, r, http.StatusNotFound, "No such campaign", fmt.Sprintf("Campaign %q is not a campaign number.", r.PathValue("id")))
			return
		}
		owner, found, err := h.people.CampaignOwner(r.Context(), id)
		switch {
		case err != nil:
			h.internal(w, r, err)
		case !found:
			h.fail(w, r, http.StatusNotFound, "No such campaign", fmt.Sprintf("There is no campaign %d.", id))
		case !me.MayAct(owner):
			h.fail(w, r, http.StatusForbidden, "Not your campaign", fmt.Sprintf("Campaign %d belongs to another researcher; only its owner or an admin may see or change it.", id))
		default:
			next(w, r, me, id)
		}
	}
}

func (h *Handler) internal(w http.ResponseWriter, r *http.Request, err error) {
	h.cfg.Log.Error("page failed", "path", r.URL.Path, "err", err)
	h.fail(w, r, http.StatusInternalServerError, "Server error", "The server failed to answer this page; try again in a moment.")
}

// schedFail shows a scheduler error with its HTTP status.
func (h *Handler) schedFail(w http.ResponseWriter, r *http.Request, err error) {
	e := scheduler.AsError(err)
	if e.Code == protocol.CodeInternal {
		h.internal(w, r, err)
		return
	}
	h.fail(w, r, api.Status(e.Code), "Refused", e.Message)
}

// listRow is one line of the campaigns list.
type listRow struct {
	C      protocol.Campaign
	Acc    float64
	HasAcc bool
	Trend  string // SVG polyline points of image accuracy per round
	Hosts  int64
}

func (h *Handler) campaigns(w http.ResponseWriter, r *http.Request, me *auth.Researcher) {
	ctx := r.Context()
	cs, err := h.cfg.Sched.Campaigns(ctx)
	if err != nil {
		h.internal(w, r, err)
		return
	}
	owners, err := h.people.CampaignOwners(ctx)
	if err != nil {
		h.internal(w, r, err)
		return
	}
	working, err := h.workingHosts(ctx)
	if err != nil {
		h.internal(w, r, err)
		return
	}
	var rows []listRow
	for _, c := range cs {
		if !me.MayAct(owners[c.ID]) {
			continue
		}
		rs, err := h.cfg.Sched.Rounds(ctx, c.ID)
		if err != nil {
			h.internal(w, r, err)
			return
		}
		row := listRow{C: c, Hosts: working[c.ID]}
		var accs []float64
		for _, rd := range rs {
			if rd.Metrics != nil {
				accs = append(accs, rd.Metrics.ImageAccuracy)
			}
		}
		if len(accs) > 0 {
			row.Acc, row.HasAcc = accs[len(accs)-1], true
			row.Trend = trend(accs, 90, 24)
		}
		rows = append(rows, row)
	}
	h.render(w, r, http.StatusOK, "campaigns", "Campaigns", me, rows)
}

// trend returns SVG polyline points for values in [0, 1] across a w x h box.
func trend(vs []float64, w, h float64) string {
	var b strings.Builder
	for i, v := range vs {
		x := w / 2
		if len(vs) > 1 {
			x = 2 + (w-4)*float64(i)/float64(len(vs)-1)
		}
		fmt.Fprintf(&b, "%.1f,%.1f ", x, 2+(h-4)*(1-v))
	}
	return strings.TrimSpace(b.String())
}

// workingHosts counts, per campaign, the hosts holding an issued work unit now.
func (h *Handler) workingHosts(ctx context.Context) (map[int64]int64, error) {
	rows, err := h.cfg.Sched.DB().R.WithContext(ctx).Raw(
		"SELECT campaign_id, COUNT(DISTINCT host_id) FROM work_units WHERE state = ? GROUP BY campaign_id", store.WUIssued).Rows()
	if err != nil {
		return nil, fmt.Errorf("working hosts: %w", err)
	}
	defer rows.Close()
	m := map[int64]int64{}
	for rows.Next() {
		var id, n int64
		if err := rows.Scan(&id, &n); err != nil {
			return nil, fmt.Errorf("working hosts: %w", err)
		}
		m[id] = n
	}
	return m, rows.Err()
}

// point is one evaluated round on the chart.
type point struct {
	Round int     `json:"round"`
	Img   float64 `json:"img"`
	Frag  float64 `json:"frag"`
	Loss  float64 `json:"loss"`
}

func points(rs []protocol.RoundInfo) []point {
	ps := []point{}
	for _, rd := range rs {
		if m := rd.Metrics; m != nil {
			ps = append(ps, point{Round: rd.Round, Img: m.ImageAccuracy, Frag: m.FragmentAccuracy, Loss: m.Loss})
		}
	}
	return ps
}

type roundRow struct {
	R        protocol.RoundInfo
	Duration string
}

type heatCell struct {
	N     int
	Alpha float64
}

type heatRow struct {
	Class string
	Cells []heatCell
}

type hostRow struct {
	ID                      int64
	Name                    string
	Accepted, Late, Invalid int
	Credit                  float64
}

type campaignData struct {
	C        protocol.Campaign
	Actions  []string
	Points   []point
	Rounds   []roundRow
	M        *protocol.Metrics
	MRound   int
	Heat     []heatRow
	Hosts    []hostRow
	InFlight []protocol.WorkUnitInfo
	// Classified is the answer of "try the model", when the page shows one.
	Classified *classified
}

// actions lists the buttons that fit a campaign's state.
func actions(state string) []string {
	switch state {
	case protocol.StateDraft:
		return []string{protocol.ActionStart, protocol.ActionStop}
	case protocol.StateRunning:
		return []string{protocol.ActionPause, protocol.ActionStop}
	case protocol.StatePaused:
		return []string{protocol.ActionResume, protocol.ActionStop}
	}
	return nil
}

func (h *Handler) campaign(w http.ResponseWriter, r *http.Request, me *auth.Researcher, id int64) {
	h.campaignPage(w, r, me, id, nil)
}

func (h *Handler) campaignPage(w http.ResponseWriter, r *http.Request, me *auth.Researcher, id int64, cl *classified) {
	ctx := r.Context()
	c, err := h.cfg.Sched.Campaign(ctx, id)
	if err != nil {
		h.schedFail(w, r, err)
		return
	}
	rs, err := h.cfg.Sched.Rounds(ctx, id)
	if err != nil {
		h.schedFail(w, r, err)
		return
	}
	d := campaignData{C: *c, Actions: actions(c.State), Points: points(rs), MRound: -1, Classified: cl}
	want := -1
	if v := r.URL.Query().Get("round"); v != "" {
		if want, err = strconv.Atoi(v); err != nil {
			h.fail(w, r, http.StatusBadRequest, "Bad round", fmt.Sprintf("round %q is not a number.", v))
			return
		}
	}
	for _, rd := range rs {
		row := roundRow{R: rd, Duration: "–"}
		if rd.ClosedAt != nil {
			row.Duration = rd.ClosedAt.Sub(rd.OpenedAt).Round(100 * time.Millisecond).String()
		}
		d.Rounds = append(d.Rounds, row)
		if rd.Metrics != nil && (want < 0 || rd.Round == want) {
			d.M, d.MRound = rd.Metrics, rd.Round
		}
	}
	if d.M != nil {
		d.Heat = heat(d.M)
	}
	if d.Hosts, err = h.contributors(ctx, id); err != nil {
		h.internal(w, r, err)
		return
	}
	if d.InFlight, err = h.inFlight(ctx, id); err != nil {
		h.internal(w, r, err)
		return
	}
	h.render(w, r, http.StatusOK, "campaign", c.Spec.Name, me, d)
}

// heat shades each confusion cell by its share of the true class's row.
func heat(m *protocol.Metrics) []heatRow {
	out := make([]heatRow, 0, len(m.Confusion))
	for i, row := range m.Confusion {
		total := 0
		for _, n := range row {
			total += n
		}
		hr := heatRow{Class: fmt.Sprint(i)}
		if i < len(m.Classes) {
			hr.Class = m.Classes[i]
		}
		for _, n := range row {
			a := 0.0
			if total > 0 {
				a = math.Round(100*float64(n)/float64(total)) / 100
			}
			hr.Cells = append(hr.Cells, heatCell{N: n, Alpha: a})
		}
		out = append(out, hr)
	}
	return out
}

func (h *Handler) contributors(ctx context.Context, id int64) ([]hostRow, error) {
	rows, err := h.cfg.Sched.DB().R.WithContext(ctx).Raw(`SELECT h.id, h.name,
		SUM(CASE WHEN r.outcome = ? THEN 1 ELSE 0 END), SUM(CASE WHEN r.outcome = ? THEN 1 ELSE 0 END),
		SUM(CASE WHEN r.outcome = ? THEN 1 ELSE 0 END), COALESCE(SUM(r.credit), 0)
		FROM results r JOIN hosts h ON h.id = r.host_id WHERE r.campaign_id = ? GROUP BY h.id, h.name ORDER BY h.id`,
		protocol.OutcomeAccepted, protocol.OutcomeLate, store.OutcomeInvalid, id).Rows()
	if err != nil {
		return nil, fmt.Errorf("contributing hosts of campaign %d: %w", id, err)
	}
	defer rows.Close()
	var out []hostRow
	for rows.Next() {
		var hr hostRow
		if err := rows.Scan(&hr.ID, &hr.Name, &hr.Accepted, &hr.Late, &hr.Invalid, &hr.Credit); err != nil {
			return nil, fmt.Errorf("contributing hosts of campaign %d: %w", id, err)
		}
		out = append(out, hr)
	}
	return out, rows.Err()
}

// inFlight lists the campaign's work units that hosts hold now.
func (h *Handler) inFlight(ctx context.Context, id int64) ([]protocol.WorkUnitInfo, error) {
	all, err := api.WorkUnits(ctx, h.cfg.Sched.DB(), id, -1)
	if err != nil {
		return nil, err
	}
	var out []protocol.WorkUnitInfo
	for _, w := range all {
		if w.State == store.WUIssued {
			out = append(out, w)
		}
	}
	return out, nil
}

func (h *Handler) act(w http.ResponseWriter, r *http.Request, me *auth.Researcher, id int64) {
	action := r.PathValue("action")
	switch action {
	case protocol.ActionStart, protocol.ActionPause, protocol.ActionResume, protocol.ActionStop:
	default:
		h.fail(w, r, http.StatusNotFound, "No such action", fmt.Sprintf("%q is not an action; use start, pause, resume or stop.", action))
		return
	}
	if _, err := h.cfg.Sched.Act(r.Context(), id, action); err != nil {
		h.schedFail(w, r, err)
		return
	}
	http.Redirect(w, r, fmt.Sprintf("/campaigns/%d", id), http.StatusSeeOther)
}

// events streams the chart's points as server-sent events: one "rounds" event at
// once, then one whenever a round closes, is evaluated, or the state changes. The
// request's goroutine owns the loop; it ends when the browser goes away or the
// server shuts down (Shutdown).
func (h *Handler) events(w http.ResponseWriter, r *http.Request, me *auth.Researcher, id int64) {
	fl, ok := w.(http.Flusher)
	if !ok {
		h.fail(w, r, http.StatusInternalServerError, "No streaming", "This server cannot stream events.")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	fl.Flush()
	ctx := r.Context()
	tick := time.NewTicker(h.cfg.Poll)
	defer tick.Stop()
	last := ""
	for {
		c, err := h.cfg.Sched.Campaign(ctx, id)
		var rs []protocol.RoundInfo
		if err == nil {
			rs, err = h.cfg.Sched.Rounds(ctx, id)
		}
		if err != nil {
			if ctx.Err() == nil {
				h.cfg.Log.Warn("campaign events", "campaign", id, "err", err)
			}
			return
		}
		msg, err := json.Marshal(struct {
			State  string  `json:"state"`
			Round  string  `json:"round"`
			Points []point `json:"points"`
		}{c.State, fmt.Sprintf("%d/%d", c.Round, c.Spec.Rounds), points(rs)})
		if err != nil {
			return
		}
		if string(msg) != last {
			last = string(msg)
			if _, err := fmt.Fprintf(w, "event: rounds\ndata: %s\n\n", msg); err != nil {
				return
			}
			fl.Flush()
		}
		select {
		case <-ctx.Done():
			return
		case <-h.done:
			return
		case <-tick.C:
		}
	}
}

// model sends one round's result model as safetensors, or exported to ONNX with the
// campaign's class names (the same answer as the JSON API's model route).
func (h *Handler) model(w http.ResponseWriter, r *http.Request, me *auth.Researcher, id int64) {
	round := -1
	if v := r.URL.Query().Get("round"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			h.fail(w, r, http.StatusBadRequest, "Bad round", fmt.Sprintf("round %q is not a round number.", v))
			return
		}
		round = n
	}
	f, err := api.Model(r.Context(), h.cfg.Sched, id, round, r.URL.Query().Get("format"))
	if err != nil {
		h.schedFail(w, r, err)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="`+f.Name+`"`)
	http.ServeContent(w, r, "", f.ModTime, f.Body)
}

// classify runs "try the model" on an uploaded image and shows the campaign page with
// the class probabilities.
func (h *Handler) classify(w http.ResponseWriter, r *http.Request, me *auth.Researcher, id int64) {
	file, _, err := r.FormFile("image")
	if err != nil {
		h.fail(w, r, http.StatusBadRequest, "No image", "Choose an image file to classify.")
		return
	}
	defer file.Close()
	res, err := api.Classify(r.Context(), h.cfg.Sched, id, file)
	if err != nil {
		h.schedFail(w, r, err)
		return
	}
	out := &classified{Top: res.Top, Engine: res.Engine, Millis: fmt.Sprintf("%.1f", res.Millis), Fragments: res.Fragments}
	for i, p := range res.Probabilities {
		out.Probs = append(out.Probs, classProb{Class: res.Classes[i], P: p})
	}
	h.campaignPage(w, r, me, id, out)
}

type classProb struct {
	Class string
	P     float64
}

type classified struct {
	Top, Engine, Millis string
	Fragments           int
	Probs               []classProb
}
