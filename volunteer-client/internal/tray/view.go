// Package tray is the volunteer's tray icon: it follows a running volunteer-client
// through the local API alone (volunteer-client/localapi), shows its state as an icon
// and a tooltip, and offers pause, snooze, common preferences, the project page, the
// host's credit and, where the client runs as a systemd user service, starting and
// stopping it. It never reaches into the daemon's internals; quitting the tray leaves
// the daemon working.
//
// On Linux the icon is a StatusNotifierItem on the session D-Bus (fyne.io/systray,
// no cgo), with its menu exported as com.canonical.dbusmenu.
package tray

import (
	"fmt"
	"strings"
	"time"

	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

// Kind is what the icon shows at a glance.
type Kind int

// The icon kinds, one per state a volunteer tells apart.
const (
	Computing         Kind = iota // downloading, training or uploading a work unit
	Paused                        // paused or snoozed by the volunteer
	Waiting                       // held back by a preference (idle only, time window) or a refused work unit
	NoWork                        // attached, nothing to do (the server has no work, or between work units)
	DaemonUnreachable             // no client answers on the local API
	ServerUnreachable             // the client cannot reach the project server
)

var kindNames = [...]string{"computing", "paused", "waiting", "no work", "daemon unreachable", "server unreachable"}

func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return fmt.Sprintf("Kind(%d)", int(k))
	}
	return kindNames[k]
}

// View is everything the tray shows for one answer of the local API.
type View struct {
	Kind    Kind
	Title   string // one line: "texgrid: computing 42%"
	Tooltip string // several lines: state, campaign, round, epoch, percent, time left
	Status  string // the first, disabled menu line

	Reachable  bool   // the daemon answered; the controls below make sense
	PauseLabel string // "Pause" or "Resume"
	Credit     string // "Credit: 12.5" or "Credit: unknown yet"
	Results    string // "Results: 4 valid, 0 invalid"
	CPU        int    // the CPU share preference, to check 25/50/100
	IdleOnly   bool   // run only when idle is on
	ProjectURL string // the project server's page; "" when unknown
}

// Describe turns the daemon's Status, or the error of asking for it, into a View.
func Describe(st *localapi.Status, err error, now time.Time) View {
	if err != nil || st == nil {
		why := "no answer"
		if err != nil {
			why = err.Error()
		}
		return View{
			Kind: DaemonUnreachable, Title: "texgrid: daemon unreachable",
			Tooltip:    "texgrid: daemon unreachable\n" + why,
			Status:     "Daemon unreachable",
			PauseLabel: "Pause", Credit: "Credit: unknown", Results: "Results: unknown",
		}
	}
	v := View{
		Reachable: true, CPU: st.Prefs.CPULimitPercent, IdleOnly: st.Prefs.RunOnlyWhenIdle,
		ProjectURL: st.Server, PauseLabel: "Pause",
		Credit: "Credit: unknown yet", Results: "Results: unknown yet",
	}
	if h := st.Host; h != nil {
		v.Credit = fmt.Sprintf("Credit: %s", formatCredit(h.Credit))
		v.Results = fmt.Sprintf("Results: %d valid, %d invalid", h.ResultsValid, h.ResultsInvalid)
	}
	var head string
	switch {
	case st.State == localapi.StatePaused:
		v.Kind, v.PauseLabel = Paused, "Resume"
		head = "paused"
		if st.PausedUntil != nil {
			head = "snoozed until " + st.PausedUntil.Local().Format("15:04")
		}
	case st.ServerError != "":
		v.Kind, head = ServerUnreachable, "server unreachable"
	case st.State == localapi.StateWorking:
		v.Kind, head = Computing, "computing"
		if st.WorkUnit != nil && st.WorkUnit.Phase != localapi.PhaseTraining && st.WorkUnit.Phase != "" {
			head = st.WorkUnit.Phase
		}
	case st.State == localapi.StateWaiting:
		v.Kind, head = Waiting, "waiting"
	default:
		v.Kind, head = NoWork, "no work"
	}
	lines := []string{"texgrid: " + head}
	if st.Reason != "" && v.Kind != Computing {
		lines = append(lines, st.Reason)
	}
	if v.Kind == ServerUnreachable {
		lines = append(lines, st.ServerError)
	}
	title := "texgrid: " + head
	if w := st.WorkUnit; w != nil {
		pct := int(w.Progress*100 + 1e-9)
		title = fmt.Sprintf("texgrid: %s %d%%", head, pct)
		epoch := fmt.Sprintf("epoch %d", w.Epoch+1)
		if w.Epochs > 0 {
			epoch = fmt.Sprintf("epoch %d/%d", w.Epoch+1, w.Epochs)
		}
		lines = append(lines, fmt.Sprintf("campaign %d, round %d, %s, %d%%", w.CampaignID, w.Round, epoch, pct))
		if w.SecondsLeft > 0 {
			lines = append(lines, "about "+formatLeft(time.Duration(w.SecondsLeft*float64(time.Second)))+" left")
		}
		if !w.Deadline.IsZero() {
			lines = append(lines, "deadline "+w.Deadline.Local().Format("Mon 15:04"))
		}
	}
	v.Title = title
	v.Tooltip = strings.Join(lines, "\n")
	v.Status = strings.ToUpper(title[len("texgrid: "):][:1]) + title[len("texgrid: ")+1:]
	return v
}

// formatLeft rounds a time left the way a person says it.
func formatLeft(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Round(time.Second)/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d.Round(time.Minute)/time.Minute))
	default:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%d h %02d min", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
}

func formatCredit(c float64) string {
	if c >= 1000 {
		return fmt.Sprintf("%.0f", c)
	}
	return fmt.Sprintf("%.1f", c)
}
