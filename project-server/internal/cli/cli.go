// Package cli is the project-server command line: `serve` runs the server; `account`
// and `researcher` create credentials directly in the database; `campaign` drives a
// running server through the same JSON API the web UI uses.
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/texgrid/texgrid/project-server/client"
	"github.com/texgrid/texgrid/project-server/internal/auth"
	"github.com/texgrid/texgrid/project-server/internal/scheduler"
	"github.com/texgrid/texgrid/project-server/internal/server"
	"github.com/texgrid/texgrid/project-server/internal/store"
	"github.com/texgrid/texgrid/project-server/protocol"
)

const usage = `project-server: texgrid's scheduler and parameter server.

Usage:
  project-server serve [flags]                    run the server (see serve -h)
  project-server account add --name N             create a volunteer account; prints its account key
  project-server researcher add --name N [--admin] [--password-env VAR]
                                                  create a researcher; prints its API token on
                                                  stdout and its web sign-in password (a new
                                                  random one, or $VAR's) on stderr
  project-server researcher password --id ID [--password-env VAR]
                                                  set a researcher's web sign-in password
  project-server campaign create [flags]          create a campaign (see campaign create -h)
  project-server campaign list|show|start|pause|resume|stop|rounds [ID]
  project-server campaign model ID -o FILE [--format onnx|safetensors] [--round R]
                                                  download a model (ONNX exported with the class names)
  project-server campaign classify ID IMAGE       classify an image with the campaign's newest model

account and researcher open the database directly (--data-dir, --db, as for serve).
campaign talks to a running server: --server URL (default $TEXGRID_SERVER or
http://127.0.0.1:8480) and --token TOKEN (default $TEXGRID_TOKEN, a researcher token).
`

// Run executes one command line and returns the process exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(ctx, args[1:], stderr)
	case "account", "researcher":
		err = credential(ctx, args[0], args[1:], stdout, stderr)
	case "campaign":
		err = campaign(ctx, args[1:], stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "project-server: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "project-server %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// serverFlags registers the flags that locate and configure the server.
func serverFlags(fs *flag.FlagSet, cfg *server.Config, configFile *string) {
	fs.StringVar(configFile, "config", "", "JSON config file (see configs/project-server.example.json); flags override it")
	fs.StringVar(&cfg.Addr, "addr", "", "listen address (default 127.0.0.1:8480)")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "directory for model and delta blobs and the SQLite database (default ./project-data)")
	fs.StringVar(&cfg.DB, "db", "", "SQLite file or postgres:// DSN (default <data-dir>/texgrid.db)")
	fs.StringVar(&cfg.ModelsDir, "models-dir", "", "directory of extra model specs <name>.json (the shipped tcnn-small and tcnn3 are built in)")
	fs.StringVar(&cfg.DatasetDir, "dataset-dir", "", "read datasets from this local dataset-ftp root instead of over FTP")
	fs.StringVar(&cfg.FTPAddr, "ftp-addr", "", "dataset-ftp server host:port")
	fs.StringVar(&cfg.FTPUser, "ftp-user", "", "dataset-ftp read-only user")
	fs.StringVar(&cfg.FTPPassword, "ftp-password", "", "its password")
	fs.StringVar(&cfg.PublicFTPAddr, "public-ftp-addr", "", "dataset-ftp address told to volunteers (default --ftp-addr)")
}

