package tray

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// UnitName is the systemd user unit the texgrid-volunteer package installs.
const UnitName = "texgrid-volunteer.service"

// Service starts and stops the daemon where it runs as a systemd user service, through
// `systemctl --user`. The zero value is not usable; see NewService.
type Service struct {
	systemctl string // path or name of systemctl
	unit      string
}

// NewService returns a Service for unit run by the systemctl at path ("" for the one
// on PATH).
func NewService(systemctl, unit string) *Service {
	if systemctl == "" {
		systemctl = "systemctl"
	}
	return &Service{systemctl: systemctl, unit: unit}
}

// ServiceState is what systemd says about the unit.
type ServiceState struct {
	Installed bool // the user manager knows the unit
	Active    bool // it runs (or is starting)
}

// State asks the user manager about the unit. No user manager, or no such unit, is
// Installed false with a nil error: the tray then hides start and stop.
func (s *Service) State(ctx context.Context) ServiceState {
	out, err := s.run(ctx, "show", "--property=LoadState,ActiveState", s.unit)
	if err != nil {
		return ServiceState{}
	}
	var st ServiceState
	for _, line := range strings.Split(out, "\n") {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		switch k {
		case "LoadState":
			st.Installed = v == "loaded"
		case "ActiveState":
			st.Active = v == "active" || v == "activating" || v == "reloading"
		}
	}
	return st
}

// Start starts the unit.
func (s *Service) Start(ctx context.Context) error {
	_, err := s.run(ctx, "start", s.unit)
	return err
}

// Stop stops the unit; the daemon checkpoints its work unit on SIGTERM.
func (s *Service) Stop(ctx context.Context) error {
	_, err := s.run(ctx, "stop", s.unit)
	return err
}

func (s *Service) run(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	args = append([]string{"--user", "--no-ask-password"}, args...)
	cmd := exec.CommandContext(ctx, s.systemctl, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}
