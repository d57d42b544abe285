package grid

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/texgrid/texgrid/project-server/internal/grid/faultproxy"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/poll"
	"github.com/texgrid/texgrid/trainer/synth"
)

// faultGrid starts a grid with a small generated dataset uploaded, ready for a campaign
// whose work units take a few seconds each.
func faultGrid(t *testing.T, ctx context.Context) *Grid {
	t.Helper()
	work := t.TempDir()
	data := filepath.Join(work, "synthetic")
	if err := synth.Generate(data, 4, 12, 96, 7); err != nil {
		t.Fatal(err)
	}
	g, err := Start(ctx, Options{BinDir: binDir, WorkDir: filepath.Join(work, "grid"), Upload: UploadDatasetFTP, Log: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Logf("close: %v", err)
		}
		if t.Failed() {
			for _, p := range append([]*Proc{g.Server}, g.Volunteers...) {
				t.Logf("--- tail of %s:\n%s", p.Name, p.Tail(3000))
			}
		}
	})
	if _, err := g.UploadDataset(ctx, data, "synthetic"); err != nil {
		t.Fatal(err)
	}
	return g
}

// faultCampaign is a campaign of small work units: 64 px fragments, 4 WUs a round,
// quorum 0.75.
func faultCampaign(rounds, fragMin, fragMax int, wuDeadline time.Duration) protocol.CampaignSpec {
	return protocol.CampaignSpec{
		Name: "faults", Dataset: "synthetic", Model: "tcnn-small", FragmentSize: 64,
		FragmentsMin: fragMin, FragmentsMax: fragMax,
		Hyper:  protocol.Hyper{Epochs: 1, BatchSize: 16, LearningRate: 0.01, Momentum: 0.9},
		Quorum: 0.75, WorkUnitsPerRound: 4, Rounds: rounds,
		WUDeadline: protocol.Duration(wuDeadline), Seed: 11, Start: true,
	}
}

// ledger is what the volunteers were told, read from their JSON logs: per round, the
// work units acknowledged as accepted, and the count answered late.
type ledger struct {
	accepted map[int]map[int64]bool
	late     int
	resumed  int // "resuming" log lines: work units continued from a checkpoint
}

func readLedger(t *testing.T, g *Grid) ledger {
	t.Helper()
	l := ledger{accepted: map[int]map[int64]bool{}}
	eachLogLine(t, g.Volunteers, func(line []byte) {
		var e struct {
			Msg      string `json:"msg"`
			WorkUnit int64  `json:"work_unit"`
			Round    int    `json:"round"`
			Outcome  string `json:"outcome"`
		}
		if json.Unmarshal(line, &e) != nil {
			return
		}
		switch {
		case e.Msg == "result accepted" && e.Outcome == protocol.OutcomeAccepted:
			if l.accepted[e.Round] == nil {
				l.accepted[e.Round] = map[int64]bool{}
			}
			l.accepted[e.Round][e.WorkUnit] = true
		case strings.HasPrefix(e.Msg, "result late"):
			l.late++
		case e.Msg == "resumed from checkpoint":
			l.resumed++
		}
	})
	return l
}

