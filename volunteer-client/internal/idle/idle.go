// Package idle decides whether the volunteer's machine is idle enough to compute on
// when the volunteer asked for "run only when idle". Detector is an interface so the
// agent's tests control idleness; System is the real one on Linux: the 1-minute load
// average (without the client's own threads) and, when they can be read, the user's
// input idle time from X11 (xprintidle) or the logind sessions' IdleHint.
package idle

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/texgrid/texgrid/volunteer-client/internal/sysinfo"
)

// Detector answers whether the machine has been idle for at least idleFor with a load
// per core of at most maxLoad; reason says why not, for the status display.
type Detector interface {
	Idle(ctx context.Context, idleFor time.Duration, maxLoad float64) (idle bool, reason string)
}

// System is the Linux detector. The machine is idle when nobody has given input for
// idleFor (when input can be observed) and the load has stayed low for idleFor, as
// seen by this detector's calls. Use it through a pointer; it is safe for concurrent use.
type System struct {
	Cores int
	// Own returns how many threads the client itself keeps busy right now; they are
	// subtracted from the load average so the client does not chase itself away.
	Own func() float64
	// Load returns the 1-minute load average; nil reads /proc/loadavg.
	Load func() (float64, error)
	// Input returns the time since the last user input; nil uses InputIdle.
	Input func(ctx context.Context) (time.Duration, bool)
	// Now is the clock; nil is time.Now.
	Now func() time.Time

	mu       sync.Mutex
	lastBusy time.Time
}

// Idle implements Detector.
func (s *System) Idle(ctx context.Context, idleFor time.Duration, maxLoad float64) (bool, string) {
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	cores := s.Cores
	if cores < 1 {
		cores = 1
	}
	loadf := s.Load
	if loadf == nil {
		loadf = sysinfo.LoadAvg
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if load, err := loadf(); err == nil {
		own := 0.0
		if s.Own != nil {
			own = s.Own()
		}
		per := (load - own) / float64(cores)
		if per > maxLoad {
			s.lastBusy = now
			return false, fmt.Sprintf("machine busy: load %.2f per core > %.2f", per, maxLoad)
		}
	}
	if quiet := now.Sub(s.lastBusy); !s.lastBusy.IsZero() && quiet < idleFor {
		return false, fmt.Sprintf("machine busy %s ago (waiting for %s of low load)", quiet.Round(time.Second), idleFor)
	}
	input := s.Input
	if input == nil {
		input = InputIdle
	}
	if away, ok := input(ctx); ok && away < idleFor {
		return false, fmt.Sprintf("user active %s ago (waiting for %s without input)", away.Round(time.Second), idleFor)
	}
	return true, ""
}

// InputIdle returns how long ago the user last gave input, from xprintidle when an X
// display is set, else from logind's IdleHint of the local graphical or text sessions.
// ok is false when neither is available.
func InputIdle(ctx context.Context) (time.Duration, bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if os.Getenv("DISPLAY") != "" {
		if out, err := exec.CommandContext(ctx, "xprintidle").Output(); err == nil {
			if ms, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil {
				return time.Duration(ms) * time.Millisecond, true
			}
		}
	}
	out, err := exec.CommandContext(ctx, "loginctl", "list-sessions", "--no-legend").Output()
	if err != nil {
		return 0, false
	}
	var least time.Duration = -1
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		props, err := exec.CommandContext(ctx, "loginctl", "show-session", f[0], "-p", "IdleHint", "-p", "IdleSinceHint", "-p", "Remote").Output()
		if err != nil {
			continue
		}
		d, ok := parseSession(props, time.Now())
		if ok && (least < 0 || d < least) {
			least = d
		}
	}
	if least < 0 {
		return 0, false
	}
	return least, true
}

// parseSession reads `loginctl show-session -p IdleHint -p IdleSinceHint -p Remote`
// output: a local session that is not idle counts as input now.
func parseSession(b []byte, now time.Time) (time.Duration, bool) {
	kv := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			kv[k] = v
		}
	}
	if kv["Remote"] == "yes" {
		return 0, false
	}
	switch kv["IdleHint"] {
	case "no":
		return 0, true
	case "yes":
		us, err := strconv.ParseInt(kv["IdleSinceHint"], 10, 64)
		if err != nil || us <= 0 {
			return 0, false
		}
		return now.Sub(time.UnixMicro(us)), true
	}
	return 0, false
}

// Always is a Detector for tests and machines that should ignore idleness: it answers
// the value of its field.
type Always struct{ Value bool }

// Idle implements Detector.
func (a Always) Idle(context.Context, time.Duration, float64) (bool, string) {
	if a.Value {
		return true, ""
	}
	return false, "machine in use"
}
