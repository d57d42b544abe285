package wu_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/poll"
	"github.com/texgrid/texgrid/trainer/safetensors"
	"github.com/texgrid/texgrid/trainer/shareddata"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
	"github.com/texgrid/texgrid/volunteer-client/internal/agent"
	"github.com/texgrid/texgrid/volunteer-client/internal/apiclient"
	"github.com/texgrid/texgrid/volunteer-client/internal/idle"
	"github.com/texgrid/texgrid/volunteer-client/internal/prefs"
	"github.com/texgrid/texgrid/volunteer-client/internal/state"
	"github.com/texgrid/texgrid/volunteer-client/internal/testgrid"
	"github.com/texgrid/texgrid/volunteer-client/internal/wu"
	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

// lockedBuffer collects the agent's log across its goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// attachHost registers a host with the account key and returns a client holding its
// token, and its identity.
func attachHost(t *testing.T, url, key, name string) (*apiclient.Client, state.Identity, string) {
	t.Helper()
	anon, err := apiclient.New(url, "", "test")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := anon.Register(context.Background(), protocol.RegisterHostRequest{AccountKey: key, Name: name, OS: "linux", Arch: "amd64", Cores: 1, GFLOPS: 1})
	if err != nil {
		t.Fatal(err)
	}
	c, err := apiclient.New(url, reg.Token, "test")
	if err != nil {
		t.Fatal(err)
	}
	return c, state.Identity{Server: url, HostID: reg.HostID}, reg.Token
}

