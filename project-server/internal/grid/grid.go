// Package grid starts a whole texgrid on 127.0.0.1 from the built binaries: a
// dataset-ftp server that receives a dataset through the scripted-upload path (lftp,
// curl or `dataset-ftp upload`), a project server on SQLite, and volunteer clients with
// their own state directories. `make demo` and the end-to-end and fault tests drive it.
// It talks to the parts only as their users do (command lines, FTP, the HTTP protocol),
// so what it shows is what a deployment does.
package grid

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/texgrid/texgrid/dataset-ftp/manifest"
	"github.com/texgrid/texgrid/project-server/client"
	"github.com/texgrid/texgrid/project-server/protocol"
)

// Upload methods: the ways a researcher's script puts a dataset on the FTP store.
const (
	UploadLFTP       = "lftp"        // lftp -e "mirror -R DIR DATASET"
	UploadCurl       = "curl"        // curl -T per file, --ftp-create-dirs
	UploadDatasetFTP = "dataset-ftp" // dataset-ftp upload, the project's own client
)

// Options configures a grid. Zero values take the documented defaults.
type Options struct {
	BinDir    string    // holds dataset-ftp, project-server, volunteer-client, trainer
	WorkDir   string    // every file the grid writes: FTP root, server data, volunteer state, logs
	ModelsDir string    // extra model specs for the server; the shipped ones are built in
	Upload    string    // UploadLFTP (default), UploadCurl or UploadDatasetFTP
	Log       io.Writer // progress lines; nil = discard
	// ServerEnv and VolunteerEnv are added to those processes' environments.
	ServerEnv    []string
	VolunteerEnv []string
	// ServerTick is how often the server checks deadlines (default 1s, so the demo and
	// tests see reissues quickly).
	ServerTick time.Duration
}

// Credentials the grid creates for itself. They exist only inside WorkDir.
const (
	uploaderUser = "uploader"
	readerUser   = "volunteer"
	serverUser   = "project"
)

// Grid is a running texgrid: one FTP server, one project server, any number of
// volunteers. Close stops them all.
type Grid struct {
	opt Options
	log io.Writer

	FTPAddr   string
	ServerURL string
	Token     string // researcher API token
	// Researcher and Password sign in to the web UI at ServerURL.
	Researcher string
	Password   string
	// API calls the researcher API with Token.
	API        *client.Client
	AccountKey string // volunteer account key

	ftpRoot   string
	passwords map[string]string

	FTP        *Proc
	Server     *Proc
	Volunteers []*Proc
}

// Start launches the FTP server and the project server, and creates a researcher and a
// volunteer account. Datasets are added with UploadDataset, volunteers with AddVolunteer.
func Start(ctx context.Context, opt Options) (*Grid, error) {
	if opt.Upload == "" {
		opt.Upload = UploadLFTP
	}
	if opt.ServerTick == 0 {
		opt.ServerTick = time.Second
	}
	if opt.Log == nil {
		opt.Log = io.Discard
	}
	for _, b := range []string{"dataset-ftp", "project-server", "volunteer-client"} {
		if _, err := os.Stat(filepath.Join(opt.BinDir, b)); err != nil {
			return nil, fmt.Errorf("grid: binary %s not found in %s (run `make build`): %w", b, opt.BinDir, err)
		}
	}
	for _, d := range []string{"ftp-root", "server", "volunteers", "logs"} {
		if err := os.MkdirAll(filepath.Join(opt.WorkDir, d), 0o755); err != nil {
			return nil, fmt.Errorf("grid: %w", err)
		}
	}
	g := &Grid{opt: opt, log: opt.Log, ftpRoot: filepath.Join(opt.WorkDir, "ftp-root"),
		passwords: map[string]string{}}
	if err := g.startFTP(ctx); err != nil {
		g.Close()
		return nil, err
	}
	if err := g.startServer(ctx); err != nil {
		g.Close()
		return nil, err
	}
	return g, nil
}

func (g *Grid) logf(format string, args ...any) {
	fmt.Fprintf(g.log, format+"\n", args...)
}

