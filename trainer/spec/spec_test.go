package spec

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestShippedSpecs(t *testing.T) {
	t.Parallel()
	cases := []struct {
		file    string
		classes int
		size    int
		params  int
		outHW   []int // H of conv1, pool1, conv2, pool2, conv3
	}{
		// conv1 32*1*121+32, conv2 64*32*25+64, conv3 96*64*9+96, fc1 256*96+256, fc2 256*256+256, fc3 28*256+28
		{"tcnn-small.json", 28, 256, 3904 + 51264 + 55392 + 24832 + 65792 + 7196, []int{63, 31, 31, 15, 15}},
		// conv1 96*121+96, conv2 256*96*25+256, conv3 384*256*9+384, fc1 4096*384+4096, fc2 4096*4096+4096, fc3 28*4096+28
		{"tcnn3.json", 28, 256, 11712 + 614656 + 885120 + 1576960 + 16781312 + 114716, []int{63, 31, 31, 15, 15}},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			t.Parallel()
			s, err := Load(filepath.Join("..", "..", "configs", "models", c.file))
			if err != nil {
				t.Fatal(err)
			}
			r, err := s.Resolve(c.classes, c.size)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.NumParams(); got != c.params {
				t.Errorf("NumParams = %d, want %d", got, c.params)
			}
			// Layers 0, 2, 3, 5, 6 are conv1, pool1, conv2, pool2, conv3.
			for i, layer := range []int{0, 2, 3, 5, 6} {
				if got := r.Out[layer].H; got != c.outHW[i] {
					t.Errorf("layer %d output side = %d, want %d", layer, got, c.outHW[i])
				}
			}
			names := []string{}
			for _, p := range r.Params {
				names = append(names, p.Name)
			}
			want := "conv1.weight conv1.bias conv2.weight conv2.bias conv3.weight conv3.bias fc1.weight fc1.bias fc2.weight fc2.bias fc3.weight fc3.bias"
			if got := strings.Join(names, " "); got != want {
				t.Errorf("params = %s, want %s", got, want)
			}
			if r.FLOPs <= 0 {
				t.Errorf("FLOPs = %d", r.FLOPs)
			}
			// The canonical JSON must parse back to the same resolution.
			s2, err := Parse(s.JSON())
			if err != nil {
				t.Fatal(err)
			}
			r2, err := s2.Resolve(c.classes, c.size)
			if err != nil || r2.NumParams() != r.NumParams() || r2.FLOPs != r.FLOPs {
				t.Errorf("round trip through JSON changed the network: %v", err)
			}
		})
	}
}

func TestBadSpecs(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, json, want string
	}{
		{"not json", `{`, "unexpected EOF"},
		{"unknown field", `{"name":"x","layers":[{"type":"dense","units":2,"filter":3}]}`, `unknown field "filter"`},
		{"no name", `{"layers":[{"type":"dense","units":2}]}`, "name is empty"},
		{"no layers", `{"name":"x"}`, "no layers"},
		{"unknown type", `{"name":"x","layers":[{"type":"lstm"}]}`, `unknown layer type "lstm"`},
		{"bad units", `{"name":"x","layers":[{"type":"dense","units":"many"}]}`, `"classes"`},
		{"zero units", `{"name":"x","layers":[{"type":"dense","units":0}]}`, "units must be"},
		{"bad conv", `{"name":"x","layers":[{"type":"conv","filters":0,"kernel":3},{"type":"energy"},{"type":"dense","units":2}]}`, "filters, kernel and stride"},
		{"bad rate", `{"name":"x","layers":[{"type":"dropout","rate":1},{"type":"dense","units":2}]}`, "outside [0, 1)"},
		{"dup name", `{"name":"x","layers":[{"type":"energy"},{"type":"dense","name":"a","units":4},{"type":"dense","name":"a","units":2}]}`, "duplicate layer name"},
		{"last not dense", `{"name":"x","layers":[{"type":"relu"}]}`, "must be dense"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(c.json))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Parse error = %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestResolveErrors(t *testing.T) {
	t.Parallel()
	s, err := Load("../../configs/models/tcnn-small.json")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name          string
		classes, size int
		want          string
	}{
		{"one class", 1, 256, "at least 2"},
		{"tiny input", 4, 8, "too small"},
		{"zero size", 4, 0, "not positive"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := s.Resolve(c.classes, c.size); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Resolve error = %v, want one containing %q", err, c.want)
			}
		})
	}
	fixed, _ := Parse([]byte(`{"name":"x","layers":[{"type":"energy"},{"type":"dense","units":3}]}`))
	if _, err := fixed.Resolve(4, 16); err == nil || !strings.Contains(err.Error(), `"classes"`) {
		t.Fatalf("class mismatch error = %v", err)
	}
	spatial, _ := Parse([]byte(`{"name":"x","layers":[{"type":"dense","units":"classes"}]}`))
	if _, err := spatial.Resolve(4, 16); err == nil || !strings.Contains(err.Error(), "energy layer before it") {
		t.Fatalf("spatial dense error = %v", err)
	}
}
