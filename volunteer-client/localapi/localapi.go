// Package localapi is the contract between a running volunteer-client and the programs
// that control it on the same machine (the `volunteer-client status|pause|resume`
// commands and the tray app): request and response types, endpoint paths, the files in
// the state directory that say where the API listens and which token it wants, and a
// small Client. It imports nothing from texgrid, so a tray can depend on it alone.
//
// The API listens on 127.0.0.1 on a port chosen by the OS, written to AddrFile in the
// state directory; every request must send "Authorization: Bearer <token>" with the
// token from TokenFile (mode 0600), like BOINC's GUI RPC password. Only someone who
// can read the state directory can control the client.
//
// # Versioning
//
// Version only goes up; Status.APIVersion carries it, so a tray can tell which fields
// and endpoints the client it talks to has. Fields and endpoints are only added.
//
//	1 (2026-11-21): state, pause, resume, preferences.
//	2 (2026-12-02): Status gains APIVersion, Seq (a change counter), Host (the host's
//	  credit and results from the server's record), ServerError, PausedUntil;
//	  WorkUnit gains Epochs, StartedAt and SecondsLeft; GET /v1/state/wait waits for
//	  a change; POST /v1/pause?for=DURATION pauses until a time (snooze).
package localapi

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// Files in the state directory.
const (
	AddrFile  = "localapi.addr"  // "127.0.0.1:<port>" of the running client
	TokenFile = "localapi.token" // the bearer token, mode 0600, rewritten at every start
)

// Version is the local API version this build serves (see the package doc).
const Version = 2

// Endpoints, all relative to http://<addr>.
const (
	PathState = "/v1/state" // GET: Status
	// PathWait is GET ?after=SEQ&timeout=SECONDS (version 2): answers Status as soon
	// as Status.Seq > SEQ, or the current Status after timeout seconds (1..MaxWait,
	// default 30). A tray calls it in a loop instead of polling.
	PathWait = "/v1/state/wait"
	// PathPause is POST: pause between batches; answers Status. With ?for=DURATION
	// (Go syntax such as "1h", 1s..MaxSnooze; version 2) the client resumes by itself
	// at Status.PausedUntil.
	PathPause       = "/v1/pause"
	PathResume      = "/v1/resume"      // POST: resume; answers Status
	PathPreferences = "/v1/preferences" // GET: effective Prefs; PUT PrefsPatch: answers Prefs; DELETE: drop local changes
)

// Limits of the query parameters.
const (
	MaxWait   = 5 * time.Minute // longest wait timeout
	MaxSnooze = 7 * 24 * time.Hour
)

// Client states shown to the volunteer.
const (
	StateIdle    = "idle"    // not attached or between work units with nothing to do
	StateWorking = "working" // downloading, training or uploading a work unit
	StatePaused  = "paused"  // paused by the volunteer (pause command or tray)
	StateWaiting = "waiting" // blocked by a preference (time window, not idle) or backing off
)

// Work unit phases within StateWorking.
const (
	PhaseDownloading = "downloading"
	PhaseTraining    = "training"
	PhaseUploading   = "uploading"
)