// loadConfig merges defaults, the config file and the flags that were set.
func loadConfig(fs *flag.FlagSet, flags server.Config, file string) (server.Config, error) {
	var cfg server.Config
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return cfg, fmt.Errorf("config: %w", err)
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&cfg); err != nil {
			return cfg, fmt.Errorf("config %s: %w", file, err)
		}
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "addr":
			cfg.Addr = flags.Addr
		case "data-dir":
			cfg.DataDir = flags.DataDir
		case "db":
			cfg.DB = flags.DB
		case "models-dir":
			cfg.ModelsDir = flags.ModelsDir
		case "dataset-dir":
			cfg.DatasetDir = flags.DatasetDir
		case "ftp-addr":
			cfg.FTPAddr = flags.FTPAddr
		case "ftp-user":
			cfg.FTPUser = flags.FTPUser
		case "ftp-password":
			cfg.FTPPassword = flags.FTPPassword
		case "public-ftp-addr":
			cfg.PublicFTPAddr = flags.PublicFTPAddr
		}
	})
	cfg.Defaults()
	return cfg, nil
}

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var flags server.Config
	var file string
	serverFlags(fs, &flags, &file)
	tick := fs.Duration("tick", 5*time.Second, "how often work-unit and round deadlines are checked")
	logFormat := fs.String("log-format", "text", `log format on stderr: "text" or "json"`)
	logLevel := fs.String("log-level", "info", `least level logged: "debug" (every request with its id), "info", "warn" or "error"`)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(fs, flags, file)
	if err != nil {
		return err
	}
	cfg.TickInterval = server.Duration(*tick)
	cfg.Log = log
	cfg.Init = DefaultInit
	cfg.Engine = DefaultEngine
	if cfg.ModelsDir != "" {
		if _, err := os.Stat(cfg.ModelsDir); err != nil {
			return fmt.Errorf("models dir: %w", err)
		}
	}
	if cfg.DatasetDir == "" && cfg.FTPAddr == "" {
		cfg.Log.Warn("no dataset source: set --ftp-addr (or --dataset-dir); campaigns cannot be created")
	}
	srv, err := server.Open(ctx, cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		srv.Close()
		return fmt.Errorf("listen: %w", err)
	}
	return srv.Serve(ctx, ln)
}

