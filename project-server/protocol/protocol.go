// Package protocol is the contract between the project server and its clients
// (volunteer-client, researcher tools, the web UI): plain request and response types,
// the endpoint each travels on, and the error codes callers act on. It imports nothing
// from texgrid, so any client can depend on it without pulling in the server.
//
// # Versioning
//
// Version only goes up. Every request carries it in the Texgrid-Protocol header; the
// server accepts MinVersion..Version, answers older clients with 426 and code
// "upgrade_required", saying which version to install, and clients newer than itself
// with 400 and code "protocol_too_new", saying which version it speaks. Prefer adding a
// field or a message over changing one.
//
//	1 (2026-11-21): first version: hosts, work units, results, heartbeats, campaigns.
//	1 (2026-11-21): optional Hyper.LRDecay (per-round learning-rate decay). No bump:
//	  the field is optional, and a work unit's LearningRate is already the round's
//	  rate, so clients that ignore LRDecay train correctly.
//	2 (2026-12-02): POST /api/v1/work/{id}/failure (FailureRequest): a host reports a
//	  work unit it cannot finish (training diverged to a non-finite loss or delta); the
//	  server records it against the unit and the host and reissues the slot.
//	  RoundInfo.Failed and HostInfo.ResultsFailed count such reports. Version 1
//	  clients never send it; their units expire at their deadline as before.
//	3 (2026-12-02): a round merges at most one copy of a delta: a result byte-identical
//	  to one already merged in the round is answered 409 "duplicate" (recorded, not
//	  merged, not credited, both hosts flagged). CampaignSpec.MaxResultsPerAccount
//	  bounds the results one account contributes to a round (over it: 409
//	  "account_limit", recorded and credited, not merged). RoundInfo.Duplicates and
//	  OverLimit, HostInfo.ResultsFlagged and GET /api/v1/campaigns/{id}/rounds/{round}/results
//	  (ResultInfo) show them. Old clients drop a unit on any final 409, as before.
//	4 (2026-12-02): WorkUnit.Kind ("train"); campaign mode "async" (CampaignSpec
//	  BufferSize, StalenessExponent, MaxStaleness, ServerLR, EvalEvery) with result
//	  outcome and code "stale" (409) and ResultResponse.Version and Staleness; server
//	  optimisers (CampaignSpec ServerOptimizer, ServerMomentum); codes
//	  "method_not_allowed" (405) and "protocol_too_new" (400). Clients before
//	  version 4 keep working: they are given work of synchronous campaigns only
//	  (AsyncVersion), whose answers are unchanged.
//	5 (2026-12-02): researcher ownership (403 "forbidden" on another researcher's
//	  campaign; GET /campaigns lists the caller's own; admins see all) and new read
//	  routes for the web UI: GET /hosts, GET /campaigns/{id}/rounds/{r}/work-units,
//	  GET /models, GET /datasets, GET /campaigns/{id}/model, POST
//	  /campaigns/{id}/classify (see researcher.go). Nothing a
//	  version-1 client sends or reads changed.
//
// # Volunteer flow
//
// A volunteer attaches once (POST /api/v1/hosts with its account key) and receives a
// host token. Then, in a loop: POST /api/v1/work to get a WorkUnit; GET the base model
// blob; train; POST heartbeats while working; PUT the delta to the result endpoint. A
// 409 with code "late" means the round closed without this result: drop it and ask for
// new work. In an asynchronous campaign a 409 with code "stale" means the result was
// trained on a version too old to merge; it was recorded and credited: drop it and ask
// for new work. A unit the host cannot finish (its training diverged) is reported with
// POST /api/v1/work/{id}/failure and dropped. Every call but registration sends
// "Authorization: Bearer <host token>".
package protocol

import (
	"fmt"
	"strconv"
	"time"
)

// Version is the protocol version this build speaks.
const Version = 5

// MinVersion is the oldest client protocol version the server still accepts.
const MinVersion = 1

