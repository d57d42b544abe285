package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/texgrid/texgrid/configs"
	"github.com/texgrid/texgrid/dataset-ftp/manifest"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/nn"
	"github.com/texgrid/texgrid/trainer/poll"
	"github.com/texgrid/texgrid/trainer/safetensors"
	"github.com/texgrid/texgrid/trainer/shareddata"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/volunteer-client/internal/checkpoint"
	"github.com/texgrid/texgrid/volunteer-client/internal/fakeserver"
	"github.com/texgrid/texgrid/volunteer-client/internal/testgrid"
	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testgrid.Cleanup()
	os.Exit(code)
}

func client(t *testing.T) string { return testgrid.Binary(t, "volunteer-client/cmd/volunteer-client") }

// vc runs a short volunteer-client command and returns its combined output.
func vc(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(client(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("volunteer-client %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ftpDataset starts a real dataset-ftp server with a kth-tips-grey subset uploaded.
func ftpDataset(t *testing.T) (*testgrid.FTP, *manifest.Manifest) {
	t.Helper()
	src := shareddata.Path(t, "kth-tips-grey")
	ftp := testgrid.StartFTP(t)
	m := ftp.Upload(t, testgrid.Subset(t, src, "kth3", 3, 6))
	return ftp, m
}

// workUnit builds a work unit over the FTP dataset and stores its base model on srv.
func workUnit(t *testing.T, srv *fakeserver.Server, ftp *testgrid.FTP, m *manifest.Manifest, id int64, fragments int) *protocol.WorkUnit {
	t.Helper()
	b, err := configs.Model("tcnn-small")
	if err != nil {
		t.Fatal(err)
	}
	s, err := spec.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Resolve(len(m.Classes), 64)
	if err != nil {
		t.Fatal(err)
	}
	model, err := nn.New(r, 7)
	if err != nil {
		t.Fatal(err)
	}
	base, err := safetensors.Marshal(model.Params(), safetensors.F32, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &protocol.WorkUnit{
		ID: id, CampaignID: 1, Round: 0, BaseModel: srv.AddBlob(base), ModelSpec: s.JSON(), Classes: m.Classes,
		Dataset:      protocol.DatasetRef{Name: m.Dataset, ManifestVersion: m.Version, FTPAddr: ftp.Addr, FTPUser: "anonymous", FTPPassword: "volunteer@"},
		FragmentSize: 64, FragmentCount: fragments, Seed: 4242,
		Hyper:      protocol.Hyper{Epochs: 1, BatchSize: 8, LearningRate: 0.01, Momentum: 0.9, WeightDecay: 1e-4},
		DeltaDType: "float16", Deadline: time.Now().Add(time.Hour),
	}
}

func startFake(t *testing.T) *fakeserver.Server {
	t.Helper()
	srv, err := fakeserver.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// attach makes a fresh state directory attached to url.
func attach(t *testing.T, url, key string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	out := vc(t, "attach", "--server", url, "--account-key", key, "--state-dir", dir, "--bench", "100ms")
	if !strings.Contains(out, "attached to") {
		t.Fatalf("attach said %q", out)
	}
	return dir
}

// slowCPU is the --cpu-limit (percent) of clients a test must catch mid-work-unit, to
// kill, pause or stop them: it stretches the work unit without changing a bit of its
// result, so that it outlasts a checkpoint interval even on a fast machine. The order
// itself is arranged, not left to it: the tests freeze (SIGSTOP) or pause the client
// and check it is mid-unit before they act.
const slowCPU = "25"

func run(t *testing.T, dir string, extra ...string) *testgrid.Proc {
	t.Helper()
	args := append([]string{"run", "--state-dir", dir, "--headless", "--log-level", "debug", "--max-threads", "1",
		"--checkpoint-seconds", "1", "--heartbeat-seconds", "1", "--retry-base", "50ms", "--max-retry-delay", "1"}, extra...)
	return testgrid.Start(t, t.TempDir(), client(t), args...)
}

// freezeAtCheckpoint waits until the client's work unit has a checkpoint at a progress
// strictly between 0 and 1 and leaves the client frozen there (SIGSTOP), so that a
// kill that follows lands mid-unit however fast it trains; it returns that progress.
func freezeAtCheckpoint(t *testing.T, dir string, id int64, p *testgrid.Proc) float64 {
	t.Helper()
	work, err := checkpoint.Open(filepath.Join(dir, "work"))
	if err != nil {
		t.Fatal(err)
	}
	midUnit := func() (float64, error) {
		if r, _, err := work.LoadResult(); err == nil && r != nil {
			t.Fatalf("the work unit finished before a checkpoint was seen; make it larger:\n%s", p.LogText())
		}
		meta, _, err := work.LoadState(id)
		switch {
		case err != nil:
			return 0, err
		case meta == nil || meta.Progress <= 0:
			return 0, errors.New("no checkpoint yet")
		case meta.Progress >= 1:
			t.Fatalf("the work unit finished before it could be killed (progress %g); make it larger", meta.Progress)
		}
		return meta.Progress, nil
	}
	var prog float64
	poll.For(t, 3*time.Minute, "a checkpoint mid-unit", func() error {
		if p.Exited() {
			t.Fatalf("client exited before its first checkpoint:\n%s", p.LogText())
		}
		if _, err := midUnit(); err != nil {
			return err
		}
		if err := p.Freeze(); err != nil {
			return err
		}
		// Frozen: what is on disk now is what a kill leaves behind.
		prog, err = midUnit()
		return err // a checkpoint seen before the freeze is still there after it
	})
	return prog
}

// TestKill9ResumesBitExact: the real client binary trains a work unit over a real
// dataset-ftp server, is killed with SIGKILL after a checkpoint, and restarted; it
// finishes from the checkpoint and uploads exactly the bytes an uninterrupted client
// uploads for the same work unit (same thread count).
func TestKill9ResumesBitExact(t *testing.T) {
	ftp, m := ftpDataset(t)

	// Reference: an uninterrupted client on its own fake server.
	ref := startFake(t)
	wuRef := workUnit(t, ref, ftp, m, 77, 800)
	ref.QueueWork(wuRef)
	refDir := attach(t, ref.URL(), fakeserver.AccountKey)
	p := run(t, refDir, "--exit-after", "1")
	if err := p.Wait(5 * time.Minute); err != nil {
		t.Fatalf("reference client: %v\n%s", err, p.LogText())
	}
	refUps := ref.UploadsOf(77)
	if len(refUps) != 1 || refUps[0].Outcome != protocol.OutcomeAccepted {
		t.Fatalf("reference uploads %+v", refUps)
	}

	srv := startFake(t)
	wu := workUnit(t, srv, ftp, m, 77, 800)
	srv.QueueWork(wu)
	dir := attach(t, srv.URL(), fakeserver.AccountKey)
	p1 := run(t, dir, "--exit-after", "1", "--cpu-limit", slowCPU)
	prog := freezeAtCheckpoint(t, dir, wu.ID, p1)
	p1.Kill()
	if ups := srv.UploadsOf(wu.ID); len(ups) != 0 {
		t.Fatalf("uploaded before the kill: %d", len(ups))
	}
	t.Logf("killed with SIGKILL after a checkpoint at %.0f%% of the work unit", 100*prog)

	p2 := run(t, dir, "--exit-after", "1")
	if err := p2.Wait(5 * time.Minute); err != nil {
		t.Fatalf("restarted client: %v\n%s", err, p2.LogText())
	}
	if !strings.Contains(p2.LogText(), "resumed from checkpoint") {
		t.Errorf("the restarted client did not resume from the checkpoint:\n%s", p2.LogText())
	}
	ups := srv.UploadsOf(wu.ID)
	if len(ups) != 1 || ups[0].Outcome != protocol.OutcomeAccepted {
		t.Fatalf("uploads after the restart: %+v", ups)
	}
	if !bytes.Equal(ups[0].Body, refUps[0].Body) {
		t.Fatalf("the resumed delta (%d bytes, sha %.12s) differs from the uninterrupted one (%d bytes, sha %.12s)",
			len(ups[0].Body), ups[0].SHA256, len(refUps[0].Body), refUps[0].SHA256)
	}
	if ups[0].Samples != refUps[0].Samples || ups[0].Loss != refUps[0].Loss {
		t.Errorf("samples/loss %d/%g after resume, %d/%g uninterrupted", ups[0].Samples, ups[0].Loss, refUps[0].Samples, refUps[0].Loss)
	}
	t.Logf("resumed delta equals the uninterrupted one bit for bit: %d bytes, sha256 %s", len(ups[0].Body), ups[0].SHA256)
}

// TestSIGTERMCheckpointsAndExits: SIGTERM during training writes a checkpoint and
// exits 0; the local API files are removed.
func TestSIGTERMCheckpointsAndExits(t *testing.T) {
	ftp, m := ftpDataset(t)
	srv := startFake(t)
	wu := workUnit(t, srv, ftp, m, 5, 2000)
	srv.QueueWork(wu)
	dir := attach(t, srv.URL(), fakeserver.AccountKey)
	p := run(t, dir, "--checkpoint-seconds", "3600", "--cpu-limit", slowCPU)
	p.WaitLog(t, "work unit prepared", 2*time.Minute)
	// Hold it mid-unit: paused after at least one batch, it cannot finish before the
	// SIGTERM, and has trained something to checkpoint.
	waitFor(t, "a trained batch", func() bool {
		st, err := tryStatus(t, dir)
		return err == nil && st.WorkUnit != nil && st.WorkUnit.Progress > 0
	})
	vc(t, "pause", "--state-dir", dir)
	waitState(t, dir, localapi.StatePaused)
	if st := status(t, dir); st.WorkUnit == nil || st.WorkUnit.Progress >= 1 {
		t.Fatalf("the work unit finished before the pause; make it larger: %+v", st.WorkUnit)
	}
	p.Cmd.Process.Signal(syscall.SIGTERM)
	if err := p.Wait(time.Minute); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, p.LogText())
	}
	if !strings.Contains(p.LogText(), "checkpointed on shutdown") {
		t.Errorf("no shutdown checkpoint in the log:\n%s", p.LogText())
	}
	work, _ := checkpoint.Open(filepath.Join(dir, "work"))
	meta, _, err := work.LoadState(wu.ID)
	if err != nil || meta == nil || meta.Progress <= 0 {
		t.Errorf("checkpoint after SIGTERM: %+v, %v", meta, err)
	}
	for _, f := range []string{localapi.AddrFile, localapi.TokenFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); !os.IsNotExist(err) {
			t.Errorf("%s left behind after exit", f)
		}
	}
}

// TestRealGrid runs two clients against the real project-server and dataset-ftp: a
// one-round campaign of two work units with quorum 0.75 (both needed). One client is
// killed with SIGKILL mid-work-unit and restarted; the status, pause and resume
// commands drive the other through its local API; the project server is stopped for a
// while and restarted; both results are accepted and the round closes. Then both
// detach.
func TestRealGrid(t *testing.T) {
	src := shareddata.Path(t, "kth-tips-grey")
	ftp := testgrid.StartFTP(t)
	ftp.Upload(t, testgrid.Subset(t, src, "kth3", 3, 6))
	ps := testgrid.StartProject(t, ftp)
	out := ps.Campaign(t, "create", "--name", "vc-test", "--dataset", "kth3", "--model", "tcnn-small",
		"--fragment-size", "64", "--fragments-min", "1200", "--fragments-max", "1200", "--epochs", "1", "--batch", "8",
		"--quorum", "0.75", "--wus", "2", "--rounds", "1", "--seed", "11", "--start", "--json")
	var c protocol.Campaign
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("campaign create printed %q: %v", out, err)
	}

	a := attach(t, ps.URL, ps.AccountKey)
	b := attach(t, ps.URL, ps.AccountKey)
	pa := run(t, a, "--exit-after", "1", "--cpu-limit", slowCPU)
	pb := run(t, b, "--exit-after", "1", "--cpu-limit", slowCPU)

	// Client b: status, pause, resume through the CLI and the local API.
	pb.WaitLog(t, "work unit prepared", 2*time.Minute)
	if st := vc(t, "status", "--state-dir", b); !strings.Contains(st, "work unit:") {
		t.Errorf("status while working:\n%s", st)
	}
	vc(t, "pause", "--state-dir", b)
	waitState(t, b, localapi.StatePaused)
	vc(t, "resume", "--state-dir", b)

	// Client a: kill -9 after a checkpoint, then restart.
	var wuA int64
	waitFor(t, "client a's work unit", func() bool {
		d, _ := readDescriptor(a)
		if d != nil {
			wuA = d.WorkUnit.ID
		}
		return d != nil
	})
	freezeAtCheckpoint(t, a, wuA, pa)
	pa.Kill()

	// The project server goes away for a while: client b keeps training, its
	// heartbeats fail, and it carries on once the server is back.
	ps.Stop(t)
	waitFor(t, "client b to notice the outage", func() bool {
		lb := pb.LogText()
		return strings.Contains(lb, "heartbeat failed") || strings.Contains(lb, "retrying")
	})
	ps.Restart(t)
	pa2 := run(t, a, "--exit-after", "1")

	for name, p := range map[string]*testgrid.Proc{"a (restarted)": pa2, "b": pb} {
		if err := p.Wait(5 * time.Minute); err != nil {
			t.Fatalf("client %s: %v\n%s", name, err, p.LogText())
		}
		if !strings.Contains(p.LogText(), "result accepted") {
			t.Errorf("client %s: no accepted result:\n%s", name, p.LogText())
		}
	}
	if lb := pb.LogText(); !strings.Contains(lb, "heartbeat failed") && !strings.Contains(lb, "retrying") {
		t.Errorf("client b never noticed the server outage:\n%s", lb)
	}
	if !strings.Contains(pa2.LogText(), "resumed from checkpoint") {
		t.Errorf("client a did not resume:\n%s", pa2.LogText())
	}
	var rounds []protocol.RoundInfo
	rout := ps.Campaign(t, "rounds", "--json", fmt.Sprint(c.ID))
	if err := json.Unmarshal([]byte(rout), &rounds); err != nil {
		t.Fatalf("campaign rounds printed %q: %v", rout, err)
	}
	if len(rounds) == 0 || rounds[0].Accepted != 2 || rounds[0].State != "closed" {
		t.Errorf("round 0 after both results: %+v", rounds)
	}
	for _, d := range []string{a, b} {
		if out := vc(t, "detach", "--state-dir", d); !strings.Contains(out, "detached") {
			t.Errorf("detach: %s", out)
		}
		if _, err := os.Stat(filepath.Join(d, "host.token")); !os.IsNotExist(err) {
			t.Errorf("token left after detach")
		}
	}
}

func readDescriptor(dir string) (*checkpoint.Descriptor, error) {
	work, err := checkpoint.Open(filepath.Join(dir, "work"))
	if err != nil {
		return nil, err
	}
	return work.LoadDescriptor()
}

// status reads the running client's status through the CLI.
func status(t *testing.T, dir string) localapi.Status {
	t.Helper()
	st, err := tryStatus(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func tryStatus(t *testing.T, dir string) (localapi.Status, error) {
	var st localapi.Status
	out, err := exec.Command(client(t), "status", "--state-dir", dir, "--json").Output()
	if err != nil {
		return st, fmt.Errorf("status --json: %w", err)
	}
	if err := json.Unmarshal(out, &st); err != nil {
		return st, fmt.Errorf("status --json printed %q: %w", out, err)
	}
	return st, nil
}

func waitState(t *testing.T, dir, want string) {
	t.Helper()
	waitFor(t, "state "+want, func() bool {
		st, err := tryStatus(t, dir)
		return err == nil && st.State == want
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	poll.Until(t, 3*time.Minute, what, cond)
}

// TestRealGridLateResult: four clients, four work units, quorum 0.75 on the real
// project server. Client d takes its work unit first and is paused; the other three
// close the round; d, resumed, finishes and is answered late: it records that and
// exits without retrying the upload.
func TestRealGridLateResult(t *testing.T) {
	src := shareddata.Path(t, "kth-tips-grey")
	ftp := testgrid.StartFTP(t)
	ftp.Upload(t, testgrid.Subset(t, src, "kth3", 3, 6))
	ps := testgrid.StartProject(t, ftp)
	out := ps.Campaign(t, "create", "--name", "late", "--dataset", "kth3", "--model", "tcnn-small",
		"--fragment-size", "64", "--fragments-min", "480", "--fragments-max", "480", "--epochs", "1", "--batch", "8",
		"--quorum", "0.75", "--wus", "4", "--rounds", "1", "--seed", "5", "--start", "--json")
	var c protocol.Campaign
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("campaign create printed %q: %v", out, err)
	}
	d := attach(t, ps.URL, ps.AccountKey)
	// No heartbeat during the test, so d hears of the closed round only at upload.
	pd := run(t, d, "--exit-after", "1", "--heartbeat-seconds", "3600", "--cpu-limit", slowCPU)
	pd.WaitLog(t, "work unit prepared", 2*time.Minute)
	vc(t, "pause", "--state-dir", d)
	waitState(t, d, localapi.StatePaused)
	if st := status(t, d); st.WorkUnit == nil || st.WorkUnit.Progress >= 1 {
		t.Fatalf("client d finished its work unit before the pause; make it larger: %+v", st.WorkUnit)
	}

	var others []*testgrid.Proc
	for i := 0; i < 3; i++ {
		others = append(others, run(t, attach(t, ps.URL, ps.AccountKey), "--exit-after", "1"))
	}
	for i, p := range others {
		if err := p.Wait(5 * time.Minute); err != nil {
			t.Fatalf("client %d: %v\n%s", i, err, p.LogText())
		}
	}
	rounds := func() []protocol.RoundInfo {
		var rs []protocol.RoundInfo
		out := ps.Campaign(t, "rounds", "--json", fmt.Sprint(c.ID))
		if err := json.Unmarshal([]byte(out), &rs); err != nil {
			t.Fatalf("rounds %q: %v", out, err)
		}
		return rs
	}
	if rs := rounds(); len(rs) == 0 || rs[0].State != "closed" || rs[0].Accepted != 3 {
		t.Fatalf("round after three results: %+v", rs)
	}
	vc(t, "resume", "--state-dir", d)
	if err := pd.Wait(5 * time.Minute); err != nil {
		t.Fatalf("client d: %v\n%s", err, pd.LogText())
	}
	log := pd.LogText()
	if !strings.Contains(log, "result late") {
		t.Errorf("client d was not answered late:\n%s", log)
	}
	if n := strings.Count(log, "retrying"); n != 0 {
		t.Errorf("client d retried %d times after a late answer", n)
	}
	if rs := rounds(); rs[0].Late != 1 || rs[0].Accepted != 3 {
		t.Errorf("round after the late result: %+v, want 3 accepted and 1 late", rs[0])
	}
}

// procCPU returns a process's user+system CPU time from /proc/<pid>/stat.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	var ut, st int64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// TestCPULimitRealTrainer runs the real client binary on a real work unit with one
// training thread while the test switches its CPU limit between 100 % and 50 %
// through the local API, in alternating windows so both see the same machine load.
// It checks, per limit: the duty cycle the client reports (busy / (busy + throttled)
// from its status) is the limit within 10 points, and accounts for the window's wall
// time; the process's CPU time share (from /proc) at limit 50 is at most 60 %; and
// when the machine gave the unthrottled client a whole core (no contention), the
// throttled share is within 10 points of 50 %. On a contended machine the CPU share
// falls below the limit, never above it: the logged figures say how far.
func TestCPULimitRealTrainer(t *testing.T) {
	ftp, m := ftpDataset(t)
	srv := startFake(t)
	wu := workUnit(t, srv, ftp, m, 9, 40000)
	srv.QueueWork(wu)
	dir := attach(t, srv.URL(), fakeserver.AccountKey)
	p := run(t, dir, "--checkpoint-seconds", "3600", "--heartbeat-seconds", "5")
	p.WaitLog(t, "work unit prepared", 2*time.Minute)
	pid := p.Cmd.Process.Pid
	lc, err := localapi.Dial(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var cpu, wall, busy, slept [2]time.Duration // [0]: limit 100, [1]: limit 50
	secs := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
	for cycle := 0; cycle < 2; cycle++ {
		for i, limit := range []int{100, 50} {
			if _, err := lc.SetPrefs(ctx, localapi.PrefsPatch{CPULimitPercent: &limit}); err != nil {
				t.Fatal(err)
			}
			// The new limit applies from the next batch: start the window after one ends.
			before, err := lc.State(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var s0 localapi.Status
			poll.For(t, time.Minute, "a batch under the new limit", func() error {
				st, err := lc.State(ctx)
				if err != nil {
					return err
				}
				if st.BusySeconds == before.BusySeconds {
					return errors.New("no batch ended yet")
				}
				s0 = *st
				return nil
			})
			c0, t0 := procCPU(t, pid), time.Now()
			time.Sleep(2 * time.Second) // the measurement window, not a wait
			s1, err := lc.State(ctx)
			if err != nil {
				t.Fatal(err)
			}
			cpu[i] += procCPU(t, pid) - c0
			wall[i] += time.Since(t0)
			busy[i] += secs(s1.BusySeconds - s0.BusySeconds)
			slept[i] += secs(s1.ThrottledSeconds - s0.ThrottledSeconds)
		}
	}
	if p.Exited() {
		t.Fatalf("the work unit ended inside the measurement:\n%s", p.LogText())
	}
	pct := func(d, w time.Duration) float64 { return 100 * d.Seconds() / w.Seconds() }
	for i, limit := range []float64{100, 50} {
		duty := pct(busy[i], busy[i]+slept[i])
		t.Logf("limit %.0f%%: duty cycle %.1f%% (%.2fs busy, %.2fs throttled over %.2fs), process CPU share %.1f%%",
			limit, duty, busy[i].Seconds(), slept[i].Seconds(), wall[i].Seconds(), pct(cpu[i], wall[i]))
		if duty < limit-10 || duty > limit+10 {
			t.Errorf("limit %.0f%%: duty cycle %.1f%%, want within 10 points", limit, duty)
		}
		if acc := (busy[i] + slept[i]).Seconds() / wall[i].Seconds(); acc < 0.8 || acc > 1.2 {
			t.Errorf("limit %.0f%%: busy + throttled is %.2f of the wall time; the client did something else", limit, acc)
		}
	}
	if c := pct(cpu[1], wall[1]); c > 60 {
		t.Errorf("CPU share %.1f%% at limit 50", c)
	} else if full := pct(cpu[0], wall[0]); full >= 90 && (c < 40) {
		t.Errorf("uncontended machine (%.1f%% at limit 100) but CPU share %.1f%% at limit 50, want 50 ± 10", full, c)
	}
}

// TestDiskCapRefusesWorkUnit: with a 16 MB disk cap the client refuses a work unit
// whose kylberg6 images (about 22 MB of training images, each 576x576) do not fit in the
// image cache left under the cap, says so in its status, keeps its state directory
// under the cap, and tells the server how much room it has.
func TestDiskCapRefusesWorkUnit(t *testing.T) {
	src := shareddata.Path(t, "kylberg6")
	ftp := testgrid.StartFTP(t)
	m := ftp.Upload(t, testgrid.Subset(t, src, "kyl", 6, 20))
	srv := startFake(t)
	wu := workUnit(t, srv, ftp, m, 3, 1000)
	wu.FragmentSize = 256
	b, _ := configs.Model("tcnn-small")
	s, _ := spec.Parse(b)
	r, err := s.Resolve(len(m.Classes), 256)
	if err != nil {
		t.Fatal(err)
	}
	model, _ := nn.New(r, 1)
	base, _ := safetensors.Marshal(model.Params(), safetensors.F32, nil)
	wu.BaseModel = srv.AddBlob(base)
	srv.QueueWork(wu)
	dir := attach(t, srv.URL(), fakeserver.AccountKey)
	p := run(t, dir, "--max-disk-mb", "16")
	waitFor(t, "the refusal", func() bool {
		st, err := tryStatus(t, dir)
		return err == nil && strings.Contains(st.LastError, "does not fit")
	})
	if err := p.Stop(30 * time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
	var size int64
	filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			fi, _ := d.Info()
			size += fi.Size()
		}
		return nil
	})
	if size > 16<<20 {
		t.Errorf("state dir holds %d bytes, over the 16 MB cap", size)
	}
	if ups := srv.UploadsOf(wu.ID); len(ups) != 0 {
		t.Errorf("uploaded a refused work unit")
	}
	srv.Snapshot(func(s *fakeserver.Server) {
		if len(s.WorkRequests) == 0 || s.WorkRequests[0].FreeDiskBytes > 16<<20 {
			t.Errorf("work requests %+v: want free disk at most 16 MB", s.WorkRequests)
		}
	})
	t.Logf("state dir after the refusal: %d bytes", size)
}
