// Package scheduler is the project server's core: hosts and accounts, campaigns, the
// synchronous rounds with their work-unit slots, result validation and the quorum close
// that folds a round's deltas into the next global model. Every state change is one
// database transaction, and every blob a row names is durable before the row commits,
// so the server may be killed at any instant and restarted without losing an
// acknowledged result or merging one twice.
package scheduler

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/texgrid/texgrid/project-server/internal/auth"
	"github.com/texgrid/texgrid/project-server/internal/blob"
	"github.com/texgrid/texgrid/project-server/internal/datasets"
	"github.com/texgrid/texgrid/project-server/internal/store"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// InitFunc returns a model's initial weights W(0), deterministically from the seed.
type InitFunc func(r *spec.Resolved, seed uint64) ([]tensor.Named, error)

// Config holds what the scheduler needs besides its database and blob store.
type Config struct {
	// ModelsDir holds extra named model specs, <name>.json; empty means only the
	// specs shipped in configs/models.
	ModelsDir string
	// Datasets reads manifests (and test images, for evaluation).
	Datasets datasets.Source
	// FTP is where volunteers fetch images: address and read-only credentials.
	FTP protocol.DatasetRef
	// Init makes W(0); see InitFunc.
	Init InitFunc
	// Now is the clock; tests replace it. Default time.Now.
	Now func() time.Time
	// RetryAfter is what a host without work is told to wait. Default 30s.
	RetryAfter time.Duration
	// ActiveWindow is how recently a host must have called to count when fragment
	// counts are scaled by speed. Default 1h.
	ActiveWindow time.Duration
	// Log receives state transitions. Default slog.Default().
	Log *slog.Logger
	// OnRoundClosed, when set, is called after a round's close has committed.
	OnRoundClosed func(campaignID int64, round int)
	// Counters, when set, is told about results and issues (Prometheus).
	Counters Counters
}

// Counters receives events for monitoring.
type Counters interface {
	Result(outcome string)
	Issued()
	RoundClosed()
}

type nopCounters struct{}

func (nopCounters) Result(string) {}
func (nopCounters) Issued()       {}
func (nopCounters) RoundClosed()  {}

// Scheduler serves hosts and researchers over one database and blob store.
type Scheduler struct {
	db    *store.DB
	blobs *blob.Store
	cfg   Config
	data  *datasets.Cache
	log   *slog.Logger

	mu        sync.RWMutex
	hosts     map[string]int64 // host token hash -> host id
	touched   map[int64]touchMark
	sizes     map[string]int64 // model sha256 -> size
	timing    map[int64]roundTiming
	fastest   float64 // speed of the fastest active host, cached
	fastestAt time.Time

	sumMu  sync.Mutex // held by the round close using sumBuf
	sumBuf []float64

	closeMu sync.Mutex
	closing map[roundKey]chan struct{} // rounds a finishClose call is folding; closed when it returns

	specMu sync.Mutex
	specs  map[int64]*campaignInfo // campaign id -> resolved model, cached

	stmts stmtCache // the hot transactions' statements, prepared by Prepare

	campMu      sync.Mutex // guards the cached list of running campaigns
	campGen     uint64     // bumped by campaignsChanged
	campList    []store.Campaign
	campListGen uint64
	campAt      time.Time
	campOK      bool
}

// New returns a scheduler. Call Recover once before serving.
func New(db *store.DB, blobs *blob.Store, cfg Config) *Scheduler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = 30 * time.Second
	}
	if cfg.ActiveWindow <= 0 {
		cfg.ActiveWindow = time.Hour
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Counters == nil {
		cfg.Counters = nopCounters{}
	}
	if cfg.Init == nil {
		cfg.Init = DefaultInit
	}
	var data *datasets.Cache
	if cfg.Datasets != nil {
		data = datasets.NewCache(cfg.Datasets)
	}
	return &Scheduler{db: db, blobs: blobs, cfg: cfg, data: data, log: cfg.Log,
		hosts: map[string]int64{}, touched: map[int64]touchMark{}, sizes: map[string]int64{}, timing: map[int64]roundTiming{}, specs: map[int64]*campaignInfo{},
		closing: map[roundKey]chan struct{}{}}
}

// DB returns the scheduler's database (for read-only reports such as metrics).
func (s *Scheduler) DB() *store.DB { return s.db }

// Blobs returns the blob store.
func (s *Scheduler) Blobs() *blob.Store { return s.blobs }

func (s *Scheduler) now() time.Time { return s.cfg.Now().UTC() }

// read returns the read pool for queries outside transactions.
// Queries run without the request's cancellation: the SQLite driver would otherwise
// start a watcher goroutine per statement, and a statement is short anyway.
func (s *Scheduler) read(ctx context.Context) *gorm.DB {
	return s.db.R.WithContext(context.WithoutCancel(ctx))
}