func credential(ctx context.Context, kind string, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "add" && !(kind == "researcher" && args[0] == "password")) {
		if kind == "researcher" {
			return errors.New("usage: project-server researcher add --name NAME [--admin] [--password-env VAR] | researcher password --id ID [--password-env VAR]")
		}
		return fmt.Errorf("usage: project-server %s add --name NAME", kind)
	}
	sub := args[0]
	fs := flag.NewFlagSet(kind+" "+sub, flag.ContinueOnError)
	var flags server.Config
	var file string
	serverFlags(fs, &flags, &file)
	name := fs.String("name", "", "display name, and the researcher's sign-in name (required for add)")
	id := fs.Int64("id", 0, "researcher id (password)")
	admin := fs.Bool("admin", false, "researcher add: the researcher sees and acts on every campaign")
	pwEnv := fs.String("password-env", "", "read the sign-in password from this environment variable instead of making one")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if sub == "add" && *name == "" {
		return errors.New("--name is required")
	}
	if sub == "password" && *id <= 0 {
		return errors.New("--id is required (the number `researcher add` printed)")
	}
	password := ""
	if kind == "researcher" {
		if *pwEnv != "" {
			password = os.Getenv(*pwEnv)
			if err := auth.CheckPasswordRules(password); err != nil {
				return fmt.Errorf("password from $%s: %w", *pwEnv, err)
			}
		} else {
			var err error
			if password, err = auth.NewPassword(); err != nil {
				return err
			}
		}
	}
	cfg, err := loadConfig(fs, flags, file)
	if err != nil {
		return err
	}
	// Only the database: a running server owns the blob store and its recovery, and
	// this command may run next to it.
	if !store.IsPostgres(cfg.DB) {
		if err := os.MkdirAll(filepath.Dir(cfg.DB), 0o755); err != nil {
			return err
		}
	}
	db, err := store.Open(ctx, cfg.DB)
	if err != nil {
		return err
	}
	defer db.Close()
	people := &auth.People{DB: db}
	if sub == "password" {
		if err := people.SetPassword(ctx, *id, password); err != nil {
			return err
		}
		r, err := people.ResearcherByID(ctx, *id)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "researcher %d: sign in as %q with password %s\n", r.ID, r.Name, password)
		return nil
	}
	if kind == "researcher" {
		taken, err := people.NameTaken(ctx, *name)
		if err != nil {
			return err
		}
		if taken {
			return fmt.Errorf("a researcher named %q already signs in with a password; pick another name", *name)
		}
	}
	sched := scheduler.New(db, nil, scheduler.Config{Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	var secret string
	var newID int64
	if kind == "account" {
		newID, secret, err = sched.AddAccount(ctx, *name)
	} else {
		newID, secret, err = sched.AddResearcher(ctx, *name)
	}
	if err != nil {
		return err
	}
	if kind == "researcher" {
		if err := people.SetPassword(ctx, newID, password); err != nil {
			return fmt.Errorf("researcher %d created without a password: %w", newID, err)
		}
		if *admin {
			if err := people.SetRole(ctx, newID, auth.RoleAdmin); err != nil {
				return err
			}
		}
	}
	fmt.Fprintf(stderr, "%s %d %q created; its secret (shown once):\n", kind, newID, *name)
	fmt.Fprintln(stdout, secret)
	if kind == "researcher" {
		fmt.Fprintf(stderr, "web sign-in: name %q, password %s\n", *name, password)
	}
	return nil
}

func campaign(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: project-server campaign create|list|show|start|pause|resume|stop|rounds|model|classify [ID]")
	}
	sub := args[0]
	fs := flag.NewFlagSet("campaign "+sub, flag.ContinueOnError)
	srvURL := fs.String("server", envOr("TEXGRID_SERVER", "http://127.0.0.1:8480"), "project server URL")
	token := fs.String("token", os.Getenv("TEXGRID_TOKEN"), "researcher API token")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	var cs protocol.CampaignSpec
	var specFile string
	var wuDeadline, roundDeadline time.Duration
	var modelRound int
	var modelFormat, modelOut string
	if sub == "model" {
		fs.IntVar(&modelRound, "round", -1, "the round whose result model to fetch (default: the newest model)")
		fs.StringVar(&modelFormat, "format", protocol.FormatONNX, "onnx (exported by the server with the class names) or safetensors")
		fs.StringVar(&modelOut, "o", "", "output file (required)")
	}
	if sub == "create" {
		fs.StringVar(&specFile, "file", "", "campaign spec JSON file (protocol.CampaignSpec); flags override it")
		fs.StringVar(&cs.Name, "name", "", "campaign name")
		fs.StringVar(&cs.Dataset, "dataset", "", "dataset name on the dataset-ftp server")
		fs.StringVar(&cs.Model, "model", "", "model spec name (e.g. tcnn-small)")
		fs.IntVar(&cs.FragmentSize, "fragment-size", 0, "fragment side in pixels (default 256)")
		fs.IntVar(&cs.FragmentsMin, "fragments-min", 0, "fewest fragments per work unit (default 4500)")
		fs.IntVar(&cs.FragmentsMax, "fragments-max", 0, "most fragments per work unit (default 6000)")
		fs.IntVar(&cs.Hyper.Epochs, "epochs", 0, "epochs per work unit (default 2)")
		fs.IntVar(&cs.Hyper.BatchSize, "batch", 0, "batch size (default 32)")
		fs.Float64Var(&cs.Hyper.LearningRate, "lr", 0, "learning rate (default 0.01)")
		fs.Float64Var(&cs.Hyper.Momentum, "momentum", 0, "momentum (default 0.9)")
		fs.Float64Var(&cs.Hyper.LRDecay, "lr-decay", 0, "learning-rate factor per round in (0, 1]: round r trains at lr x lr-decay^r (default 1, constant)")
		fs.Float64Var(&cs.Quorum, "quorum", 0, "quorum fraction 0.75..0.90 (default 0.8)")
		fs.IntVar(&cs.WorkUnitsPerRound, "wus", 0, "work units per round (default 4)")
		fs.IntVar(&cs.Rounds, "rounds", 0, "rounds; in async mode, model versions (default 10)")
		fs.StringVar(&cs.Mode, "mode", "", "sync (quorum rounds, the default) or async (buffered versions)")
		fs.IntVar(&cs.BufferSize, "buffer-size", 0, "async: K, results per version (default 3)")
		fs.Float64Var(&cs.StalenessExponent, "staleness-exponent", 0, "async: a in the staleness weight (1+tau)^-a (default 0.5)")
		fs.IntVar(&cs.MaxStaleness, "max-staleness", 0, "async: results more versions behind are refused as stale (default 8)")
		fs.IntVar(&cs.EvalEvery, "eval-every", 0, "async: evaluate every E versions (default 1)")
		fs.StringVar(&cs.ServerOptimizer, "server-optimizer", "", "sgd (plain averaging, the default), momentum (FedAvgM) or adam (FedAdam)")
		fs.Float64Var(&cs.ServerLR, "server-lr", 0, "server learning rate eta_g (default 1; 0.01 for adam)")
		fs.Float64Var(&cs.ServerMomentum, "server-momentum", 0, "server momentum, beta1 for adam (default 0.9 for momentum and adam)")
		fs.DurationVar(&wuDeadline, "wu-deadline", 0, "work unit deadline (default 30m)")
		fs.DurationVar(&roundDeadline, "round-deadline", 0, "round deadline (default 4 x wu-deadline)")
		fs.Uint64Var(&cs.Seed, "seed", 0, "campaign seed (default random)")
		fs.IntVar(&cs.MaxResultsPerAccount, "max-results-per-account", 0, "most results of one volunteer account merged per round, 0..wus (default 0, no bound)")
		fs.BoolVar(&cs.Start, "start", false, "start at once")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	// Accept flags after the campaign ID too ("campaign start 3 --server URL").
	var pos []string
	for fs.NArg() > 0 {
		pos = append(pos, fs.Arg(0))
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return err
		}
	}
	if *token == "" {
		return errors.New("no researcher token: pass --token or set TEXGRID_TOKEN (make one with `project-server researcher add`)")
	}
	c := client.New(*srvURL, *token, nil)
	id := func() (int64, error) {
		if len(pos) != 1 {
			return 0, fmt.Errorf("usage: project-server campaign %s ID", sub)
		}
		n, err := strconv.ParseInt(pos[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("campaign ID %q is not a number", pos[0])
		}
		return n, nil
	}
	switch sub {
	case "create":
		spec := cs
		if specFile != "" {
			b, err := os.ReadFile(specFile)
			if err != nil {
				return err
			}
			if err := json.Unmarshal(b, &spec); err != nil {
				return fmt.Errorf("%s: %w", specFile, err)
			}
			overlay(fs, &spec, &cs)
		}
		if wuDeadline > 0 {
			spec.WUDeadline = protocol.Duration(wuDeadline)
		}
		if roundDeadline > 0 {
			spec.RoundDeadline = protocol.Duration(roundDeadline)
		}
		out, err := c.CreateCampaign(ctx, spec)
		if err != nil {
			return err
		}
		return printCampaigns(stdout, *asJSON, out)
	case "list":
		out, err := c.Campaigns(ctx)
		if err != nil {
			return err
		}
		return printCampaigns(stdout, *asJSON, out...)
	case "show":
		n, err := id()
		if err != nil {
			return err
		}
		out, err := c.Campaign(ctx, n)
		if err != nil {
			return err
		}
		return printJSON(stdout, out)
	case "model":
		if len(pos) != 1 || modelOut == "" {
			return errors.New("usage: project-server campaign model ID -o FILE [--format onnx|safetensors] [--round R]")
		}
		n, err := id()
		if err != nil {
			return err
		}
		f, err := os.Create(modelOut)
		if err != nil {
			return err
		}
		size, err := c.Model(ctx, n, modelRound, modelFormat, f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(modelOut)
			return err
		}
		fmt.Fprintf(stdout, "%s: %d bytes\n", modelOut, size)
		return nil
	case "classify":
		if len(pos) != 2 {
			return errors.New("usage: project-server campaign classify ID IMAGE")
		}
		n, err := strconv.ParseInt(pos[0], 10, 64)
		if err != nil {
			return fmt.Errorf("campaign ID %q is not a number", pos[0])
		}
		img, err := os.ReadFile(pos[1])
		if err != nil {
			return err
		}
		out, err := c.Classify(ctx, n, filepath.Base(pos[1]), img)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, out)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "%s\t(%s, %d fragments, %.1f ms)\n", out.Top, out.Engine, out.Fragments, out.Millis)
		for i, cl := range out.Classes {
			fmt.Fprintf(tw, "  %s\t%.4f\n", cl, out.Probabilities[i])
		}
		return tw.Flush()
	case "start", "pause", "resume", "stop":
		n, err := id()
		if err != nil {
			return err
		}
		out, err := c.Act(ctx, n, sub)
		if err != nil {
			return err
		}
		return printCampaigns(stdout, *asJSON, out)
	case "rounds":
		n, err := id()
		if err != nil {
			return err
		}
		out, err := c.Rounds(ctx, n)
		if err != nil {
			return err
		}
		if *asJSON {
			return printJSON(stdout, out)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ROUND\tSTATE\tISSUED\tACCEPTED\tNEEDED\tLATE\tINVALID\tFAILED\tDUPLICATE\tOVER LIMIT\tSAMPLES\tFRAG ACC\tIMAGE ACC\tMODEL")
		for _, r := range out {
			fa, ia := "-", "-"
			if r.Metrics != nil {
				fa, ia = fmt.Sprintf("%.4f", r.Metrics.FragmentAccuracy), fmt.Sprintf("%.4f", r.Metrics.ImageAccuracy)
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%.12s\n", r.Round, r.State, r.Issued, r.Accepted, r.Needed,
				r.Late, r.Invalid, r.Failed, r.Duplicates, r.OverLimit, r.SamplesTrained, fa, ia, r.ResultModel)
		}
		return tw.Flush()
	}
	return fmt.Errorf("unknown campaign command %q", sub)
}

