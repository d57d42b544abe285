package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/texgrid/texgrid/dataset-ftp/manifest"
	"github.com/texgrid/texgrid/project-server/client"
	"github.com/texgrid/texgrid/project-server/internal/store"
	"github.com/texgrid/texgrid/project-server/internal/weights"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/data"
	"github.com/texgrid/texgrid/trainer/poll"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// proc is the real project-server binary under test.
type proc struct {
	t       *testing.T
	bin     string
	args    []string
	addr    string
	cmd     *exec.Cmd
	log     *os.File
	started int
}

func (p *proc) start() {
	p.t.Helper()
	p.cmd = exec.Command(p.bin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.started++
	poll.For(p.t, 20*time.Second, "the server to come up (log "+p.log.Name()+")", func() error {
		resp, err := http.Get("http://" + p.addr + protocol.APIPrefix + "/status")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	})
}

func (p *proc) kill() {
	p.cmd.Process.Kill() // SIGKILL
	p.cmd.Wait()
}

func (p *proc) stop() {
	p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		p.kill()
	}
}

func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		t.Fatalf("%s %v: %v", bin, args, err)
	}
	return strings.TrimSpace(string(out))
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func writeManifest(t *testing.T, root string) {
	m := &manifest.Manifest{Dataset: "tex", TestFraction: 0.2, Created: time.Unix(0, 0).UTC()}
	for _, cls := range []string{"a", "b"} {
		for i := 0; i < 5; i++ {
			name := fmt.Sprintf("%d.png", i)
			sum := sha256.Sum256([]byte(cls + name))
			m.Images = append(m.Images, manifest.Image{Path: cls + "/" + name, Class: cls, Size: 1,
				SHA256: hex.EncodeToString(sum[:]), Width: 32, Height: 32, Split: data.SplitOf(cls, name, 0.2)})
		}
	}
	m.Finish()
	os.MkdirAll(filepath.Join(root, "tex"), 0o755)
	if err := os.WriteFile(filepath.Join(root, "tex", manifest.FileName), m.Encode(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// hostClient drives one simulated volunteer; every call is retried until the server
// gives a definite answer, so a kill between commit and reply shows up as a replay.
type hostClient struct {
	addr  string
	token string
	hc    *http.Client
}

var errDown = errors.New("server down")

func (h *hostClient) call(method, path string, body []byte, hdr map[string]string, out any) (int, []byte, error) {
	req, _ := http.NewRequest(method, "http://"+h.addr+path, bytes.NewReader(body))
	req.Header.Set(protocol.HeaderVersion, strconv.Itoa(protocol.Version))
	if h.token != "" {
		req.Header.Set("Authorization", "Bearer "+h.token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := h.hc.Do(req)
	if err != nil {
		return 0, nil, errDown
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, errDown
	}
	if resp.StatusCode >= 500 {
		return resp.StatusCode, b, errDown
	}
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, b, err
		}
	}
	return resp.StatusCode, b, nil
}

func (h *hostClient) retry(ctx context.Context, method, path string, body []byte, hdr map[string]string, out any) (int, []byte, error) {
	for {
		code, b, err := h.call(method, path, body, hdr, out)
		if !errors.Is(err, errDown) {
			return code, b, err
		}
		if ctx.Err() != nil {
			return 0, nil, ctx.Err()
		}
		time.Sleep(20 * time.Millisecond) // the simulated volunteer's retry pause, as a client backs off
	}
}

// untilAnswered repeats a researcher API call while the server is down (no answer, or
// a 5xx), as hostClient.retry does for the volunteers' calls.
func untilAnswered(ctx context.Context, call func() error) error {
	for {
		err := call()
		if st := client.StatusOf(err); err == nil || (st != 0 && st < 500) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(20 * time.Millisecond) // the researcher's retry pause
	}
}

func resolve(t *testing.T, wu *protocol.WorkUnit) []spec.Param {
	sp, err := spec.Parse(wu.ModelSpec)
	if err != nil {
		t.Fatal(err)
	}
	r, err := sp.Resolve(len(wu.Classes), wu.FragmentSize)
	if err != nil {
		t.Fatal(err)
	}
	return r.Params
}

// deltaFor is the deterministic delta a host sends for a work unit.
func deltaFor(ps []spec.Param, wuID int64) []tensor.Named {
	rng := rand.New(rand.NewPCG(uint64(wuID), 99))
	out := make([]tensor.Named, len(ps))
	for i, p := range ps {
		tt := tensor.New(p.Shape...)
		for j := range tt.Data {
			tt.Data[j] = float32(0.01 * rng.NormFloat64())
		}
		out[i] = tensor.Named{Name: p.Name, T: tt}
	}
	return out
}

// TestKill9 builds the real binary, drives a campaign with four simulated volunteers
// over HTTP and SIGKILLs the server at random moments (at least 10 times), restarting it
// each time. The campaign must finish; every result acknowledged as accepted must be
// merged, exactly once, and nothing else: each global model must equal the previous one
// plus the mean of exactly the deltas the database lists as accepted for that round.
func TestKill9(t *testing.T) { kill9(t, protocol.ModeSync) }

// TestKill9Async is TestKill9 on an asynchronous campaign (K = 3): each version must
// equal the previous one plus the staleness-weighted mean of exactly the deltas
// acknowledged as accepted into its buffer, each with weight (1 + tau)^-0.5.
func TestKill9Async(t *testing.T) { kill9(t, protocol.ModeAsync) }

func kill9(t *testing.T, mode string) {
	if testing.Short() {
		t.Skip("builds and kills the real binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "project-server")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	dataDir, dsRoot := filepath.Join(dir, "data"), filepath.Join(dir, "datasets")
	writeManifest(t, dsRoot)
	common := []string{"--data-dir", dataDir, "--models-dir", "testdata/models", "--dataset-dir", dsRoot}
	researcher := run(t, bin, append([]string{"researcher", "add", "--name", "r"}, common...)...)
	accountKey := run(t, bin, append([]string{"account", "add", "--name", "v"}, common...)...)
	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	addr := freeAddr(t)
	p := &proc{t: t, bin: bin, addr: addr, log: logf, args: append([]string{"serve", "--addr", addr, "--tick", "200ms"}, common...)}
	p.start()
	defer func() {
		if p.cmd.ProcessState == nil {
			p.kill()
		}
	}()

	const rounds, wus = 60, 4
	rc := client.New("http://"+addr, strings.TrimSpace(researcher), &http.Client{Timeout: 5 * time.Second})
	// A budget for a machine busy with other tests (about 5 s on a quiet one); the
	// campaign ends as soon as it is done.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cs := protocol.CampaignSpec{Name: "kill", Dataset: "tex", Model: "tiny", FragmentSize: 16,
		FragmentsMin: 10, FragmentsMax: 10, Quorum: 0.75, WorkUnitsPerRound: wus, Rounds: rounds, Seed: 42, Start: true}
	if mode == protocol.ModeAsync {
		cs.Mode, cs.BufferSize, cs.MaxStaleness = mode, 3, 1000
	}
	var camp protocol.Campaign
	if err := untilAnswered(ctx, func() (err error) { camp, err = rc.CreateCampaign(ctx, cs); return err }); err != nil {
		t.Fatalf("create campaign: %v", err)
	}

	var (
		mu       sync.Mutex
		accepted = map[int64]int{} // work unit -> round (async: version) whose buffer took it, acknowledged accepted
		late     = map[int64]bool{}
		params   []spec.Param
	)
	var wg sync.WaitGroup
	errc := make(chan error, wus)
	tenKills := make(chan struct{}) // closed at the tenth kill
	for h := 0; h < wus; h++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hc := &hostClient{addr: addr, hc: &http.Client{Timeout: 5 * time.Second}}
			body, _ := json.Marshal(protocol.RegisterHostRequest{AccountKey: accountKey, Name: fmt.Sprint("h", h), GFLOPS: 1})
			var reg protocol.RegisterHostResponse
			if code, b, err := hc.retry(ctx, "POST", protocol.APIPrefix+"/hosts", body, nil, &reg); err != nil || code != 201 {
				errc <- fmt.Errorf("register: %d %s %v", code, b, err)
				return
			}
			hc.token = reg.Token
			for ctx.Err() == nil {
				var wr protocol.WorkResponse
				code, b, err := hc.retry(ctx, "POST", protocol.APIPrefix+"/work", []byte(`{"threads":1}`), nil, &wr)
				if err != nil || code != 200 {
					errc <- fmt.Errorf("work: %d %s %v", code, b, err)
					return
				}
				if wr.WorkUnit == nil {
					var c protocol.Campaign
					untilAnswered(ctx, func() (err error) { c, err = rc.Campaign(ctx, camp.ID); return err })
					if c.State == protocol.StateDone {
						return
					}
					time.Sleep(10 * time.Millisecond) // polling for work, as a volunteer does
					continue
				}
				wu := wr.WorkUnit
				mu.Lock()
				if params == nil {
					params = resolve(t, wu)
				}
				ps := params
				mu.Unlock()
				time.Sleep(time.Duration(2+rand.IntN(10)) * time.Millisecond) // "training": spreads the requests over time
				if wu.Round >= rounds/2 {
					// The campaign may not end before the tenth kill, however fast
					// this machine runs it: results on the second half's rounds (or
					// model versions) wait for it.
					select {
					case <-tenKills:
					case <-ctx.Done():
					}
				}
				var buf bytes.Buffer
				weights.Encode(&buf, deltaFor(ps, wu.ID), weights.F32, nil)
				sum := sha256.Sum256(buf.Bytes())
				hdr := map[string]string{protocol.HeaderSHA256: hex.EncodeToString(sum[:]), protocol.HeaderSamples: "10"}
				var res protocol.ResultResponse
				code, b, err = hc.retry(ctx, "PUT", protocol.WorkPath(wu.ID, "result"), buf.Bytes(), hdr, &res)
				switch {
				case err != nil:
					errc <- fmt.Errorf("result: %v", err)
					return
				case code == 200 && res.Outcome == protocol.OutcomeAccepted:
					mu.Lock()
					accepted[wu.ID] = wu.Round
					if mode == protocol.ModeAsync {
						accepted[wu.ID] = res.Version
					}
					mu.Unlock()
				case code == 409 && (strings.Contains(string(b), `"late"`) || strings.Contains(string(b), `"stale"`)):
					mu.Lock()
					late[wu.ID] = true
					mu.Unlock()
				default:
					errc <- fmt.Errorf("result of unit %d: HTTP %d %s", wu.ID, code, b)
					return
				}
			}
		}()
	}
	// The killer: SIGKILL at random moments, then restart, at least 10 times.
	kills := 0
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for running := true; running; {
		select {
		case <-done:
			running = false
		case <-time.After(time.Duration(20+rand.IntN(130)) * time.Millisecond):
			if kills < 20 {
				p.kill()
				kills++
				if kills == 10 {
					close(tenKills)
				}
				p.start()
			}
		}
	}
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	if kills < 10 {
		t.Fatalf("the campaign finished after only %d kills; make it longer", kills)
	}
	p.stop()

	// Check the invariants in the database and blobs the server left.
	db, err := store.Open(context.Background(), filepath.Join(dataDir, "texgrid.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var c store.Campaign
	if err := db.Take(&c, camp.ID).Error; err != nil {
		t.Fatal(err)
	}
	if c.State != protocol.StateDone || c.Round != rounds {
		t.Fatalf("campaign ended %s at round %d, want done at %d", c.State, c.Round, rounds)
	}
	var rs []store.Round
	db.Where("campaign_id = ?", c.ID).Order("round").Find(&rs)
	byRound := map[int][]int64{}
	for wu, r := range accepted {
		byRound[r] = append(byRound[r], wu)
	}
	for _, r := range rs {
		var res []store.Result
		db.Where("campaign_id = ? AND buffer_round = ? AND outcome = ?", c.ID, r.Round, protocol.OutcomeAccepted).Order("id").Find(&res)
		if len(res) != r.Needed || r.Accepted != r.Needed || len(byRound[r.Round]) != r.Needed {
			t.Fatalf("round %d: %d accepted rows, counter %d, %d acknowledged, needed %d", r.Round, len(res), r.Accepted, len(byRound[r.Round]), r.Needed)
		}
		base := readModel(t, dataDir, r.BaseModel)
		got := readModel(t, dataDir, r.ResultModel)
		sums := map[string][]float64{}
		total := 0.0
		for _, x := range res {
			if v, ok := accepted[x.WorkUnitID]; !ok || v != r.Round {
				t.Fatalf("round %d merged unit %d, which was never acknowledged as accepted into it", r.Round, x.WorkUnitID)
			}
			wantW := 1.0
			if mode == protocol.ModeAsync {
				wantW = math.Pow(1+float64(x.Staleness), -0.5)
			}
			if x.Staleness != x.BufferRound-x.Round || math.Abs(x.Weight-wantW) > 1e-12 {
				t.Fatalf("round %d: unit %d of round %d has staleness %d and weight %g, want %d and %g",
					r.Round, x.WorkUnitID, x.Round, x.Staleness, x.Weight, x.BufferRound-x.Round, wantW)
			}
			total += x.Weight
			for _, d := range deltaFor(params, x.WorkUnitID) {
				s := sums[d.Name]
				if s == nil {
					s = make([]float64, len(d.T.Data))
					sums[d.Name] = s
				}
				for i, v := range d.T.Data {
					s[i] += x.Weight * float64(v)
				}
			}
		}
		for name, w := range base {
			for i, v := range w.Data {
				want := float32(float64(v) + sums[name][i]/total)
				if math.Float32bits(want) != math.Float32bits(got[name].Data[i]) {
					t.Fatalf("round %d: %s[%d] = %v, want W + mean(accepted) = %v", r.Round, name, i, got[name].Data[i], want)
				}
			}
		}
	}
	t.Logf("%s: %d kills, %d rounds, %d accepted, %d late or stale", mode, kills, len(rs), len(accepted), len(late))
}

func readModel(t *testing.T, dataDir, sha string) map[string]*tensor.Tensor {
	f, err := os.Open(filepath.Join(dataDir, "blobs", sha[:2], sha))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ts, _, err := weights.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]*tensor.Tensor{}
	for _, n := range ts {
		m[n.Name] = n.T
	}
	return m
}
