package store

import "time"

// Account is a volunteer account; hosts attach to it with its key.
type Account struct {
	ID        int64
	Name      string
	KeyHash   string
	CreatedAt time.Time
}

// Researcher may create and control campaigns with its API token.
type Researcher struct {
	ID        int64
	Name      string
	TokenHash string
	CreatedAt time.Time
}

// Host is one volunteer machine. TokenHash is nil once the host detached.
type Host struct {
	ID             int64
	AccountID      int64
	Name           string
	OS             string
	Arch           string
	Cores          int
	MemoryBytes    int64
	GFLOPS         float64 `gorm:"column:gflops"`
	ClientVersion  string
	TokenHash      *string
	CreatedAt      time.Time
	LastContact    time.Time
	ResultsValid   int
	ResultsInvalid int
	ResultsFailed  int // work units the host reported it could not finish
	ResultsFlagged int // results byte-identical to another host's in the same round
	Credit         float64
	Detached       bool
}

// Campaign row. SpecJSON holds the protocol.CampaignSpec with defaults filled in.
type Campaign struct {
	ID              int64
	Name            string
	ResearcherID    int64
	SpecJSON        string
	ModelSpec       string
	ClassesJSON     string
	ManifestVersion string
	NumParams       int64
	ForwardFLOPs    int64 `gorm:"column:forward_flops"`
	State           string
	Round           int
	ModelSHA256     string `gorm:"column:model_sha256"`
	Message         string
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// ModelVersion is a global model blob W(round) of a campaign. Blobs are content
// addressed and shared: campaigns that reach the same weights (the same seed and model
// give the same W(0)) each have a row naming the one blob.
type ModelVersion struct {
	SHA256     string `gorm:"column:sha256;primaryKey"`
	CampaignID int64  `gorm:"primaryKey;autoIncrement:false"`
	Round      int
	Size       int64
	CreatedAt  time.Time
}

// Round states.
const (
	RoundOpen   = "open"
	RoundClosed = "closed"
	RoundStuck  = "stuck"
)

// Round is one model version of a campaign: a synchronous round, or in asynchronous
// mode the version whose buffer fills while it is the newest. A round with state
// closed and no ResultModel is a close in progress; in asynchronous mode the next
// round exists from that moment, its BaseModel empty until the close commits.
type Round struct {
	CampaignID     int64 `gorm:"primaryKey;autoIncrement:false"`
	Round          int   `gorm:"primaryKey;autoIncrement:false"`
	State          string
	BaseModel      string
	ResultModel    string
	Slots          int
	Needed         int
	NextSlot       int
	Issued         int
	Accepted       int
	Late           int
	Invalid        int
	Stale          int // asynchronous mode: results refused as over max_staleness
	Failed         int // units their host reported as failed
	Duplicates     int // results byte-identical to a merged one, not merged
	OverLimit      int // results over the campaign's per-account bound, not merged
	SamplesTrained int64
	OpenedAt       time.Time
	Deadline       time.Time
	ClosedAt       *time.Time
	MetricsJSON    *string
	EvalError      string
	// OptState names the blob of the server optimiser's state after this round's
	// update; empty for plain averaging and before the close.
	OptState string
}

// Work unit states.
const (
	WUIssued   = "issued"   // held by its host
	WUExpired  = "expired"  // past its deadline; its slot may be reissued, a result is still welcome while the round is open
	WUAccepted = "accepted" // its result was merged into the round's quorum
	WULate     = "late"     // its result arrived after the round closed
	WUStale    = "stale"    // asynchronous mode: its result was over max_staleness versions old
	WUClosed   = "closed"   // the round closed before a result arrived
	WUAborted  = "aborted"  // the host detached or the campaign stopped
	WUFailed   = "failed"   // its host reported it could not finish it; the slot may be reissued
	// WUDuplicate and WUOverLimit: its result was recorded but not merged (a copy of a
	// merged delta, or over the account's bound); the slot may be reissued.
	WUDuplicate = "duplicate"
	WUOverLimit = "over_limit"
)

// WorkUnit is one issue of a round's slot to a host. Seed is stored bit-cast to int64.
type WorkUnit struct {
	ID            int64
	CampaignID    int64
	Round         int
	Slot          int
	Attempt       int
	HostID        int64
	Seed          int64
	FragmentCount int
	FLOPs         int64 `gorm:"column:flops"`
	State         string
	IssuedAt      time.Time
	Deadline      time.Time
	Progress      float64
	FinishedAt    *time.Time
}

// Result outcomes stored in the results table, beyond protocol's accepted and late.
const (
	OutcomeInvalid = "invalid"
	// OutcomeFailed records a host's failure report: no delta (sha256 and size are
	// empty), the reason and message in Reason.
	OutcomeFailed = "failed"
)

// Result records every upload that was read in full (accepted, late or invalid) and
// every failure report.
type Result struct {
	ID         int64
	WorkUnitID int64
	HostID     int64
	CampaignID int64
	Round      int
	// BufferRound is the version whose fold takes the result: Round in synchronous
	// mode, the version open at arrival in asynchronous mode.
	BufferRound int
	Staleness   int     // BufferRound - Round
	Weight      float64 // the mode's weight in the fold (staleness discount)
	SHA256      string  `gorm:"column:sha256"`
	Size        int64
	Outcome     string
	Reason      string
	Samples     int64
	Loss        float64
	Norm        float64
	Credit      float64
	// Flag marks a result one of a set of byte-identical deltas of a round: on the
	// merged copy the results that duplicated it, on a duplicate the one it copies.
	Flag      string
	CreatedAt time.Time
	// Data holds the delta itself when it is at most InlineMax bytes (then no blob file
	// exists); nil otherwise, and cleared once the round is closed.
	Data []byte
}

// InlineMax is the largest delta kept in its result row rather than a blob file.
const InlineMax = 64 << 10