// overlay copies the create flags that were set over a spec read from a file.
func overlay(fs *flag.FlagSet, dst, src *protocol.CampaignSpec) {
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "name":
			dst.Name = src.Name
		case "dataset":
			dst.Dataset = src.Dataset
		case "model":
			dst.Model = src.Model
		case "fragment-size":
			dst.FragmentSize = src.FragmentSize
		case "fragments-min":
			dst.FragmentsMin = src.FragmentsMin
		case "fragments-max":
			dst.FragmentsMax = src.FragmentsMax
		case "epochs":
			dst.Hyper.Epochs = src.Hyper.Epochs
		case "batch":
			dst.Hyper.BatchSize = src.Hyper.BatchSize
		case "lr":
			dst.Hyper.LearningRate = src.Hyper.LearningRate
		case "momentum":
			dst.Hyper.Momentum = src.Hyper.Momentum
		case "lr-decay":
			dst.Hyper.LRDecay = src.Hyper.LRDecay
		case "quorum":
			dst.Quorum = src.Quorum
		case "wus":
			dst.WorkUnitsPerRound = src.WorkUnitsPerRound
		case "rounds":
			dst.Rounds = src.Rounds
		case "mode":
			dst.Mode = src.Mode
		case "buffer-size":
			dst.BufferSize = src.BufferSize
		case "staleness-exponent":
			dst.StalenessExponent = src.StalenessExponent
		case "max-staleness":
			dst.MaxStaleness = src.MaxStaleness
		case "eval-every":
			dst.EvalEvery = src.EvalEvery
		case "server-optimizer":
			dst.ServerOptimizer = src.ServerOptimizer
		case "server-lr":
			dst.ServerLR = src.ServerLR
		case "server-momentum":
			dst.ServerMomentum = src.ServerMomentum
		case "seed":
			dst.Seed = src.Seed
		case "start":
			dst.Start = src.Start
		}
	})
}

func printCampaigns(w io.Writer, asJSON bool, cs ...protocol.Campaign) error {
	if asJSON {
		if len(cs) == 1 {
			return printJSON(w, cs[0])
		}
		return printJSON(w, cs)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSTATE\tROUND\tDATASET\tMODEL\tMESSAGE")
	for _, c := range cs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d/%d\t%s\t%s\t%s\n", c.ID, c.Spec.Name, c.State, c.Round, c.Spec.Rounds, c.Spec.Dataset, c.Spec.Model, c.Message)
	}
	return tw.Flush()
}

func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// newLogger builds the server's logger writing format ("text" or "json") to w from
// level ("debug", "info", "warn" or "error").
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}