// TestPoisonedModelOverRealServer: a hostile host's huge delta (accepted: the
// campaign's max_delta_norm allows it) pushes the global model so far off that honest
// training reaches a non-finite loss at once. The real volunteer agent, with the real
// trainer over the real dataset-ftp and project-server binaries, trains the unit of
// the poisoned round once, reports it failed, and moves on to asking for work; the
// server records the failure on the round and gives the slot to nobody else from this
// host. Stopping the campaign leaves the agent idle, not retraining.
func TestPoisonedModelOverRealServer(t *testing.T) {
	src := shareddata.Path(t, "kth-tips-grey")
	ftp := testgrid.StartFTP(t)
	m := ftp.Upload(t, testgrid.Subset(t, src, "kth3", 3, 6))
	ps := testgrid.StartProject(t, ftp)
	cs := protocol.CampaignSpec{Name: "poisoned", Dataset: m.Dataset, Model: "tcnn-small", FragmentSize: 64,
		FragmentsMin: 16, FragmentsMax: 16, Hyper: protocol.Hyper{Epochs: 1, BatchSize: 8},
		Quorum: 0.75, WorkUnitsPerRound: 1, Rounds: 3, MaxDeltaNorm: 1e30, Seed: 3, Start: true}
	specFile := filepath.Join(t.TempDir(), "spec.json")
	js, _ := json.Marshal(cs)
	if err := os.WriteFile(specFile, js, 0o600); err != nil {
		t.Fatal(err)
	}
	var c protocol.Campaign
	if err := json.Unmarshal([]byte(ps.Campaign(t, "create", "--file", specFile, "--json")), &c); err != nil {
		t.Fatal(err)
	}
	rounds := func() []protocol.RoundInfo {
		var rs []protocol.RoundInfo
		out := ps.Campaign(t, "rounds", "--json", fmt.Sprint(c.ID))
		if err := json.Unmarshal([]byte(out), &rs); err != nil {
			t.Fatalf("rounds %q: %v", out, err)
		}
		return rs
	}

	// Round 0: the hostile host uploads 1e15 in every weight.
	ctx := context.Background()
	bad, _, _ := attachHost(t, ps.URL, ps.AccountKey, "hostile")
	wr, err := bad.RequestWork(ctx, protocol.WorkRequest{Threads: 1})
	if err != nil || wr.WorkUnit == nil {
		t.Fatalf("the hostile host got no work: %+v %v", wr, err)
	}
	sp, err := spec.Parse(wr.WorkUnit.ModelSpec)
	if err != nil {
		t.Fatal(err)
	}
	r, err := sp.Resolve(len(wr.WorkUnit.Classes), wr.WorkUnit.FragmentSize)
	if err != nil {
		t.Fatal(err)
	}
	var huge []tensor.Named
	for _, p := range r.Params {
		tt := tensor.New(p.Shape...)
		for i := range tt.Data {
			tt.Data[i] = 1e15
		}
		huge = append(huge, tensor.Named{Name: p.Name, T: tt})
	}
	body, err := safetensors.Marshal(huge, safetensors.F32, nil)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(body)
	if _, err := bad.UploadResult(ctx, wr.WorkUnit.ID, apiclient.Result{Delta: body, SHA256: hex.EncodeToString(sum[:]), Samples: 16, Loss: 1}); err != nil {
		t.Fatalf("the hostile delta: %v", err)
	}
	if rs := rounds(); len(rs) != 2 || rs[0].State != "closed" {
		t.Fatalf("round 0 did not close on the hostile delta: %+v", rs)
	}

	// An honest volunteer on W(1).
	api, id, tok := attachHost(t, ps.URL, ps.AccountKey, "honest")
	dir, err := state.Open(filepath.Join(t.TempDir(), "state"), true)
	if err != nil {
		t.Fatal(err)
	}
	if err := dir.SaveIdentity(id, tok); err != nil {
		t.Fatal(err)
	}
	defaults := prefs.Defaults(1, 2<<30)
	defaults.HeartbeatSeconds, defaults.CheckpointSeconds, defaults.MaxRetryDelaySecs = 1, 1, 1
	pr, err := prefs.Load(dir, defaults, localapi.PrefsPatch{})
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	a, err := agent.New(agent.Config{Dir: dir, API: api, Identity: id, Prefs: pr, Idle: idle.Always{Value: true},
		Trainer: &wu.Trainer{CacheDir: filepath.Join(t.TempDir(), "cache")}, Version: "test", RetryBase: 50 * time.Millisecond,
		Poll: 50 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	}()
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		poll.Until(t, 3*time.Minute, what, cond)
	}
	waitUntil("the failure of round 1's unit on the server", func() bool {
		rs := rounds()
		return len(rs) == 2 && rs[1].Failed == 1
	})
	waitUntil("the agent asking for work again", func() bool {
		return strings.Contains(logs.String(), "no work")
	})
	log := logs.String()
	if n := strings.Count(log, "msg=\"work unit\" "); n != 1 {
		t.Errorf("the agent took %d work units, want the one of round 1", n)
	}
	if !strings.Contains(log, "training diverged: the loss is") || !strings.Contains(log, "reported to the server") {
		t.Errorf("the agent did not report a diverged loss")
	}
	if strings.Contains(log, "unsupported value") {
		t.Errorf("a non-finite number reached JSON")
	}
	rs := rounds()
	if rs[1].State != "open" || rs[1].Accepted != 0 || rs[1].Issued != 1 {
		t.Errorf("round 1 after the failure: %+v, want open, nothing accepted, one issue", rs[1])
	}
	if _, err := os.Stat(filepath.Join(dir.File(state.WorkDir), "wu.json")); !os.IsNotExist(err) {
		t.Errorf("the failed unit is still on disk: %v", err)
	}

	// Stopped: the agent stays idle and never takes or trains a unit again.
	ps.Campaign(t, "stop", fmt.Sprint(c.ID))
	waitUntil("an ask after the stop", func() bool { return strings.Contains(logs.String(), "no campaign is running") })
	if n := strings.Count(logs.String(), "msg=\"work unit\" "); n != 1 {
		t.Errorf("after the stop the agent took %d work units in all, want 1", n)
	}
	if st := a.Status(); st.WorkUnit != nil || st.Completed != 0 || st.State != localapi.StateIdle {
		t.Errorf("status after the stop: %+v", st)
	}
}