// freePort asks the kernel for a free loopback port. The port is released before the
// child binds it, which is racy in principle and fine on a test machine.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (g *Grid) startFTP(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	g.FTPAddr = fmt.Sprintf("127.0.0.1:%d", port)
	type account struct {
		Name         string   `json:"name"`
		Role         string   `json:"role"`
		PasswordHash string   `json:"password_hash"`
		Datasets     []string `json:"datasets,omitempty"`
	}
	var accounts []account
	for _, a := range []struct{ name, role string }{{uploaderUser, "uploader"}, {readerUser, "reader"}, {serverUser, "reader"}} {
		pw := randomSecret()
		g.passwords[a.name] = pw
		// MinCost keeps the demo's start-up quick; real deployments use `dataset-ftp passwd`.
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			return err
		}
		acc := account{Name: a.name, Role: a.role, PasswordHash: string(h)}
		if a.role == "uploader" {
			acc.Datasets = []string{"*"}
		}
		accounts = append(accounts, acc)
	}
	cfg := map[string]any{
		"root": g.ftpRoot, "listen": g.FTPAddr, "index_delay": "1s", "accounts": accounts,
	}
	cfgPath := filepath.Join(g.opt.WorkDir, "dataset-ftp.json")
	if err := writeJSON(cfgPath, cfg, 0o600); err != nil {
		return err
	}
	g.FTP = &Proc{Name: "dataset-ftp", Path: filepath.Join(g.opt.BinDir, "dataset-ftp"),
		Args: []string{"serve", "--config", cfgPath}, LogPath: filepath.Join(g.opt.WorkDir, "logs", "dataset-ftp.log")}
	if err := g.FTP.Start(); err != nil {
		return err
	}
	if err := waitTCP(ctx, g.FTPAddr, g.FTP, 20*time.Second); err != nil {
		return err
	}
	g.logf("dataset-ftp   listening on %s (root %s)", g.FTPAddr, g.ftpRoot)
	return nil
}

func (g *Grid) serverArgs(cmd ...string) []string {
	dataDir := filepath.Join(g.opt.WorkDir, "server")
	return append(cmd, "--data-dir", dataDir)
}