// AsyncVersion is the first protocol version whose clients are given work units of
// asynchronous campaigns: older clients do not know the "stale" answer, so they get
// work of synchronous campaigns only.
const AsyncVersion = 4

// Header names.
const (
	HeaderVersion = "Texgrid-Protocol" // integer protocol version of the sender
	HeaderSHA256  = "Texgrid-Sha256"   // hex sha256 of a blob body, sent with uploads and downloads
)

// APIPrefix is the root of every endpoint.
const APIPrefix = "/api/v1"

// Error is the body of every 4xx and 5xx answer.
type Error struct {
	Code    string `json:"code"`    // one of the Code* constants
	Message string `json:"message"` // a sentence for humans, naming what was wrong
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Code, e.Message) }

// ErrorBody wraps Error as it appears on the wire: {"error": {...}}.
type ErrorBody struct {
	Error *Error `json:"error"`
}

// Error codes. Clients branch on these, never on messages.
const (
	CodeBadRequest       = "bad_request"        // 400: malformed JSON or parameters
	CodeUnauthorized     = "unauthorized"       // 401: missing or unknown token or account key
	CodeForbidden        = "forbidden"          // 403: the token may not do this (another host's WU, a volunteer on a researcher route)
	CodeNotFound         = "not_found"          // 404: unknown campaign, work unit, model or blob
	CodeLate             = "late"               // 409: the round closed before this result arrived; it was recorded, not merged
	CodeWUClosed         = "wu_closed"          // 409: the WU was reissued after its deadline or aborted; drop it
	CodeConflict         = "conflict"           // 409: the action does not fit the object's state (start a done campaign)
	CodeDuplicate        = "duplicate"          // 409: the delta is byte-identical to one already merged in the round; recorded, not merged or credited
	CodeAccountLimit     = "account_limit"      // 409: the account has its campaign's most results in the round; recorded and credited, not merged
	CodeInvalidDelta     = "invalid_delta"      // 422: the delta's names, shapes, values or norm are wrong
	CodeTooLarge         = "too_large"          // 413: the body is over the size limit
	CodeUpgradeRequired  = "upgrade_required"   // 426: the client's protocol version is too old
	CodeProtocolTooNew   = "protocol_too_new"   // 400: the client's protocol version is newer than the server's (version 4)
	CodeStale            = "stale"              // 409: async mode: the result's base version is over max_staleness behind; recorded and credited, not merged (version 4)
	CodeMethodNotAllowed = "method_not_allowed" // 405: the path exists but not with this method (version 4)
	CodeRateLimited      = "rate_limited"       // 429: back off and retry after Retry-After
	CodeInternal         = "internal"           // 500: the server failed; retry later
)

// RegisterHostRequest is POST /api/v1/hosts, the only unauthenticated volunteer call.
// The account key identifies the volunteer's account; one account may own many hosts.
type RegisterHostRequest struct {
	AccountKey    string  `json:"account_key"`
	Name          string  `json:"name"` // host name shown to the volunteer
	OS            string  `json:"os"`   // runtime.GOOS
	Arch          string  `json:"arch"` // runtime.GOARCH
	Cores         int     `json:"cores"`
	MemoryBytes   int64   `json:"memory_bytes"`
	GFLOPS        float64 `json:"gflops"` // measured by the client's trainer benchmark
	ClientVersion string  `json:"client_version"`
}

// RegisterHostResponse returns the host identity. The token is shown once; the client
// stores it in its state directory with mode 0600.
type RegisterHostResponse struct {
	HostID int64  `json:"host_id"`
	Token  string `json:"token"`
}

// DetachPath is DELETE /api/v1/hosts/self: the host forgets its token; its open work
// units are released for reissue.
const DetachPath = APIPrefix + "/hosts/self"

