package agent_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/texgrid/texgrid/configs"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/poll"
	"github.com/texgrid/texgrid/volunteer-client/internal/agent"
	"github.com/texgrid/texgrid/volunteer-client/internal/apiclient"
	"github.com/texgrid/texgrid/volunteer-client/internal/fakeserver"
	"github.com/texgrid/texgrid/volunteer-client/internal/idle"
	"github.com/texgrid/texgrid/volunteer-client/internal/prefs"
	"github.com/texgrid/texgrid/volunteer-client/internal/state"
	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

// stepTrainer is a deterministic stand-in for the real trainer in the loop's unit
// tests (the real one runs in the wu package's and the command's integration tests).
// A job has a fixed number of steps; each folds its position into an accumulator, so
// the result depends on every step having run exactly once, in order.
type stepTrainer struct {
	mu       sync.Mutex
	steps    int           // steps per work unit
	stepTime time.Duration // wall time a step sleeps
	burn     time.Duration // CPU time a step burns
	prepared []prepareCall
	stepped  int
	failNext error
	burner   *burner // with burn > 0: the thread that burns
	// diverge makes the work units it names diverge, as a poisoned base model does.
	diverge map[int64]divergence
}

// divergence is how a work unit of stepTrainer goes wrong.
type divergence struct {
	at    int     // from this step on (1-based) the loss is loss; 0: never
	loss  float64 // NaN or an infinity
	delta error   // when set, Result fails with it (a non-finite delta)
}

// burner burns CPU on one locked OS thread, so a test can read that thread's
// scheduler statistics. Its owner calls stop.
type burner struct {
	req chan time.Duration
	ack chan struct{}
	tid int
}

func newBurner() *burner {
	b := &burner{req: make(chan time.Duration), ack: make(chan struct{})}
	ready := make(chan int)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		ready <- syscall.Gettid()
		for d := range b.req {
			burnCPU(d)
			b.ack <- struct{}{}
		}
	}()
	b.tid = <-ready
	return b
}

func (b *burner) burn(d time.Duration) { b.req <- d; <-b.ack }
func (b *burner) stop()                { close(b.req) }

type prepareCall struct {
	WU         int64
	Resumed    bool
	Threads    int
	CacheBytes int64
	BaseSize   int64
}

type stepState struct {
	Pos int
	Acc uint64
}

func (tr *stepTrainer) Prepare(ctx context.Context, wu *protocol.WorkUnit, basePath string, threads int, cacheBytes int64, st []byte) (agent.Job, error) {
	fi, err := os.Stat(basePath)
	if err != nil {
		return nil, fmt.Errorf("base model: %w", err)
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if err := tr.failNext; err != nil {
		tr.failNext = nil
		return nil, err
	}
	tr.prepared = append(tr.prepared, prepareCall{WU: wu.ID, Resumed: st != nil, Threads: threads, CacheBytes: cacheBytes, BaseSize: fi.Size()})
	j := &stepJob{tr: tr, seed: wu.Seed, n: tr.steps, div: tr.diverge[wu.ID]}
	if st != nil {
		if err := json.Unmarshal(st, &j.s); err != nil {
			return nil, err
		}
	} else {
		j.s.Acc = wu.Seed
	}
	return j, nil
}

func (tr *stepTrainer) calls() []prepareCall {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return append([]prepareCall(nil), tr.prepared...)
}

func (tr *stepTrainer) stepCount() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.stepped
}

type stepJob struct {
	tr   *stepTrainer
	seed uint64
	n    int
	s    stepState
	div  divergence
}

func (j *stepJob) Step(ctx context.Context) (agent.StepInfo, error) {
	if j.s.Pos >= j.n {
		return agent.StepInfo{Done: true}, nil
	}
	if j.tr.burn > 0 {
		j.tr.burner.burn(j.tr.burn)
	}
	if j.tr.stepTime > 0 {
		time.Sleep(j.tr.stepTime) // a batch's training time, simulated
	}
	j.s.Acc = j.s.Acc*6364136223846793005 + uint64(j.s.Pos) + 1442695040888963407
	j.s.Pos++
	j.tr.mu.Lock()
	j.tr.stepped++
	j.tr.mu.Unlock()
	loss := 1 / float64(j.s.Pos)
	if j.div.at > 0 && j.s.Pos >= j.div.at {
		loss = j.div.loss
	}
	return agent.StepInfo{Epoch: 0, Batch: j.s.Pos, Loss: loss, Samples: j.s.Pos * 4, Done: j.s.Pos >= j.n}, nil
}

// burnCPU spins until this thread has used about d of CPU time.
func burnCPU(d time.Duration) {
	start := threadCPU()
	x := 1.0
	for threadCPU()-start < d {
		for i := 0; i < 20000; i++ {
			x = x*1.0000001 + 1e-9
		}
	}
	sink = x
}