func (g *Grid) startServer(ctx context.Context) error {
	bin := filepath.Join(g.opt.BinDir, "project-server")
	var err error
	g.Researcher = "demo-researcher"
	if g.Token, g.Password, err = g.AddResearcher(ctx, g.Researcher, false); err != nil {
		return err
	}
	if g.AccountKey, err = runOut(ctx, bin, g.serverArgs("account", "add", "--name", "demo-volunteers")...); err != nil {
		return fmt.Errorf("grid: create volunteer account: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	g.ServerURL = "http://" + addr
	g.API = client.New(g.ServerURL, g.Token, &http.Client{Timeout: 30 * time.Second})
	args := g.serverArgs("serve", "--addr", addr, "--ftp-addr", g.FTPAddr, "--ftp-user", serverUser,
		"--ftp-password", g.passwords[serverUser], "--tick", g.opt.ServerTick.String())
	if g.opt.ModelsDir != "" {
		args = append(args, "--models-dir", g.opt.ModelsDir)
	}
	g.Server = &Proc{Name: "project-server", Path: bin, Args: args,
		Env:     g.opt.ServerEnv,
		LogPath: filepath.Join(g.opt.WorkDir, "logs", "project-server.log")}
	return g.StartServer(ctx)
}

// AddResearcher creates a researcher with `project-server researcher add` and returns
// its API token and web sign-in password. It may run while the server does.
func (g *Grid) AddResearcher(ctx context.Context, name string, admin bool) (token, password string, err error) {
	password = "pw-" + randomSecret()
	args := g.serverArgs("researcher", "add", "--name", name, "--password-env", "TEXGRID_NEW_PASSWORD")
	if admin {
		args = append(args, "--admin")
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, filepath.Join(g.opt.BinDir, "project-server"), args...)
	cmd.Env = append(os.Environ(), "TEXGRID_NEW_PASSWORD="+password)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", "", fmt.Errorf("grid: create researcher %s: %w: %s", name, err, stderr.String())
	}
	return strings.TrimSpace(string(out)), password, nil
}

// StartServer (re)starts the project server and waits until it answers.
func (g *Grid) StartServer(ctx context.Context) error {
	if err := g.Server.Start(); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := g.API.Status(ctx)
		if err == nil {
			g.logf("project-server listening on %s (protocol %d)", g.ServerURL, st.ProtocolVersion)
			return nil
		}
		if !g.Server.Running() || time.Now().After(deadline) {
			return fmt.Errorf("grid: project server did not come up: %v\n%s", err, g.Server.Tail(2000))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// UploadDataset puts a <class>/<image> folder on the FTP store as dataset name with the
// configured scripted-upload method, then waits until the server has indexed every file
// (as an image or into quarantine) and returns the manifest.
func (g *Grid) UploadDataset(ctx context.Context, dir, name string) (*manifest.Manifest, error) {
	files, err := datasetFiles(dir)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	pw := g.passwords[uploaderUser]
	host, port, _ := net.SplitHostPort(g.FTPAddr)
	var cmd *exec.Cmd
	switch g.opt.Upload {
	case UploadLFTP:
		script := fmt.Sprintf("set ftp:ssl-allow no; set net:max-retries 3; mirror -R --no-perms --parallel=2 %s %s; quit",
			lftpQuote(dir), lftpQuote(name))
		cmd = exec.CommandContext(ctx, "lftp", "-u", uploaderUser+","+pw, "-p", port, "-e", script, host)
	case UploadCurl:
		return g.uploadCurl(ctx, dir, name, files, start)
	case UploadDatasetFTP:
		cmd = exec.CommandContext(ctx, filepath.Join(g.opt.BinDir, "dataset-ftp"), "upload", "-q",
			"--addr", g.FTPAddr, "--user", uploaderUser, "--dataset", name, dir)
		cmd.Env = append(os.Environ(), "DATASET_FTP_PASSWORD="+pw)
	default:
		return nil, fmt.Errorf("grid: unknown upload method %q", g.opt.Upload)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("grid: %s upload of %s: %w\n%s", g.opt.Upload, dir, err, out)
	}
	return g.waitManifest(ctx, name, files, start)
}

func (g *Grid) uploadCurl(ctx context.Context, dir, name string, files []string, start time.Time) (*manifest.Manifest, error) {
	for _, rel := range files {
		url := fmt.Sprintf("ftp://%s/%s/%s", g.FTPAddr, name, filepath.ToSlash(rel))
		cmd := exec.CommandContext(ctx, "curl", "-sS", "--ftp-create-dirs", "-u", uploaderUser+":"+g.passwords[uploaderUser],
			"-T", filepath.Join(dir, rel), url)
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("grid: curl upload of %s: %w\n%s", rel, err, out)
		}
	}
	return g.waitManifest(ctx, name, files, start)
}

// waitManifest polls the dataset's manifest until every uploaded <class>/<image> file is
// in it, as an image or in quarantine. Other files an upload carried (a checksum list
// at the dataset's top, say) are quarantined by the server and do not matter here.
func (g *Grid) waitManifest(ctx context.Context, name string, files []string, start time.Time) (*manifest.Manifest, error) {
	path := filepath.Join(g.ftpRoot, name, manifest.FileName)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if b, err := os.ReadFile(path); err == nil {
			if m, err := manifest.Parse(b); err == nil && accountsFor(m, files) {
				g.logf("dataset %s: %d images in %d classes indexed, %d quarantined (upload + index %s)",
					name, len(m.Images), len(m.Classes), len(m.Quarantined), time.Since(start).Round(time.Millisecond))
				return m, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("grid: dataset %s was not indexed within 2 minutes\n%s", name, g.FTP.Tail(2000))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// accountsFor reports whether every file (a <class>/<image> path relative to the
// dataset) is listed in m as an image or as quarantined.
func accountsFor(m *manifest.Manifest, files []string) bool {
	seen := make(map[string]bool, len(m.Images)+len(m.Quarantined))
	for _, im := range m.Images {
		seen[im.Path] = true
	}
	for _, q := range m.Quarantined {
		seen[q.Path] = true
	}
	for _, f := range files {
		if !seen[filepath.ToSlash(f)] {
			return false
		}
	}
	return true
}

// datasetFiles lists the <class>/<image> files under dir, relative to it.
func datasetFiles(dir string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() || strings.HasPrefix(d.Name(), ".") || strings.Count(filepath.ToSlash(rel), "/") != 1 {
			return nil
		}
		out = append(out, rel)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("grid: dataset %s: %w", dir, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("grid: dataset %s has no <class>/<image> files", dir)
	}
	return out, nil
}

// CreateCampaign posts a campaign spec through the researcher API.
func (g *Grid) CreateCampaign(ctx context.Context, spec protocol.CampaignSpec) (protocol.Campaign, error) {
	return g.API.CreateCampaign(ctx, spec)
}

// Campaign returns a campaign's state.
func (g *Grid) Campaign(ctx context.Context, id int64) (protocol.Campaign, error) {
	return g.API.Campaign(ctx, id)
}

// Rounds returns a campaign's rounds.
func (g *Grid) Rounds(ctx context.Context, id int64) ([]protocol.RoundInfo, error) {
	return g.API.Rounds(ctx, id)
}

// Blob downloads a content-addressed blob (a model version) to path.
func (g *Grid) Blob(ctx context.Context, sha, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("grid: blob %s: %w", sha, err)
	}
	if _, err := g.API.Blob(ctx, sha, f); err != nil {
		f.Close()
		return fmt.Errorf("grid: blob %s: %w", sha, err)
	}
	return f.Close()
}

// VolunteerOptions configures one volunteer process.
type VolunteerOptions struct {
	Threads           int      // --max-threads (default 1)
	CheckpointSeconds int      // --checkpoint-seconds (default 60)
	HeartbeatSeconds  int      // --heartbeat-seconds (default 10)
	ServerURL         string   // default: the grid's server (a fault proxy goes here)
	Extra             []string // more run flags
	Env               []string
}

// AddVolunteer attaches a new volunteer with its own state directory and starts it.
func (g *Grid) AddVolunteer(ctx context.Context, o VolunteerOptions) (*Proc, error) {
	i := len(g.Volunteers) + 1
	if o.Threads == 0 {
		o.Threads = 1
	}
	if o.CheckpointSeconds == 0 {
		o.CheckpointSeconds = 60
	}
	if o.HeartbeatSeconds == 0 {
		o.HeartbeatSeconds = 10
	}
	if o.ServerURL == "" {
		o.ServerURL = g.ServerURL
	}
	state := filepath.Join(g.opt.WorkDir, "volunteers", fmt.Sprintf("v%d", i))
	bin := filepath.Join(g.opt.BinDir, "volunteer-client")
	name := fmt.Sprintf("volunteer-%d", i)
	attach := exec.CommandContext(ctx, bin, "attach", "--server", o.ServerURL, "--account-key", g.AccountKey,
		"--state-dir", state, "--name", name, "--bench", "300ms")
	attach.Env = append(os.Environ(), append(g.opt.VolunteerEnv, o.Env...)...)
	if out, err := attach.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("grid: attach %s: %w\n%s", name, err, out)
	}
	args := append([]string{"run", "--state-dir", state, "--headless", "--log-format", "json",
		"--max-threads", strconv.Itoa(o.Threads), "--checkpoint-seconds", strconv.Itoa(o.CheckpointSeconds),
		"--heartbeat-seconds", strconv.Itoa(o.HeartbeatSeconds), "--retry-base", "200ms", "--max-retry-delay", "5"},
		o.Extra...)
	p := &Proc{Name: name, Path: bin, Args: args, Env: append(append([]string{}, g.opt.VolunteerEnv...), o.Env...),
		LogPath: filepath.Join(g.opt.WorkDir, "logs", name+".log")}
	if err := p.Start(); err != nil {
		return nil, err
	}
	g.Volunteers = append(g.Volunteers, p)
	return p, nil
}

// WaitCampaign polls until the campaign is done or stopped and every closed round has
// been evaluated, calling onRound once for each round when its metrics are in.
func (g *Grid) WaitCampaign(ctx context.Context, id int64, timeout time.Duration, onRound func(protocol.RoundInfo)) (protocol.Campaign, error) {
	reported := map[int]bool{}
	deadline := time.Now().Add(timeout)
	for {
		c, cerr := g.Campaign(ctx, id)
		rs, rerr := g.Rounds(ctx, id)
		if cerr == nil && rerr == nil {
			finished := c.State == protocol.StateDone || c.State == protocol.StateStopped
			for _, r := range rs {
				if r.State == "closed" && !reported[r.Round] && r.Metrics != nil {
					reported[r.Round] = true
					if onRound != nil {
						onRound(r)
					}
				}
			}
			if finished && allEvaluated(rs) {
				return c, nil
			}
		}
		if time.Now().After(deadline) {
			return protocol.Campaign{}, fmt.Errorf("grid: campaign %d not done after %s (state %q, campaign err %v, rounds err %v)",
				id, timeout, c.State, cerr, rerr)
		}
		select {
		case <-ctx.Done():
			return protocol.Campaign{}, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func allEvaluated(rs []protocol.RoundInfo) bool {
	for _, r := range rs {
		if r.State == "closed" && r.Metrics == nil {
			return false
		}
	}
	return true
}

// Close stops every process: volunteers with SIGTERM (they checkpoint), then the
// servers.
func (g *Grid) Close() error {
	var errs []error
	for _, v := range g.Volunteers {
		errs = append(errs, v.Stop(20*time.Second))
	}
	if g.Server != nil {
		errs = append(errs, g.Server.Stop(20*time.Second))
	}
	if g.FTP != nil {
		errs = append(errs, g.FTP.Stop(10*time.Second))
	}
	return errors.Join(errs...)
}

func waitTCP(ctx context.Context, addr string, p *Proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if !p.Running() || time.Now().After(deadline) {
			return fmt.Errorf("grid: %s did not listen on %s: %v\n%s", p.Name, addr, err, p.Tail(2000))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// runOut runs a command and returns its trimmed standard output.
func runOut(ctx context.Context, bin string, args ...string) (string, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// randomSecret returns 128 random bits as hex.
func randomSecret() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func writeJSON(path string, v any, mode os.FileMode) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, mode)
}

// lftpQuote quotes a word for lftp's command language.
func lftpQuote(s string) string {
	return `"` + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `"`, `\"`) + `"`
}
