package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/texgrid/texgrid/configs"
	"github.com/texgrid/texgrid/trainer/spec"
)

// loadModelSpec reads a spec from a file path, or by name from the shipped specs
// ("tcnn-small", "tcnn3").
func loadModelSpec(arg string) (*spec.Spec, error) {
	if arg == "" {
		return nil, fmt.Errorf("--model is required (a spec file or one of %s)", strings.Join(configs.ModelNames(), ", "))
	}
	if _, err := os.Stat(arg); err == nil {
		return spec.Load(arg)
	}
	b, err := configs.Model(strings.TrimSuffix(arg, ".json"))
	if err != nil {
		return nil, err
	}
	return spec.Parse(b)
}

// peakRSSMB returns the process's peak resident set size in MiB (Linux VmHWM), or 0
// where /proc is not available.
func peakRSSMB() float64 {
	if runtime.GOOS != "linux" {
		return 0
	}
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			var kb float64
			fmt.Sscanf(strings.TrimSpace(rest), "%f", &kb)
			return kb / 1024
		}
	}
	return 0
}