var sink float64

func (j *stepJob) Checkpoint() ([]byte, error) { return json.Marshal(j.s) }
func (j *stepJob) Progress() float64           { return float64(j.s.Pos) / float64(j.n) }
func (j *stepJob) Close()                      {}
func (j *stepJob) Result() ([]byte, int, float64, error) {
	if j.s.Pos < j.n {
		return nil, 0, 0, errors.New("not done")
	}
	if j.div.delta != nil {
		return nil, 0, 0, j.div.delta
	}
	b := make([]byte, 64)
	for i := 0; i < 8; i++ {
		binary.LittleEndian.PutUint64(b[i*8:], j.s.Acc+uint64(i))
	}
	loss := 0.25
	if j.div.at > 0 {
		loss = j.div.loss // the last epoch's mean takes in the non-finite batches
	}
	return b, j.s.Pos * 4, loss, nil
}

// harness is one client against one fake server.
type harness struct {
	t   *testing.T
	srv *fakeserver.Server
	dir *state.Dir
	tr  *stepTrainer
	pr  *prefs.Store
	cfg agent.Config
}

func newHarness(t *testing.T, tr *stepTrainer, patch localapi.PrefsPatch) *harness {
	t.Helper()
	srv, err := fakeserver.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	dir, err := state.Open(t.TempDir()+"/state", true)
	if err != nil {
		t.Fatal(err)
	}
	tok := srv.AddHost()
	id := state.Identity{Server: srv.URL(), HostID: 1}
	if err := dir.SaveIdentity(id, tok); err != nil {
		t.Fatal(err)
	}
	defaults := prefs.Defaults(2, 4<<30)
	defaults.HeartbeatSeconds = 1
	defaults.CheckpointSeconds = 1
	defaults.MaxRetryDelaySecs = 1
	pr, err := prefs.Load(dir, defaults, patch)
	if err != nil {
		t.Fatal(err)
	}
	api, err := apiclient.New(srv.URL(), tok, "test")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, srv: srv, dir: dir, tr: tr, pr: pr}
	h.cfg = agent.Config{
		Dir: dir, API: api, Identity: id, Prefs: pr, Trainer: tr, Idle: idle.Always{Value: true},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Version: "test",
		RetryBase: 20 * time.Millisecond, Poll: 20 * time.Millisecond,
	}
	if testing.Verbose() {
		h.cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return h
}

// workUnit queues a work unit with a real model spec and a fresh base blob.
func (h *harness) workUnit(id int64) *protocol.WorkUnit {
	h.t.Helper()
	sp, err := configs.Model("tcnn-small")
	if err != nil {
		h.t.Fatal(err)
	}
	base := h.srv.AddBlob([]byte(fmt.Sprintf("base model of work unit %d", id)))
	wu := &protocol.WorkUnit{
		ID: id, CampaignID: 1, Round: 1, BaseModel: base, ModelSpec: sp,
		Classes: []string{"a", "b", "c"}, FragmentSize: 64, FragmentCount: 16, Seed: uint64(1000 + id),
		Hyper:      protocol.Hyper{Epochs: 1, BatchSize: 4, LearningRate: 0.01, Momentum: 0.9},
		DeltaDType: "float32", Deadline: time.Now().Add(time.Hour),
	}
	h.srv.QueueWork(wu)
	return wu
}

// start runs an agent in the background; the returned stop cancels it and waits.
func (h *harness) start(mod func(*agent.Config)) (*agent.Agent, func() error) {
	h.t.Helper()
	cfg := h.cfg
	if mod != nil {
		mod(&cfg)
	}
	a, err := agent.New(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				runErr = errors.New("agent did not stop within 30s")
			}
		})
		return runErr
	}
	h.t.Cleanup(func() { stop() })
	return a, stop
}

// run runs an agent until it has answered n uploads.
func (h *harness) run(n int, mod func(*agent.Config)) *agent.Agent {
	h.t.Helper()
	cfg := h.cfg
	cfg.MaxResults = n
	if mod != nil {
		mod(&cfg)
	}
	a, err := agent.New(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := a.Run(ctx); err != nil {
		h.t.Fatal(err)
	}
	if ctx.Err() != nil {
		h.t.Fatalf("agent did not answer %d uploads in time; status %+v", n, a.Status())
	}
	return a
}

// waitFor polls cond for up to 3 minutes: long enough for CPU-bound waits (a work
// unit of burned batches) on a machine busy with other tests; a condition that holds
// sooner ends the wait sooner.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 3*time.Minute, what, cond)
}

func ptr[T any](v T) *T { return &v }