// tx runs fn in a transaction on ctx.
func (s *Scheduler) tx(ctx context.Context, fn func(tx *gorm.DB) error) error {
	return s.db.WithContext(context.WithoutCancel(ctx)).Transaction(fn)
}

// lockRound reads a round row for update (a row lock on PostgreSQL; SQLite transactions
// are already exclusive).
func (s *Scheduler) lockRound(tx *gorm.DB, campaignID int64, round int) (*store.Round, error) {
	q := tx
	if s.db.Postgres {
		q = q.Clauses(clause.Locking{Strength: "UPDATE"})
	}
	var r store.Round
	if err := q.Where("campaign_id = ? AND round = ?", campaignID, round).Take(&r).Error; err != nil {
		return nil, store.NotFound(err)
	}
	return &r, nil
}

// AddAccount creates a volunteer account and returns its id and account key.
func (s *Scheduler) AddAccount(ctx context.Context, name string) (int64, string, error) {
	if name == "" {
		return 0, "", fail(protocol.CodeBadRequest, "account name is empty")
	}
	key, hash, err := auth.New(auth.AccountKeyPrefix)
	if err != nil {
		return 0, "", err
	}
	a := store.Account{Name: name, KeyHash: hash, CreatedAt: s.now()}
	if err := s.db.WithContext(ctx).Create(&a).Error; err != nil {
		return 0, "", fmt.Errorf("add account %q: %w", name, err)
	}
	return a.ID, key, nil
}

// AddResearcher creates a researcher and returns its id and API token.
func (s *Scheduler) AddResearcher(ctx context.Context, name string) (int64, string, error) {
	if name == "" {
		return 0, "", fail(protocol.CodeBadRequest, "researcher name is empty")
	}
	tok, hash, err := auth.New(auth.ResearcherTokenPrefix)
	if err != nil {
		return 0, "", err
	}
	r := store.Researcher{Name: name, TokenHash: hash, CreatedAt: s.now()}
	if err := s.db.WithContext(ctx).Create(&r).Error; err != nil {
		return 0, "", fmt.Errorf("add researcher %q: %w", name, err)
	}
	return r.ID, tok, nil
}

// Researcher returns the researcher id of an API token.
func (s *Scheduler) Researcher(ctx context.Context, token string) (int64, error) {
	var r store.Researcher
	err := s.read(ctx).Where("token_hash = ?", auth.Hash(token)).Take(&r).Error
	if err != nil {
		if store.NotFound(err) == store.ErrNotFound {
			return 0, fail(protocol.CodeUnauthorized, "unknown researcher token")
		}
		return 0, fmt.Errorf("researcher lookup: %w", err)
	}
	return r.ID, nil
}

// Host returns the host id of a host token.
func (s *Scheduler) Host(ctx context.Context, token string) (int64, error) {
	h := auth.Hash(token)
	s.mu.RLock()
	id, ok := s.hosts[h]
	s.mu.RUnlock()
	if ok {
		return id, nil
	}
	var host store.Host
	err := s.read(ctx).Select("id").Where("token_hash = ?", h).Take(&host).Error
	if err != nil {
		if store.NotFound(err) == store.ErrNotFound {
			return 0, fail(protocol.CodeUnauthorized, "unknown host token; attach the host again with its account key")
		}
		return 0, fmt.Errorf("host lookup: %w", err)
	}
	s.mu.Lock()
	s.hosts[h] = host.ID
	s.mu.Unlock()
	return host.ID, nil
}

// RegisterHost attaches a host to the account whose key it presents.
func (s *Scheduler) RegisterHost(ctx context.Context, req *protocol.RegisterHostRequest) (*protocol.RegisterHostResponse, error) {
	if req.AccountKey == "" {
		return nil, fail(protocol.CodeUnauthorized, "account_key is empty")
	}
	if req.Cores < 0 || req.MemoryBytes < 0 || req.GFLOPS < 0 || req.GFLOPS > 1e7 {
		return nil, fail(protocol.CodeBadRequest, "cores, memory_bytes and gflops must be non-negative (gflops at most 1e7)")
	}
	if len(req.Name) > 200 || len(req.OS) > 50 || len(req.Arch) > 50 || len(req.ClientVersion) > 100 {
		return nil, fail(protocol.CodeBadRequest, "name, os, arch or client_version is too long")
	}
	var acct store.Account
	err := s.read(ctx).Where("key_hash = ?", auth.Hash(req.AccountKey)).Take(&acct).Error
	if err != nil {
		if store.NotFound(err) == store.ErrNotFound {
			return nil, fail(protocol.CodeUnauthorized, "unknown account key")
		}
		return nil, fmt.Errorf("register host: %w", err)
	}
	tok, hash, err := auth.New(auth.HostTokenPrefix)
	if err != nil {
		return nil, err
	}
	now := s.now()
	h := store.Host{AccountID: acct.ID, Name: req.Name, OS: req.OS, Arch: req.Arch, Cores: req.Cores,
		MemoryBytes: req.MemoryBytes, GFLOPS: req.GFLOPS, ClientVersion: req.ClientVersion,
		TokenHash: &hash, CreatedAt: now, LastContact: now}
	if err := s.db.WithContext(ctx).Create(&h).Error; err != nil {
		return nil, fmt.Errorf("register host: %w", err)
	}
	s.log.Info("host registered", "host", h.ID, "account", acct.ID, "name", req.Name, "gflops", req.GFLOPS)
	return &protocol.RegisterHostResponse{HostID: h.ID, Token: tok}, nil
}