// checkMerged asserts the campaign finished and that every round merged exactly the
// results its volunteers were told were accepted, no more and no fewer.
func checkMerged(t *testing.T, g *Grid, ctx context.Context, id int64, rounds int) []protocol.RoundInfo {
	t.Helper()
	rs, err := g.Rounds(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	l := readLedger(t, g)
	closed := 0
	for _, r := range rs {
		if r.State != "closed" {
			continue
		}
		closed++
		if r.Accepted != r.Needed {
			t.Errorf("round %d merged %d results, needs exactly %d", r.Round, r.Accepted, r.Needed)
		}
		if got := len(l.accepted[r.Round]); got != r.Accepted {
			t.Errorf("round %d: volunteers were told %d results were accepted, the server merged %d", r.Round, got, r.Accepted)
		}
	}
	if closed != rounds {
		t.Errorf("%d rounds closed, want %d", closed, rounds)
	}
	return rs
}

// TestServerKill9 kills the project server with SIGKILL at random moments across a
// campaign, at least ten times, restarting it each time: the campaign completes and each
// round merged exactly the results acknowledged to volunteers.
func TestServerKill9(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	g := faultGrid(t, ctx)
	// Long enough that a kill every ~0.9 s lands at least ten times while it runs, even
	// on a quiet machine where a round of these units takes about a second.
	const rounds = 16
	camp, err := g.CreateCampaign(ctx, faultCampaign(rounds, 300, 400, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if _, err := g.AddVolunteer(ctx, VolunteerOptions{HeartbeatSeconds: 1, CheckpointSeconds: 2}); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	kills := 0 // kills that hit a running campaign
	for {
		c, err := g.Campaign(ctx, camp.ID)
		if err == nil && c.State == protocol.StateDone {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("campaign not done after %d kills: %v", kills, ctx.Err())
		}
		// A random moment: anything from mid-request to between rounds. The random
		// sleeps are the test's subject (when the crash lands), not a wait.
		time.Sleep(time.Duration(100+rng.IntN(1200)) * time.Millisecond)
		if err := g.Server.Kill(); err != nil {
			t.Fatal(err)
		}
		kills++
		t.Logf("kill %d during round %d", kills, c.Round)
		time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
		if err := g.StartServer(ctx); err != nil {
			t.Fatalf("restart %d: %v", kills, err)
		}
	}
	if kills < 10 {
		t.Errorf("only %d kills landed while the campaign ran; want at least 10 (make the campaign longer)", kills)
	}
	t.Logf("killed the server %d times", kills)
	if _, err := g.WaitCampaign(ctx, camp.ID, 3*time.Minute, nil); err != nil {
		t.Fatal(err)
	}
	checkMerged(t, g, ctx, camp.ID, rounds)
}

// TestVolunteerKill9 kills a volunteer mid work unit; restarted, it resumes from its
// checkpoint, and the campaign completes with every acknowledged result merged.
func TestVolunteerKill9(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	g := faultGrid(t, ctx)
	const rounds = 3
	spec := faultCampaign(rounds, 1500, 2000, 2*time.Minute)
	spec.Hyper.Epochs = 4 // work units of several seconds, so the kill lands mid-unit
	camp, err := g.CreateCampaign(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	var victim *Proc
	for i := 0; i < 4; i++ {
		p, err := g.AddVolunteer(ctx, VolunteerOptions{HeartbeatSeconds: 1, CheckpointSeconds: 1})
		if err != nil {
			t.Fatal(err)
		}
		victim = p
	}
	// Wait until the victim has checkpointed a unit it has not finished, and freeze it
	// there, so the kill lands mid-unit however fast it trains.
	ckpt := filepath.Join(g.opt.WorkDir, "volunteers", "v4")
	poll.For(t, 3*time.Minute, "volunteer 4 frozen with a checkpoint of an unfinished unit", func() error {
		if !hasCheckpoint(ckpt) {
			return fmt.Errorf("no checkpoint of an unfinished unit in %s", ckpt)
		}
		if err := victim.Freeze(); err != nil {
			return err
		}
		if hasCheckpoint(ckpt) {
			return nil
		}
		if err := victim.Thaw(); err != nil {
			return err
		}
		return errors.New("it finished the unit before it was frozen")
	})
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	// Down for a while, as a crashed machine is: its heartbeats stop.
	time.Sleep(time.Second)
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := g.WaitCampaign(ctx, camp.ID, 8*time.Minute, nil); err != nil {
		t.Fatal(err)
	}
	checkMerged(t, g, ctx, camp.ID, rounds)
	if l := readLedger(t, &Grid{Volunteers: []*Proc{victim}}); l.resumed == 0 {
		t.Errorf("the killed volunteer did not resume from its checkpoint:\n%s", victim.Tail(4000))
	}
}

// hasCheckpoint reports whether a state directory holds a training checkpoint
// (volunteer-client's train.ckpt) of an unfinished work unit.
func hasCheckpoint(stateDir string) bool {
	found := false
	_ = filepath.WalkDir(stateDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == "train.ckpt" {
			_, done := os.Stat(filepath.Join(filepath.Dir(p), "result.json"))
			found = found || done != nil
		}
		return nil
	})
	return found
}

// TestSlowVolunteer puts one volunteer of four behind a gate that holds each of its
// result uploads until the round the upload belongs to has closed, so it is always the
// last to finish: rounds close at quorum without waiting for it, and its results are
// answered late, recorded, and never merged. The order is arranged, not raced: the
// held volunteer takes the first work unit before the others start, so at least one of
// its results is late whatever the machine's load.
func TestSlowVolunteer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	g := faultGrid(t, ctx)
	gate, err := faultproxy.StartGate(strings.TrimPrefix(g.ServerURL, "http://"), func(r *http.Request) bool {
		return r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, "/result")
	})
	if err != nil {
		t.Fatal(err)
	}
	defer gate.Close()
	const rounds = 4
	camp, err := g.CreateCampaign(ctx, faultCampaign(rounds, 600, 600, 5*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	slow, err := g.AddVolunteer(ctx, VolunteerOptions{HeartbeatSeconds: 1, ServerURL: gate.URL()})
	if err != nil {
		t.Fatal(err)
	}
	// Alone on the grid, the held volunteer takes the first round's first work unit.
	waitIssued(t, ctx, g, camp.ID)
	for i := 0; i < 3; i++ {
		if _, err := g.AddVolunteer(ctx, VolunteerOptions{HeartbeatSeconds: 1}); err != nil {
			t.Fatal(err)
		}
	}
	// Each held upload belongs to a round no later than the newest one open when it
	// arrived; release it once that round has closed. The volunteer holds one unit at a
	// time, so whatever is held at the release is that one unit's upload.
	released := map[string]bool{}
	for {
		poll.For(t, 8*time.Minute, "a held upload or the campaign's end", func() error {
			if len(gate.Held()) > 0 {
				return nil
			}
			c, err := g.Campaign(ctx, camp.ID)
			if err != nil {
				return err
			}
			if c.State == protocol.StateDone && len(released) > 0 {
				return nil
			}
			return fmt.Errorf("campaign %s in round %d, nothing held, %d released", c.State, c.Round, len(released))
		})
		if len(gate.Held()) == 0 {
			break // done; a result still on its way is late and goes through the open gate
		}
		rs, err := g.Rounds(ctx, camp.ID)
		if err != nil {
			t.Fatal(err)
		}
		newest := 0
		for _, r := range rs {
			newest = max(newest, r.Round)
		}
		poll.For(t, 5*time.Minute, fmt.Sprintf("round %d to close without the held volunteer", newest), func() error {
			rs, err := g.Rounds(ctx, camp.ID)
			if err != nil {
				return err
			}
			for _, r := range rs {
				if r.Round == newest && r.State == "closed" {
					return nil
				}
			}
			return fmt.Errorf("round %d not closed: %+v", newest, rs)
		})
		for _, p := range gate.Release() {
			released[p] = true
		}
	}
	gate.Open()
	if _, err := g.WaitCampaign(ctx, camp.ID, 8*time.Minute, nil); err != nil {
		t.Fatal(err)
	}
	slowOnly := &Grid{Volunteers: []*Proc{slow}}
	poll.For(t, 2*time.Minute, "the held volunteer to hear its released results were late", func() error {
		if l := readLedger(t, slowOnly); l.late < len(released) {
			return fmt.Errorf("told late %d times, %d results released", l.late, len(released))
		}
		return nil
	})
	rs := checkMerged(t, g, ctx, camp.ID, rounds)
	late := 0
	for _, r := range rs {
		late += r.Late
	}
	// The held volunteer's own ledger: nothing of it was merged.
	l := readLedger(t, slowOnly)
	merged := 0
	for _, wus := range l.accepted {
		merged += len(wus)
	}
	if merged != 0 {
		t.Errorf("the held volunteer had %d results merged; rounds should close without it", merged)
	}
	if late < l.late {
		t.Errorf("the server recorded %d late results, the held volunteer was told %d", late, l.late)
	}
	t.Logf("%d uploads held until their round closed; %d late results recorded (%d of the held volunteer)", len(released), late, l.late)
}

// waitIssued waits until the campaign's first round has issued a work unit: with one
// volunteer attached, to that volunteer.
func waitIssued(t *testing.T, ctx context.Context, g *Grid, id int64) {
	t.Helper()
	poll.For(t, 3*time.Minute, "the first work unit to be issued", func() error {
		rs, err := g.Rounds(ctx, id)
		if err != nil {
			return err
		}
		if len(rs) == 0 || rs[0].Issued == 0 {
			return fmt.Errorf("rounds %+v", rs)
		}
		return nil
	})
}

// TestNetworkFaults puts a fault proxy between one volunteer and the project server and
// cuts its connections mid-download of the model and mid-upload of its delta: the
// volunteer retries, and its result is merged exactly once.
func TestNetworkFaults(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	g := faultGrid(t, ctx)
	proxy, err := faultproxy.Start(strings.TrimPrefix(g.ServerURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	// tcnn-small with 4 classes is about 800 KB of float32: the model download passes
	// 300 KB in the middle of the blob, and the upload 200 KB in the middle of the delta.
	proxy.CutNext(faultproxy.Down, 300_000)
	proxy.CutNext(faultproxy.Up, 200_000)
	const rounds = 2
	camp, err := g.CreateCampaign(ctx, faultCampaign(rounds, 300, 400, 2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	flaky, err := g.AddVolunteer(ctx, VolunteerOptions{HeartbeatSeconds: 1, ServerURL: "http://" + proxy.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	// Alone on the grid, it takes the first work unit, so both cuts have traffic to
	// fire on however the others would have raced it.
	waitIssued(t, ctx, g, camp.ID)
	for i := 0; i < 3; i++ {
		if _, err := g.AddVolunteer(ctx, VolunteerOptions{HeartbeatSeconds: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := g.WaitCampaign(ctx, camp.ID, 8*time.Minute, nil); err != nil {
		t.Fatal(err)
	}
	checkMerged(t, g, ctx, camp.ID, rounds)
	if n := proxy.Cuts.Load(); n != 2 || proxy.PendingCuts() != 0 {
		t.Errorf("the proxy cut %d connections with %d cuts pending; want both cuts fired", n, proxy.PendingCuts())
	}
	l := readLedger(t, &Grid{Volunteers: []*Proc{flaky}})
	total := 0
	for _, wus := range l.accepted {
		total += len(wus)
	}
	if total == 0 && l.late == 0 {
		t.Errorf("the volunteer behind the faulty link never delivered a result:\n%s", flaky.Tail(4000))
	}
}