// HostUpdateRequest is PATCH /api/v1/hosts/self: refreshed capabilities.
type HostUpdateRequest struct {
	Cores         int     `json:"cores,omitempty"`
	MemoryBytes   int64   `json:"memory_bytes,omitempty"`
	GFLOPS        float64 `json:"gflops,omitempty"`
	ClientVersion string  `json:"client_version,omitempty"`
}

// WorkRequest is POST /api/v1/work: the host asks for one work unit.
type WorkRequest struct {
	Threads         int     `json:"threads"`           // threads the volunteer lets the client use
	FreeMemoryBytes int64   `json:"free_memory_bytes"` // the client's memory cap, or what is free
	FreeDiskBytes   int64   `json:"free_disk_bytes"`   // room left under the disk cap
	GFLOPS          float64 `json:"gflops,omitempty"`  // a fresh speed measurement, if any
}

// WorkResponse carries a work unit, or none and how long to wait before asking again.
type WorkResponse struct {
	WorkUnit          *WorkUnit `json:"work_unit,omitempty"`
	RetryAfterSeconds int       `json:"retry_after_seconds,omitempty"`
	Message           string    `json:"message,omitempty"` // why there is no work
}

// DatasetRef tells a volunteer where the work unit's images are.
type DatasetRef struct {
	Name            string `json:"name"`             // dataset folder on the FTP server
	ManifestVersion string `json:"manifest_version"` // the manifest.json Version the fragments are drawn from
	FTPAddr         string `json:"ftp_addr"`         // host:port
	FTPUser         string `json:"ftp_user"`         // read-only account ("anonymous" when allowed)
	FTPPassword     string `json:"ftp_password"`
	FTPTLS          bool   `json:"ftp_tls"` // use explicit FTPS
}

// BlobRef names a content-addressed blob served by the project server.
type BlobRef struct {
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	URL    string `json:"url"` // path relative to the server, e.g. /api/v1/blobs/<sha256>
}

// Hyper carries training hyper-parameters: a campaign's in CampaignSpec, one work
// unit's in WorkUnit.
type Hyper struct {
	Epochs    int `json:"epochs"`
	BatchSize int `json:"batch_size"`
	// LearningRate is, in a CampaignSpec, the rate of the campaign's first round; in a
	// WorkUnit, the rate to train with, LRDecay already applied by the server.
	LearningRate float64 `json:"learning_rate"`
	Momentum     float64 `json:"momentum"`
	WeightDecay  float64 `json:"weight_decay"`
	// LRDecay is the multiplicative factor applied to the learning rate per round,
	// valid in (0, 1]; 0 (absent) or 1 means a constant rate. Rounds are numbered from
	// 0, so the work units of round r train with LearningRate x LRDecay^r, computed
	// once by the server in float64. A WorkUnit's Hyper echoes LRDecay for the record
	// only: its LearningRate is already the round's rate, and clients must not apply
	// LRDecay again. Added 2026-11-21 without a version bump (optional field).
	LRDecay float64 `json:"lr_decay,omitempty"`
}

// WorkUnit describes one unit of training: which fragments (seed + count over the
// manifest's training split, see trainer/data.SampleFragments), from which base model,
// with which hyper-parameters. It is a few KB, never pixels.
type WorkUnit struct {
	ID         int64 `json:"id"`
	CampaignID int64 `json:"campaign_id"`
	// Kind says what the unit asks for: KindTrain. A client meets a kind it does not
	// know only if it announced a protocol version that has it; absent means train
	// (servers before version 4). Added in version 4.
	Kind string `json:"kind,omitempty"`
	// Round is the round of a synchronous campaign, or the model version the unit
	// trains on in an asynchronous one.
	Round         int        `json:"round"`
	BaseModel     BlobRef    `json:"base_model"` // safetensors float32 weights W(round)
	ModelSpec     []byte     `json:"model_spec"` // canonical spec JSON (trainer/spec)
	Classes       []string   `json:"classes"`    // label order; equals the manifest's classes
	Dataset       DatasetRef `json:"dataset"`
	FragmentSize  int        `json:"fragment_size"`
	FragmentCount int        `json:"fragment_count"`
	Seed          uint64     `json:"seed"` // fragment sampling and training RNG seed
	Hyper         Hyper      `json:"hyper"`
	DeltaDType    string     `json:"delta_dtype"` // "float32" or "float16": the encoding the server accepts
	Deadline      time.Time  `json:"deadline"`
	// FLOPs is the training cost the server will credit: samples x epochs x 3 x forward FLOPs.
	FLOPs int64 `json:"flops"`
}

