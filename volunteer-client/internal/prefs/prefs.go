// Package prefs merges a volunteer's preferences from four layers, in this order of
// precedence (a later layer wins for each field it sets):
//
//  1. defaults derived from the machine (Defaults);
//  2. the preferences file, prefs.json in the state directory (hand-edited);
//  3. command-line flags of `volunteer-client run`;
//  4. local changes made through the local API (the status/pause/resume commands and
//     the tray), kept in prefs-override.json so they survive a restart until reset.
//
// Every layer is a localapi.PrefsPatch; the effective value is validated as a whole and
// a bad value anywhere is an error naming the field and the layer it came from.
package prefs

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"sync"

	"github.com/texgrid/texgrid/volunteer-client/internal/state"
	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

// File names in the state directory.
const (
	FileName     = "prefs.json"          // layer 2, written by the volunteer
	OverrideName = "prefs-override.json" // layer 4, written by the client
)

// Defaults returns the preferences of a machine with the given cores and memory.
func Defaults(cores int, memBytes int64) localapi.Prefs {
	if cores < 1 {
		cores = 1
	}
	mem := memBytes / 2 >> 20
	if mem < 256 {
		mem = 256
	}
	return localapi.Prefs{
		MaxThreads:        cores,
		CPULimitPercent:   100,
		RunOnlyWhenIdle:   false,
		IdleMinutes:       3,
		IdleMaxLoad:       0.5,
		MaxMemoryMB:       mem,
		MaxDiskMB:         2048,
		TimeWindow:        "",
		CheckpointSeconds: 60,
		HeartbeatSeconds:  60,
		MaxRetryDelaySecs: 300,
	}
}

// ReadPatch reads a JSON preferences file as a patch; a missing file is an empty
// patch, an unknown field or a wrong type an error naming the file.
func ReadPatch(path string) (localapi.PrefsPatch, error) {
	var p localapi.PrefsPatch
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return p, fmt.Errorf("preferences: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, fmt.Errorf("preferences file %s: %w", path, err)
	}
	return p, nil
}

// Flags registers the preference flags on fs; Patch returns those the user set.
type Flags struct {
	fs *flag.FlagSet
	v  struct {
		threads, cpu, idleMin, ckpt, hb, retry int
		idle                                   bool
		load                                   float64
		mem, disk                              int64
		window                                 string
	}
}

// RegisterFlags adds the preference flags to fs.
func RegisterFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{fs: fs}
	fs.IntVar(&f.v.threads, "max-threads", 0, "training threads (default: all cores)")
	fs.IntVar(&f.v.cpu, "cpu-limit", 0, "percent of the time spent computing: the client sleeps between batches (default 100)")
	fs.BoolVar(&f.v.idle, "only-when-idle", false, "compute only when the machine is idle")
	fs.IntVar(&f.v.idleMin, "idle-minutes", 0, "minutes without input before the machine counts as idle (default 3)")
	fs.Float64Var(&f.v.load, "idle-max-load", 0, "1-minute load per core above which the machine is busy (default 0.5)")
	fs.Int64Var(&f.v.mem, "max-memory-mb", 0, "refuse work units estimated to need more memory (default: half the RAM)")
	fs.Int64Var(&f.v.disk, "max-disk-mb", 0, "disk budget of the state directory, image cache included (default 2048)")
	fs.StringVar(&f.v.window, "time-window", "", `daily local time window such as "22:00-07:00" (default: always)`)
	fs.IntVar(&f.v.ckpt, "checkpoint-seconds", 0, "seconds between checkpoints while training (default 60)")
	fs.IntVar(&f.v.hb, "heartbeat-seconds", 0, "seconds between heartbeats while training (default 60)")
	fs.IntVar(&f.v.retry, "max-retry-delay", 0, "cap of the retry backoff in seconds (default 300)")
	return f
}