// Status is GET /v1/state: what the client is doing right now.
type Status struct {
	APIVersion int `json:"api_version"` // Version of the serving client; 0 from a version-1 client
	// Seq goes up by at least one at every change of what Status shows, while the
	// client runs; it starts again at 1 when the client restarts.
	Seq         uint64     `json:"seq"`
	State       string     `json:"state"`            // one of the State* constants
	Reason      string     `json:"reason,omitempty"` // why waiting or idle, for humans
	Server      string     `json:"server,omitempty"` // project server URL
	HostID      int64      `json:"host_id,omitempty"`
	WorkUnit    *WorkUnit  `json:"work_unit,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	// ServerError is the last failure to reach the project server (network error,
	// 5xx); empty once a call succeeded again.
	ServerError string `json:"server_error,omitempty"`
	// PausedUntil is when a timed pause (snooze) ends by itself; nil otherwise.
	PausedUntil *time.Time `json:"paused_until,omitempty"`
	// Host is the host's record on the server (credit, results); nil until read.
	Host      *Host `json:"host,omitempty"`
	Completed int   `json:"completed"` // results accepted since start
	Late      int   `json:"late"`      // results answered late since start
	// BusySeconds is the wall time spent training batches since start, and
	// ThrottledSeconds the time slept between them for the CPU limit: their ratio is
	// the duty cycle the limit sets.
	BusySeconds      float64 `json:"busy_seconds"`
	ThrottledSeconds float64 `json:"throttled_seconds"`
	Prefs            Prefs   `json:"prefs"`
	ClientVersion    string  `json:"client_version"`
}

// WorkUnit is the current work unit as the volunteer sees it.
type WorkUnit struct {
	ID         int64     `json:"id"`
	CampaignID int64     `json:"campaign_id"`
	Round      int       `json:"round"`
	Phase      string    `json:"phase"`    // one of the Phase* constants
	Progress   float64   `json:"progress"` // 0..1 of training
	Epoch      int       `json:"epoch"`
	Loss       float64   `json:"loss,omitempty"`
	Resumed    bool      `json:"resumed,omitempty"` // continued from a checkpoint
	Deadline   time.Time `json:"deadline"`
	Epochs     int       `json:"epochs,omitempty"`     // epochs of the work unit; Epoch counts from 0
	StartedAt  time.Time `json:"started_at,omitempty"` // when this run of training began
	// SecondsLeft estimates the training time left from the progress rate since
	// StartedAt; 0 while unknown.
	SecondsLeft float64 `json:"seconds_left,omitempty"`
}

// Host is the host's record as the project server keeps it (GET /api/v1/hosts/self),
// passed on by the client.
type Host struct {
	Credit         float64   `json:"credit"`          // total credit, one per GFLOP of valid work
	ResultsValid   int       `json:"results_valid"`   // accepted or late
	ResultsInvalid int       `json:"results_invalid"` // refused as invalid
	ErrorRate      float64   `json:"error_rate"`
	FetchedAt      time.Time `json:"fetched_at"` // when the client read it
}

// Prefs are the volunteer's preferences as the client applies them. Zero values are
// not defaults: the effective Prefs always have every field set (see Validate).
type Prefs struct {
	MaxThreads        int     `json:"max_threads"`          // training threads, 1..cores
	CPULimitPercent   int     `json:"cpu_limit_percent"`    // duty cycle, 1..100: busy / (busy + sleep between batches)
	RunOnlyWhenIdle   bool    `json:"run_only_when_idle"`   // compute only after IdleMinutes without user input and low load
	IdleMinutes       int     `json:"idle_minutes"`         // minutes without input before the machine counts as idle
	IdleMaxLoad       float64 `json:"idle_max_load"`        // 1-minute load average per core above which the machine is busy
	MaxMemoryMB       int64   `json:"max_memory_mb"`        // refuse work units whose estimate exceeds this
	MaxDiskMB         int64   `json:"max_disk_mb"`          // state directory budget: image cache plus work files
	TimeWindow        string  `json:"time_window"`          // "HH:MM-HH:MM" local time, may wrap midnight; "" = always
	CheckpointSeconds int     `json:"checkpoint_seconds"`   // seconds between training checkpoints
	HeartbeatSeconds  int     `json:"heartbeat_seconds"`    // seconds between heartbeats while training
	MaxRetryDelaySecs int     `json:"max_retry_delay_secs"` // cap of the exponential backoff
}

// PrefsPatch is PUT /v1/preferences: only the fields that are set change. The change
// is the highest layer of precedence and survives restarts until DELETE clears it.
type PrefsPatch struct {
	MaxThreads        *int     `json:"max_threads,omitempty"`
	CPULimitPercent   *int     `json:"cpu_limit_percent,omitempty"`
	RunOnlyWhenIdle   *bool    `json:"run_only_when_idle,omitempty"`
	IdleMinutes       *int     `json:"idle_minutes,omitempty"`
	IdleMaxLoad       *float64 `json:"idle_max_load,omitempty"`
	MaxMemoryMB       *int64   `json:"max_memory_mb,omitempty"`
	MaxDiskMB         *int64   `json:"max_disk_mb,omitempty"`
	TimeWindow        *string  `json:"time_window,omitempty"`
	CheckpointSeconds *int     `json:"checkpoint_seconds,omitempty"`
	HeartbeatSeconds  *int     `json:"heartbeat_seconds,omitempty"`
	MaxRetryDelaySecs *int     `json:"max_retry_delay_secs,omitempty"`
}

// Apply returns p with the patch's set fields copied over it.
func (pp PrefsPatch) Apply(p Prefs) Prefs {
	if pp.MaxThreads != nil {
		p.MaxThreads = *pp.MaxThreads
	}
	if pp.CPULimitPercent != nil {
		p.CPULimitPercent = *pp.CPULimitPercent
	}
	if pp.RunOnlyWhenIdle != nil {
		p.RunOnlyWhenIdle = *pp.RunOnlyWhenIdle
	}
	if pp.IdleMinutes != nil {
		p.IdleMinutes = *pp.IdleMinutes
	}
	if pp.IdleMaxLoad != nil {
		p.IdleMaxLoad = *pp.IdleMaxLoad
	}
	if pp.MaxMemoryMB != nil {
		p.MaxMemoryMB = *pp.MaxMemoryMB
	}
	if pp.MaxDiskMB != nil {
		p.MaxDiskMB = *pp.MaxDiskMB
	}
	if pp.TimeWindow != nil {
		p.TimeWindow = *pp.TimeWindow
	}
	if pp.CheckpointSeconds != nil {
		p.CheckpointSeconds = *pp.CheckpointSeconds
	}
	if pp.HeartbeatSeconds != nil {
		p.HeartbeatSeconds = *pp.HeartbeatSeconds
	}
	if pp.MaxRetryDelaySecs != nil {
		p.MaxRetryDelaySecs = *pp.MaxRetryDelaySecs
	}
	return p
}

// Merge returns the patch with other's set fields laid over pp's.
func (pp PrefsPatch) Merge(other PrefsPatch) PrefsPatch {
	set := func(dst **int, src *int) {
		if src != nil {
			*dst = src
		}
	}
	set(&pp.MaxThreads, other.MaxThreads)
	set(&pp.CPULimitPercent, other.CPULimitPercent)
	set(&pp.IdleMinutes, other.IdleMinutes)
	set(&pp.CheckpointSeconds, other.CheckpointSeconds)
	set(&pp.HeartbeatSeconds, other.HeartbeatSeconds)
	set(&pp.MaxRetryDelaySecs, other.MaxRetryDelaySecs)
	if other.RunOnlyWhenIdle != nil {
		pp.RunOnlyWhenIdle = other.RunOnlyWhenIdle
	}
	if other.IdleMaxLoad != nil {
		pp.IdleMaxLoad = other.IdleMaxLoad
	}
	if other.MaxMemoryMB != nil {
		pp.MaxMemoryMB = other.MaxMemoryMB
	}
	if other.MaxDiskMB != nil {
		pp.MaxDiskMB = other.MaxDiskMB
	}
	if other.TimeWindow != nil {
		pp.TimeWindow = other.TimeWindow
	}
	return pp
}

// ErrBadPrefs marks a preference value out of range; the message names the field.
var ErrBadPrefs = errors.New("bad preference")

// Validate reports the first out-of-range field, naming it and its allowed range.
func (p Prefs) Validate() error {
	bad := func(field string, v any, want string) error {
		return fmt.Errorf("%w: %s = %v, want %s", ErrBadPrefs, field, v, want)
	}
	switch {
	case p.MaxThreads < 1 || p.MaxThreads > 1024:
		return bad("max_threads", p.MaxThreads, "1..1024")
	case p.CPULimitPercent < 1 || p.CPULimitPercent > 100:
		return bad("cpu_limit_percent", p.CPULimitPercent, "1..100")
	case p.IdleMinutes < 0 || p.IdleMinutes > 24*60:
		return bad("idle_minutes", p.IdleMinutes, "0..1440")
	case p.IdleMaxLoad < 0 || p.IdleMaxLoad > 64:
		return bad("idle_max_load", p.IdleMaxLoad, "0..64 (load average per core)")
	case p.MaxMemoryMB < 16:
		return bad("max_memory_mb", p.MaxMemoryMB, "at least 16")
	case p.MaxDiskMB < 16:
		return bad("max_disk_mb", p.MaxDiskMB, "at least 16")
	case p.CheckpointSeconds < 1 || p.CheckpointSeconds > 24*3600:
		return bad("checkpoint_seconds", p.CheckpointSeconds, "1..86400")
	case p.HeartbeatSeconds < 1 || p.HeartbeatSeconds > 24*3600:
		return bad("heartbeat_seconds", p.HeartbeatSeconds, "1..86400")
	case p.MaxRetryDelaySecs < 1 || p.MaxRetryDelaySecs > 24*3600:
		return bad("max_retry_delay_secs", p.MaxRetryDelaySecs, "1..86400")
	}
	if _, err := ParseWindow(p.TimeWindow); err != nil {
		return err
	}
	return nil
}

// Window is a daily span of local time, [Start, End) in minutes after midnight. When
// End <= Start the span wraps midnight ("22:00-07:00"). The zero Window with Always set
// allows every minute.
type Window struct {
	Always     bool
	Start, End int
}

var windowRE = regexp.MustCompile(`^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$`)

// ParseWindow reads "HH:MM-HH:MM" (24-hour local time); "" means always.
func ParseWindow(s string) (Window, error) {
	if s == "" {
		return Window{Always: true}, nil
	}
	m := windowRE.FindStringSubmatch(s)
	if m == nil {
		return Window{}, fmt.Errorf("%w: time_window = %q, want \"HH:MM-HH:MM\" such as \"22:00-07:00\", or \"\" for always", ErrBadPrefs, s)
	}
	var v [4]int
	for i := range v {
		v[i], _ = strconv.Atoi(m[i+1])
	}
	if v[0] > 23 || v[2] > 24 || v[1] > 59 || v[3] > 59 || (v[2] == 24 && v[3] != 0) {
		return Window{}, fmt.Errorf("%w: time_window = %q has an hour or minute out of range", ErrBadPrefs, s)
	}
	w := Window{Start: v[0]*60 + v[1], End: v[2]*60 + v[3]}
	if w.Start == w.End {
		return Window{}, fmt.Errorf("%w: time_window = %q is empty; use \"\" for always", ErrBadPrefs, s)
	}
	return w, nil
}

// Contains reports whether the local time t falls in the window.
func (w Window) Contains(t time.Time) bool {
	if w.Always {
		return true
	}
	m := t.Hour()*60 + t.Minute()
	if w.Start < w.End {
		return m >= w.Start && m < w.End
	}
	return m >= w.Start || m < w.End
}

// Next returns the first time at or after t that falls in the window.
func (w Window) Next(t time.Time) time.Time {
	if w.Contains(t) {
		return t
	}
	start := time.Date(t.Year(), t.Month(), t.Day(), w.Start/60, w.Start%60, 0, 0, t.Location())
	if !start.After(t) {
		start = start.AddDate(0, 0, 1)
	}
	return start
}

// Error is the body of every non-2xx answer of the local API.
type Error struct {
	Message string `json:"error"`
}