// Work unit kinds.
const (
	KindTrain = "train" // train BaseModel on the fragments and upload the delta
)

// HeartbeatRequest is POST /api/v1/work/{id}/heartbeat while the host trains.
type HeartbeatRequest struct {
	Progress float64 `json:"progress"` // 0..1
	Epoch    int     `json:"epoch"`
	Loss     float64 `json:"loss,omitempty"`
}

// HeartbeatResponse may extend the deadline or tell the host to abort the WU.
type HeartbeatResponse struct {
	Abort    bool      `json:"abort,omitempty"`
	Reason   string    `json:"reason,omitempty"` // why to abort: "round_closed", "campaign_stopped", "reissued"
	Deadline time.Time `json:"deadline"`
}

// Result upload: PUT /api/v1/work/{id}/result with the delta as the body, a safetensors
// file whose tensors are W_trained - W_base under the model's tensor names, in the
// WU's DeltaDType. Headers carry the metadata below; Texgrid-Sha256 is the body's hash.
// Replaying an accepted upload is idempotent: the same answer, nothing merged twice.
const (
	HeaderSamples = "Texgrid-Samples" // integer: samples trained (fragments x epochs)
	HeaderLoss    = "Texgrid-Loss"    // float: mean training loss of the last epoch
)

// Result outcomes.
const (
	OutcomeAccepted = "accepted" // valid and counted toward the round's quorum
	OutcomeLate     = "late"     // valid but the round had closed; credited, not merged
	// OutcomeDuplicate: byte-identical (same sha256) to a delta already merged in the
	// round; not merged, not credited, and both hosts are flagged (version 3).
	OutcomeDuplicate = "duplicate"
	// OutcomeOverLimit: the host's account already had MaxResultsPerAccount results
	// merged in the round; credited, not merged (version 3).
	OutcomeOverLimit = "over_limit"
	OutcomeStale     = "stale" // async: valid but over max_staleness versions old; credited, not merged (version 4)
)

// ResultResponse answers a result upload (200 accepted; 409 late or stale with an
// Error body).
type ResultResponse struct {
	Outcome string `json:"outcome"`
	Round   int    `json:"round"` // the work unit's round (its base version in async mode)
	// Version is the model version whose buffer took the result, and Staleness its
	// distance from Round, in asynchronous campaigns (added in version 4).
	Version   int     `json:"version,omitempty"`
	Staleness int     `json:"staleness,omitempty"`
	Credit    float64 `json:"credit"`             // credit granted for this result
	Replayed  bool    `json:"replayed,omitempty"` // the result had already been accepted
}

// FailureRequest is POST /api/v1/work/{id}/failure (version 2): the host gives up a
// work unit it cannot finish, and drops it. Every field must be JSON: a non-finite
// loss is reported in Message, never as a number. The answer is a FailureResponse;
// 409 "wu_closed" means the unit was aborted (campaign stopped, host detached) or
// already ended, and 409 "conflict" that its result is already in: drop it either way.
// Sending the same report again is answered as before, with Replayed set.
type FailureRequest struct {
	Reason   string  `json:"reason"`             // one of the Failure* constants
	Message  string  `json:"message,omitempty"`  // what happened, for the researcher (at most 1000 bytes)
	Progress float64 `json:"progress,omitempty"` // 0..1, where training stopped
	Epoch    int     `json:"epoch,omitempty"`
}

