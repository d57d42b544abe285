package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/volunteer-client/internal/apiclient"
	"github.com/texgrid/texgrid/volunteer-client/internal/state"
	"github.com/texgrid/texgrid/volunteer-client/internal/sysinfo"
	"github.com/texgrid/texgrid/volunteer-client/internal/wu"
)

func runAttach(ctx context.Context, env *Env, args []string) error {
	fs, dirFlag := newFlags(env, "attach", "--server URL --account-key KEY [flags]")
	server := fs.String("server", "", "project server URL, e.g. http://127.0.0.1:8080 (required)")
	key := fs.String("account-key", "", "your account key from the project (required)")
	name := fs.String("name", "", "host name shown on the project (default: this machine's host name)")
	bench := fs.Duration("bench", 2*time.Second, "how long to measure this machine's speed")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *server == "" || *key == "" {
		return fmt.Errorf("%w: --server and --account-key are required", errUsage)
	}
	dir, err := state.Open(*dirFlag, true)
	if err != nil {
		return err
	}
	if err := dir.Lock(); err != nil {
		return fmt.Errorf("%w (stop it before attaching again)", err)
	}
	defer dir.Unlock()
	if id, _, err := dir.LoadIdentity(); err == nil {
		return fmt.Errorf("state dir %s is already attached to %s as host %d; run `volunteer-client detach --state-dir %s` first",
			dir.Path, id.Server, id.HostID, dir.Path)
	} else if !errors.Is(err, state.ErrNotAttached) {
		return err
	}
	api, err := apiclient.New(trimURL(*server), "", Version)
	if err != nil {
		return err
	}
	info := sysinfo.Probe()
	if *name != "" {
		info.Name = *name
	}
	fmt.Fprintf(env.Stderr, "measuring this machine (%d cores, %d MB) for %s ...\n", info.Cores, info.MemTotalBytes>>20, *bench)
	gflops, err := wu.Benchmark(ctx, runtime.NumCPU(), *bench)
	if err != nil {
		return err
	}
	resp, err := api.Register(ctx, protocol.RegisterHostRequest{
		AccountKey: *key, Name: info.Name, OS: info.OS, Arch: info.Arch, Cores: info.Cores,
		MemoryBytes: info.MemTotalBytes, GFLOPS: gflops, ClientVersion: Version,
	})
	if errors.Is(err, apiclient.ErrUnauthorized) {
		return fmt.Errorf("the server refused the account key: %w", err)
	}
	if err != nil {
		return fmt.Errorf("register with %s: %w", *server, err)
	}
	id := state.Identity{Server: api.BaseURL(), HostID: resp.HostID, Name: info.Name, GFLOPS: gflops, AttachedAt: time.Now().UTC()}
	if err := dir.SaveIdentity(id, resp.Token); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "attached to %s as host %d (%.1f GFLOP/s); state in %s\n", id.Server, id.HostID, gflops, dir.Path)
	return nil
}

func runDetach(ctx context.Context, env *Env, args []string) error {
	fs, dirFlag := newFlags(env, "detach", "[flags]")
	force := fs.Bool("force", false, "delete the local identity even if the server cannot be reached")
	if err := parse(fs, args); err != nil {
		return err
	}
	dir, err := state.Open(*dirFlag, false)
	if err != nil {
		return err
	}
	if err := dir.Lock(); err != nil {
		return fmt.Errorf("%w (stop it before detaching)", err)
	}
	defer dir.Unlock()
	id, tok, err := dir.LoadIdentity()
	if err != nil {
		return err
	}
	api, err := apiclient.New(id.Server, tok, Version)
	if err != nil {
		return err
	}
	if err := api.Detach(ctx); err != nil && !errors.Is(err, apiclient.ErrUnauthorized) {
		if !*force {
			return fmt.Errorf("tell %s: %w (use --force to forget the host locally anyway)", id.Server, err)
		}
		fmt.Fprintf(env.Stderr, "warning: %v; forgetting the host locally\n", err)
	}
	if err := dir.RemoveIdentity(); err != nil {
		return err
	}
	// The server released the host's work units; their checkpoints are worthless now.
	if err := os.RemoveAll(dir.File(state.WorkDir)); err != nil {
		return fmt.Errorf("detach: %w", err)
	}
	fmt.Fprintf(env.Stdout, "detached host %d from %s\n", id.HostID, id.Server)
	return nil
}