// Patch returns the flags that were given on the command line.
func (f *Flags) Patch() localapi.PrefsPatch {
	var p localapi.PrefsPatch
	f.fs.Visit(func(fl *flag.Flag) {
		switch fl.Name {
		case "max-threads":
			p.MaxThreads = &f.v.threads
		case "cpu-limit":
			p.CPULimitPercent = &f.v.cpu
		case "only-when-idle":
			p.RunOnlyWhenIdle = &f.v.idle
		case "idle-minutes":
			p.IdleMinutes = &f.v.idleMin
		case "idle-max-load":
			p.IdleMaxLoad = &f.v.load
		case "max-memory-mb":
			p.MaxMemoryMB = &f.v.mem
		case "max-disk-mb":
			p.MaxDiskMB = &f.v.disk
		case "time-window":
			p.TimeWindow = &f.v.window
		case "checkpoint-seconds":
			p.CheckpointSeconds = &f.v.ckpt
		case "heartbeat-seconds":
			p.HeartbeatSeconds = &f.v.hb
		case "max-retry-delay":
			p.MaxRetryDelaySecs = &f.v.retry
		}
	})
	return p
}

// Store holds the layers and the effective preferences; it is safe for concurrent use.
type Store struct {
	mu       sync.Mutex
	dir      *state.Dir // nil: overrides are not persisted
	defaults localapi.Prefs
	file     localapi.PrefsPatch
	flags    localapi.PrefsPatch
	override localapi.PrefsPatch
	eff      localapi.Prefs
	notify   []chan struct{}
}

// Load builds a Store from the defaults, the state directory's files and the flags.
// Each layer is checked on its own, so the error says which one holds the bad value.
func Load(dir *state.Dir, defaults localapi.Prefs, flags localapi.PrefsPatch) (*Store, error) {
	s := &Store{dir: dir, defaults: defaults, flags: flags}
	if err := defaults.Validate(); err != nil {
		return nil, fmt.Errorf("default preferences: %w", err)
	}
	if dir != nil {
		var err error
		if s.file, err = ReadPatch(dir.File(FileName)); err != nil {
			return nil, err
		}
		if s.override, err = ReadPatch(dir.File(OverrideName)); err != nil {
			return nil, err
		}
	}
	p := defaults
	for _, l := range []struct {
		name  string
		patch localapi.PrefsPatch
	}{{"preferences file " + FileName, s.file}, {"command-line flags", s.flags}, {"local changes " + OverrideName, s.override}} {
		p = l.patch.Apply(p)
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("%s: %w", l.name, err)
		}
	}
	s.eff = p
	return s, nil
}

// Get returns the effective preferences.
func (s *Store) Get() localapi.Prefs {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.eff
}

// Set lays a local change over the current ones, persists it and returns the new
// effective preferences. A bad value changes nothing.
func (s *Store) Set(patch localapi.PrefsPatch) (localapi.Prefs, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	over := s.override.Merge(patch)
	p := over.Apply(s.flags.Apply(s.file.Apply(s.defaults)))
	if err := p.Validate(); err != nil {
		return s.eff, err
	}
	if err := s.persist(over); err != nil {
		return s.eff, err
	}
	s.override, s.eff = over, p
	s.changed()
	return p, nil
}

// Reset drops the local changes.
func (s *Store) Reset() (localapi.Prefs, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dir != nil {
		if err := os.Remove(s.dir.File(OverrideName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return s.eff, fmt.Errorf("reset preferences: %w", err)
		}
	}
	s.override = localapi.PrefsPatch{}
	s.eff = s.flags.Apply(s.file.Apply(s.defaults))
	s.changed()
	return s.eff, nil
}

// Changed returns a channel closed at the next change of the effective preferences.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := make(chan struct{})
	s.notify = append(s.notify, c)
	return c
}

func (s *Store) changed() {
	for _, c := range s.notify {
		close(c)
	}
	s.notify = nil
}

func (s *Store) persist(p localapi.PrefsPatch) error {
	if s.dir == nil {
		return nil
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	if err := state.WriteFile(s.dir.File(OverrideName), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save preferences: %w", err)
	}
	return nil
}