// Failure reasons.
const (
	FailureDiverged = "diverged" // training reached a non-finite loss, or the delta is not finite
)

// FailureResponse answers a failure report.
type FailureResponse struct {
	Round    int  `json:"round"`
	Reissued bool `json:"reissued"`           // the unit's slot has attempts left and goes to another host
	Replayed bool `json:"replayed,omitempty"` // the failure had already been recorded
}

// WorkPath returns the path of a work unit's sub-resource ("result", "heartbeat",
// "failure").
func WorkPath(id int64, sub string) string {
	return fmt.Sprintf("%s/work/%d/%s", APIPrefix, id, sub)
}

// BlobPath returns GET /api/v1/blobs/{sha256}: model versions, content-addressed.
func BlobPath(sha string) string { return APIPrefix + "/blobs/" + sha }

// CampaignPath returns /api/v1/campaigns/{id}, or its sub-resource or action
// ("rounds", "pause", ...) when sub is not empty.
func CampaignPath(id int64, sub string) string {
	p := fmt.Sprintf("%s/campaigns/%d", APIPrefix, id)
	if sub != "" {
		p += "/" + sub
	}
	return p
}

// Researcher API. Every call needs "Authorization: Bearer <researcher token>".

// Campaign states.
const (
	StateDraft   = "draft"
	StateRunning = "running"
	StatePaused  = "paused"
	StateDone    = "done"
	StateStopped = "stopped"
)

// Aggregation modes.
const (
	ModeSync  = "sync"  // rounds with a quorum; late results discarded
	ModeAsync = "async" // versions from staleness-weighted buffers of results (version 4)
)

// Server optimisers: how the averaged delta of a version (the pseudo-gradient) is
// applied to the model (version 4).
const (
	OptimizerSGD      = "sgd"      // W += ServerLR x mean delta (the default)
	OptimizerMomentum = "momentum" // FedAvgM: m = ServerMomentum x m + mean; W += ServerLR x m
	OptimizerAdam     = "adam"     // FedAdam: Adam moments of the mean delta; W += ServerLR x m / (sqrt(v) + 1e-3)
)

// CampaignSpec is POST /api/v1/campaigns. Zero fields take the documented defaults.
type CampaignSpec struct {
	Name              string   `json:"name"`
	Dataset           string   `json:"dataset"`
	ManifestVersion   string   `json:"manifest_version,omitempty"`     // default: the current manifest
	Model             string   `json:"model"`                          // a spec name under the server's models dir, or inline
	ModelSpec         []byte   `json:"model_spec,omitempty"`           // inline spec JSON; overrides Model
	FragmentSize      int      `json:"fragment_size,omitempty"`        // default 256
	FragmentsMin      int      `json:"fragments_min,omitempty"`        // default 4500
	FragmentsMax      int      `json:"fragments_max,omitempty"`        // default 6000
	Hyper             Hyper    `json:"hyper"`                          // default 2 epochs, batch 32, lr 0.01, momentum 0.9
	Quorum            float64  `json:"quorum,omitempty"`               // 0.75..0.90, default 0.8
	WorkUnitsPerRound int      `json:"work_units_per_round,omitempty"` // default 4
	Rounds            int      `json:"rounds,omitempty"`               // default 10
	WUDeadline        Duration `json:"wu_deadline,omitempty"`          // default 30m
	RoundDeadline     Duration `json:"round_deadline,omitempty"`       // default 4 x WU deadline
	MaxAttempts       int      `json:"max_attempts,omitempty"`         // issues per WU slot, default 3
	DeltaDType        string   `json:"delta_dtype,omitempty"`          // default "float32"
	MaxDeltaNorm      float64  `json:"max_delta_norm,omitempty"`       // L2 bound on a delta, default 1e3
	WeightBySamples   bool     `json:"weight_by_samples,omitempty"`
	// MaxResultsPerAccount bounds how many results of one account's hosts a round
	// merges (0: no bound, at most work_units_per_round). An account at the bound gets
	// no more units of the round; a result over it is recorded and credited, not
	// merged (version 3).
	MaxResultsPerAccount int    `json:"max_results_per_account,omitempty"`
	Mode                 string `json:"mode,omitempty"` // default "sync"
	// Asynchronous mode (version 4). Rounds is then the number of versions to build.
	BufferSize        int     `json:"buffer_size,omitempty"`        // K: results per version, default 3
	StalenessExponent float64 `json:"staleness_exponent,omitempty"` // a in s(tau) = (1+tau)^-a, default 0.5 (0 takes the default)
	MaxStaleness      int     `json:"max_staleness,omitempty"`      // results staler are refused as stale; default (and 0) 8
	EvalEvery         int     `json:"eval_every,omitempty"`         // evaluate every E versions, default 1
	// Server optimiser, both modes (version 4).
	ServerOptimizer string  `json:"server_optimizer,omitempty"` // "sgd" (default), "momentum" or "adam"
	ServerLR        float64 `json:"server_lr,omitempty"`        // eta_g, default 1 (sgd, momentum) or 0.01 (adam)
	ServerMomentum  float64 `json:"server_momentum,omitempty"`  // beta of momentum, beta1 of adam; default 0.9
	Seed            uint64  `json:"seed,omitempty"`             // campaign seed: initial weights and WU seeds
	Start           bool    `json:"start,omitempty"`            // create in running state
}

