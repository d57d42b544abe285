package wu

import (
	"math"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/trainer/tensor"
)

func TestAdversaryFromEnv(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		env  map[string]string
		want Adversary
		err  string
	}{
		{"unset", nil, AdversaryNone, ""},
		{"hooks alone do nothing", map[string]string{EnvTestHooks: "1"}, AdversaryNone, ""},
		{"adversary without the hook flag", map[string]string{EnvTestAdversary: "noise"}, AdversaryNone, "needs TEXGRID_TEST_HOOKS=1"},
		{"adversary with the hook flag not 1", map[string]string{EnvTestAdversary: "noise", EnvTestHooks: "yes"}, AdversaryNone, "needs TEXGRID_TEST_HOOKS=1"},
		{"unknown adversary", map[string]string{EnvTestAdversary: "flip", EnvTestHooks: "1"}, AdversaryNone, `"flip": want "negate10" or "noise"`},
		{"negate10", map[string]string{EnvTestAdversary: "negate10", EnvTestHooks: "1"}, AdversaryNegate10, ""},
		{"noise", map[string]string{EnvTestAdversary: "noise", EnvTestHooks: "1"}, AdversaryNoise, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := AdversaryFromEnv(func(k string) string { return tc.env[k] })
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("AdversaryFromEnv = %q, %v; want an error mentioning %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("AdversaryFromEnv = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestAdversaryCorrupt(t *testing.T) {
	t.Parallel()
	honest := func() []tensor.Named {
		a, b := tensor.New(3), tensor.New(2)
		copy(a.Data, []float32{3, 0, -4})
		copy(b.Data, []float32{0, 12})
		return []tensor.Named{{Name: "a", T: a}, {Name: "b", T: b}} // norm 13
	}
	d := honest()
	AdversaryNone.corrupt(d, 1)
	if got := append(d[0].T.Data, d[1].T.Data...); got[0] != 3 || got[4] != 12 {
		t.Fatalf("no adversary changed the delta: %v", got)
	}
	d = honest()
	AdversaryNegate10.corrupt(d, 1)
	want := []float32{-30, 0, 40, 0, -120}
	for i, v := range append(d[0].T.Data, d[1].T.Data...) {
		if v != want[i] {
			t.Fatalf("negate10 value %d = %v, want %v", i, v, want[i])
		}
	}
	d = honest()
	AdversaryNoise.corrupt(d, 7)
	var n2, dot float64
	h := honest()
	for i := range d {
		for k, v := range d[i].T.Data {
			n2 += float64(v) * float64(v)
			dot += float64(v) * float64(h[i].T.Data[k])
		}
	}
	if math.Abs(math.Sqrt(n2)-13) > 1e-4 {
		t.Fatalf("noise norm %v, want the honest 13", math.Sqrt(n2))
	}
	if math.Abs(dot-169) < 1e-3 {
		t.Fatalf("noise equals the honest delta")
	}
}
