package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/texgrid/texgrid/volunteer-client/internal/state"
	"github.com/texgrid/texgrid/volunteer-client/localapi"
)

// dial opens the local API of the client running on a state directory.
func dial(dirFlag string) (*localapi.Client, error) {
	dir, err := state.Open(dirFlag, false)
	if err != nil {
		return nil, err
	}
	return localapi.Dial(dir.Path)
}

func runStatus(ctx context.Context, env *Env, args []string) error {
	fs, dirFlag := newFlags(env, "status", "[--json]")
	asJSON := fs.Bool("json", false, "print the raw status JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	c, err := dial(*dirFlag)
	if err != nil {
		return err
	}
	st, err := c.State(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(env.Stdout, st)
	}
	printStatus(env.Stdout, st)
	return nil
}

func printStatus(w io.Writer, st *localapi.Status) {
	fmt.Fprintf(w, "state:     %s", st.State)
	if st.Reason != "" {
		fmt.Fprintf(w, " (%s)", st.Reason)
	}
	fmt.Fprintf(w, "\nserver:    %s (host %d)\n", st.Server, st.HostID)
	if wu := st.WorkUnit; wu != nil {
		fmt.Fprintf(w, "work unit: %d, campaign %d round %d, %s %.1f%% (epoch %d, loss %.4f)", wu.ID, wu.CampaignID, wu.Round, wu.Phase, 100*wu.Progress, wu.Epoch+1, wu.Loss)
		if wu.Resumed {
			fmt.Fprint(w, ", resumed from a checkpoint")
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "results:   %d accepted, %d late\n", st.Completed, st.Late)
	if st.LastError != "" {
		fmt.Fprintf(w, "last error: %s\n", st.LastError)
	}
	p := st.Prefs
	window := p.TimeWindow
	if window == "" {
		window = "always"
	}
	fmt.Fprintf(w, "prefs:     %d threads, CPU limit %d%%, only when idle %v, memory %d MB, disk %d MB, window %s\n",
		p.MaxThreads, p.CPULimitPercent, p.RunOnlyWhenIdle, p.MaxMemoryMB, p.MaxDiskMB, window)
}

func runPause(ctx context.Context, env *Env, args []string) error {
	fs, dirFlag := newFlags(env, "pause", "")
	if err := parse(fs, args); err != nil {
		return err
	}
	c, err := dial(*dirFlag)
	if err != nil {
		return err
	}
	st, err := c.Pause(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "paused (the current batch finishes first); state %s\n", st.State)
	return nil
}

func runResume(ctx context.Context, env *Env, args []string) error {
	fs, dirFlag := newFlags(env, "resume", "")
	if err := parse(fs, args); err != nil {
		return err
	}
	c, err := dial(*dirFlag)
	if err != nil {
		return err
	}
	st, err := c.Resume(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "resumed; state %s\n", st.State)
	return nil
}

// setFlags collects repeated --set name=value.
type setFlags []string

func (s *setFlags) String() string     { return strings.Join(*s, ",") }
func (s *setFlags) Set(v string) error { *s = append(*s, v); return nil }

func runPrefs(ctx context.Context, env *Env, args []string) error {
	fs, dirFlag := newFlags(env, "prefs", "[--set name=value ...] [--reset]")
	var sets setFlags
	fs.Var(&sets, "set", "change a preference of the running client, e.g. --set cpu_limit_percent=50 (repeatable)")
	reset := fs.Bool("reset", false, "drop every change made through the local API")
	if err := parse(fs, args); err != nil {
		return err
	}
	c, err := dial(*dirFlag)
	if err != nil {
		return err
	}
	var p *localapi.Prefs
	switch {
	case *reset:
		p, err = c.ResetPrefs(ctx)
	case len(sets) > 0:
		var patch localapi.PrefsPatch
		if patch, err = ParseSets(sets); err != nil {
			return err
		}
		p, err = c.SetPrefs(ctx, patch)
	default:
		p, err = c.Prefs(ctx)
	}
	if err != nil {
		return err
	}
	return printJSON(env.Stdout, p)
}

// ParseSets turns name=value pairs (the JSON names of localapi.Prefs) into a patch.
func ParseSets(sets []string) (localapi.PrefsPatch, error) {
	obj := map[string]json.RawMessage{}
	for _, s := range sets {
		k, v, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return localapi.PrefsPatch{}, fmt.Errorf("%w: --set %q: want name=value", errUsage, s)
		}
		if k == "time_window" && v != `""` {
			v = strconv.Quote(v)
		}
		obj[k] = json.RawMessage(v)
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return localapi.PrefsPatch{}, fmt.Errorf("%w: --set: %v", errUsage, err)
	}
	var patch localapi.PrefsPatch
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&patch); err != nil {
		return patch, fmt.Errorf("%w: --set: %v", errUsage, err)
	}
	return patch, nil
}

func printJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}