// Duration is a time.Duration that reads and writes as a Go duration string ("30m").
type Duration time.Duration

// MarshalJSON writes "1h30m0s".
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Duration(d).String() + `"`), nil
}

// UnmarshalJSON reads "90s" style strings or whole seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(s) >= 2 && s[0] == '"' {
		v, err := time.ParseDuration(s[1 : len(s)-1])
		if err != nil {
			return fmt.Errorf("duration %s: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	secs, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("duration %s: want a string like \"30m\" or whole seconds", s)
	}
	*d = Duration(time.Duration(secs) * time.Second)
	return nil
}

// Campaign is what GET /api/v1/campaigns/{id} returns.
type Campaign struct {
	ID          int64        `json:"id"`
	Spec        CampaignSpec `json:"spec"` // with defaults filled in
	State       string       `json:"state"`
	Round       int          `json:"round"`        // the round being issued; equals Spec.Rounds when done
	ModelSHA256 string       `json:"model_sha256"` // the newest global model
	Classes     []string     `json:"classes"`
	CreatedAt   time.Time    `json:"created_at"`
	UpdatedAt   time.Time    `json:"updated_at"`
	Message     string       `json:"message,omitempty"` // e.g. why a round is stuck
}

// CampaignAction is POST /api/v1/campaigns/{id}/{action} with action one of start,
// pause, resume, stop. It answers the updated Campaign, or 409 "conflict".
const (
	ActionStart  = "start"
	ActionPause  = "pause"
	ActionResume = "resume"
	ActionStop   = "stop"
)

// RoundInfo is an element of GET /api/v1/campaigns/{id}/rounds.
type RoundInfo struct {
	Round          int        `json:"round"`
	State          string     `json:"state"` // "open", "closed", "stuck"
	BaseModel      string     `json:"base_model"`
	ResultModel    string     `json:"result_model,omitempty"` // W(r+1); empty until the close has written it (a closed round may briefly have none)
	Issued         int        `json:"issued"`
	Accepted       int        `json:"accepted"`
	Late           int        `json:"late"`
	Stale          int        `json:"stale,omitempty"` // async: refused as over max_staleness (version 4)
	Invalid        int        `json:"invalid"`
	Failed         int        `json:"failed"`     // units their host reported as failed (version 2)
	Duplicates     int        `json:"duplicates"` // results byte-identical to a merged one, not merged (version 3)
	OverLimit      int        `json:"over_limit"` // results over MaxResultsPerAccount, not merged (version 3)
	Needed         int        `json:"needed"`     // ceil(quorum x WUs)
	OpenedAt       time.Time  `json:"opened_at"`
	ClosedAt       *time.Time `json:"closed_at,omitempty"`
	SamplesTrained int64      `json:"samples_trained"`
	Metrics        *Metrics   `json:"metrics,omitempty"` // evaluation of ResultModel on the test split
}