// UpdateHost refreshes a host's capabilities.
func (s *Scheduler) UpdateHost(ctx context.Context, hostID int64, req *protocol.HostUpdateRequest) error {
	if req.Cores < 0 || req.MemoryBytes < 0 || req.GFLOPS < 0 || req.GFLOPS > 1e7 || len(req.ClientVersion) > 100 {
		return fail(protocol.CodeBadRequest, "cores, memory_bytes and gflops must be non-negative (gflops at most 1e7)")
	}
	up := map[string]any{"last_contact": s.now()}
	if req.Cores > 0 {
		up["cores"] = req.Cores
	}
	if req.MemoryBytes > 0 {
		up["memory_bytes"] = req.MemoryBytes
	}
	if req.GFLOPS > 0 {
		up["gflops"] = req.GFLOPS
	}
	if req.ClientVersion != "" {
		up["client_version"] = req.ClientVersion
	}
	if err := s.db.WithContext(ctx).Model(&store.Host{}).Where("id = ?", hostID).Updates(up).Error; err != nil {
		return fmt.Errorf("update host %d: %w", hostID, err)
	}
	s.mu.Lock()
	delete(s.touched, hostID)
	s.mu.Unlock()
	return nil
}

// DetachHost forgets the host's token and releases its open work units for reissue.
func (s *Scheduler) DetachHost(ctx context.Context, hostID int64) error {
	err := s.tx(ctx, func(tx *gorm.DB) error {
		if err := tx.Model(&store.Host{}).Where("id = ?", hostID).
			Updates(map[string]any{"token_hash": nil, "detached": true, "last_contact": s.now()}).Error; err != nil {
			return err
		}
		return tx.Model(&store.WorkUnit{}).Where("host_id = ? AND state = ?", hostID, store.WUIssued).
			Updates(map[string]any{"state": store.WUAborted, "finished_at": s.now()}).Error
	})
	if err != nil {
		return fmt.Errorf("detach host %d: %w", hostID, err)
	}
	s.mu.Lock()
	for h, id := range s.hosts {
		if id == hostID {
			delete(s.hosts, h)
		}
	}
	s.mu.Unlock()
	s.log.Info("host detached", "host", hostID)
	return nil
}

// HostInfo returns a host's record.
func (s *Scheduler) HostInfo(ctx context.Context, hostID int64) (*store.Host, error) {
	var h store.Host
	if err := s.read(ctx).Take(&h, hostID).Error; err != nil {
		return nil, fmt.Errorf("host %d: %w", hostID, store.NotFound(err))
	}
	return &h, nil
}

// wuSeed derives a work unit's seed from the campaign seed, round and slot, so a
// reissued slot trains on the same fragments.
func wuSeed(campaignSeed uint64, round, slot int) uint64 {
	var b [8 + 24]byte
	copy(b[:8], "texgrid\x00")
	binary.BigEndian.PutUint64(b[8:], campaignSeed)
	binary.BigEndian.PutUint64(b[16:], uint64(round))
	binary.BigEndian.PutUint64(b[24:], uint64(slot))
	sum := sha256.Sum256(append([]byte("texgrid-wu/v1\x00"), b[:]...))
	return binary.BigEndian.Uint64(sum[:8])
}

// ModelBlob opens a global model version for download. Received deltas are not served.
func (s *Scheduler) ModelBlob(ctx context.Context, sha string) (f *os.File, size int64, mod time.Time, err error) {
	if !blob.ValidName(sha) {
		return nil, 0, time.Time{}, fail(protocol.CodeBadRequest, "blob name %q is not a lowercase hex sha256", sha)
	}
	var mv store.ModelVersion
	if err := s.read(ctx).Where("sha256 = ?", sha).Take(&mv).Error; err != nil {
		if store.NotFound(err) == store.ErrNotFound {
			return nil, 0, time.Time{}, fail(protocol.CodeNotFound, "no model blob %s", sha)
		}
		return nil, 0, time.Time{}, fmt.Errorf("blob %s: %w", sha, err)
	}
	f, err = s.blobs.Open(sha)
	if err != nil {
		return nil, 0, time.Time{}, err
	}
	return f, mv.Size, mv.CreatedAt, nil
}
