package wu

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/texgrid/texgrid/trainer/tensor"
)

// This file is a test hook and nothing else: it lets the project's robust-aggregation
// test (project-server/internal/grid, TestRobustAggregation) run a real volunteer
// process that uploads a malicious delta. It is off unless two environment variables
// are both set, and a volunteer that has one without the other refuses to start.

// Environment variables of the test hook.
const (
	// EnvTestHooks must be "1" for any test hook to be honoured.
	EnvTestHooks = "TEXGRID_TEST_HOOKS"
	// EnvTestAdversary names how this volunteer corrupts every delta it uploads:
	// AdversaryNegate10 or AdversaryNoise.
	EnvTestAdversary = "TEXGRID_TEST_ADVERSARY"
)

// Adversaries of the test hook.
const (
	AdversaryNone     Adversary = ""
	AdversaryNegate10 Adversary = "negate10" // upload -10 x the honest delta
	AdversaryNoise    Adversary = "noise"    // upload Gaussian noise of the honest delta's L2 norm
)

// Adversary is how a test volunteer corrupts its deltas (AdversaryNone: it does not).
type Adversary string

// AdversaryFromEnv reads the test hook from getenv (os.Getenv). Without
// TEXGRID_TEST_ADVERSARY it is AdversaryNone; with it, TEXGRID_TEST_HOOKS must be "1"
// and the name known, or it is an error the volunteer refuses to start with.
func AdversaryFromEnv(getenv func(string) string) (Adversary, error) {
	a := Adversary(getenv(EnvTestAdversary))
	if a == AdversaryNone {
		return AdversaryNone, nil
	}
	if getenv(EnvTestHooks) != "1" {
		return AdversaryNone, fmt.Errorf("%s is a test hook and needs %s=1; unset it to volunteer", EnvTestAdversary, EnvTestHooks)
	}
	switch a {
	case AdversaryNegate10, AdversaryNoise:
		return a, nil
	}
	return AdversaryNone, fmt.Errorf("%s=%q: want %q or %q", EnvTestAdversary, string(a), AdversaryNegate10, AdversaryNoise)
}

// corrupt rewrites an honest delta in place as the adversary would upload it; seed
// makes the noise of a work unit reproducible.
func (a Adversary) corrupt(delta []tensor.Named, seed uint64) {
	switch a {
	case AdversaryNegate10:
		for _, d := range delta {
			for k := range d.T.Data {
				d.T.Data[k] *= -10
			}
		}
	case AdversaryNoise:
		var honest, noise float64
		rng := rand.New(rand.NewPCG(seed, 0x5eed))
		for _, d := range delta {
			for k, v := range d.T.Data {
				honest += float64(v) * float64(v)
				n := rng.NormFloat64()
				noise += n * n
				d.T.Data[k] = float32(n)
			}
		}
		if noise == 0 {
			return
		}
		scale := math.Sqrt(honest / noise)
		for _, d := range delta {
			for k := range d.T.Data {
				d.T.Data[k] = float32(float64(d.T.Data[k]) * scale)
			}
		}
	}
}