// ResultsPath returns GET /api/v1/campaigns/{id}/rounds/{round}/results (version 3):
// every result and failure report of a round, oldest first, as ResultInfo.
func ResultsPath(campaign int64, round int) string {
	return fmt.Sprintf("%s/campaigns/%d/rounds/%d/results", APIPrefix, campaign, round)
}

// ResultInfo is one result row of a round as the researcher sees it (version 3).
type ResultInfo struct {
	ID        int64   `json:"id"`
	WorkUnit  int64   `json:"work_unit"`
	Slot      int     `json:"slot"`
	HostID    int64   `json:"host_id"`
	AccountID int64   `json:"account_id"`
	Outcome   string  `json:"outcome"`          // accepted, late, duplicate, over_limit, invalid, failed
	SHA256    string  `json:"sha256,omitempty"` // of the delta; empty for a failure report
	Size      int64   `json:"size"`
	Samples   int64   `json:"samples"`
	Loss      float64 `json:"loss"`
	Norm      float64 `json:"norm"` // L2 norm of the delta
	Credit    float64 `json:"credit"`
	Reason    string  `json:"reason,omitempty"` // why it was refused, failed or not merged
	// Flag says the result is one of a set of byte-identical deltas: on the merged copy,
	// which results duplicated it; on a duplicate, which result it copies.
	Flag      string    `json:"flag,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Metrics is a model's evaluation on held-out images.
type Metrics struct {
	Classes          []string  `json:"classes"`
	Fragments        int       `json:"fragments"`
	Images           int       `json:"images"`
	FragmentAccuracy float64   `json:"fragment_accuracy"`
	ImageAccuracy    float64   `json:"image_accuracy"` // argmax of the mean fragment probabilities
	Loss             float64   `json:"loss"`
	MacroF1          float64   `json:"macro_f1"`
	Precision        []float64 `json:"precision"`
	Recall           []float64 `json:"recall"`
	F1               []float64 `json:"f1"`
	Confusion        [][]int   `json:"confusion"` // [true][predicted], fragment level
	Engine           string    `json:"engine"`    // "go" or "onnxruntime"
}

// Status is GET /api/v1/status, unauthenticated: the server's versions and counters.
type Status struct {
	ServerVersion   string `json:"server_version"`
	ProtocolVersion int    `json:"protocol_version"`
	MinProtocol     int    `json:"min_protocol"`
	Campaigns       int    `json:"campaigns"`
	Hosts           int    `json:"hosts"`
}

// HostInfo is GET /api/v1/hosts/self (added 2026-11-21, still version 1): the host's
// record as the server keeps it, for the volunteer's tray or status command.
type HostInfo struct {
	HostID         int64     `json:"host_id"`
	Name           string    `json:"name"`
	Cores          int       `json:"cores"`
	GFLOPS         float64   `json:"gflops"`
	Credit         float64   `json:"credit"`          // total credit, one per GFLOP of valid work
	ResultsValid   int       `json:"results_valid"`   // accepted or late
	ResultsInvalid int       `json:"results_invalid"` // refused with invalid_delta
	ResultsFailed  int       `json:"results_failed"`  // units reported failed (version 2)
	ResultsFlagged int       `json:"results_flagged"` // results that matched another host's byte for byte (version 3)
	ErrorRate      float64   `json:"error_rate"`      // invalid / (valid + invalid)
	LastContact    time.Time `json:"last_contact"`
}

// HostSelfPath is the path of GET (HostInfo), PATCH (HostUpdateRequest) and DELETE
// (detach) for the calling host.
const HostSelfPath = APIPrefix + "/hosts/self"
