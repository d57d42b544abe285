// Package spec describes a network as data: a JSON list of layers that every part of
// texgrid (the Go engine, the ONNX exporter, the project server's validator and the
// PyTorch peer) reads the same way. A Spec says nothing about weights; Resolve binds it
// to an input size and a class count and derives every shape and tensor name.
package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
)

// Layer kinds understood by the engine.
const (
	Conv    = "conv"    // 2-D convolution, weight [filters, in, k, k], bias [filters]
	ReLU    = "relu"    // max(0, x)
	MaxPool = "maxpool" // max over k x k windows, no padding
	Energy  = "energy"  // T-CNN energy layer: the mean of each feature map (global average pooling)
	Dense   = "dense"   // fully connected, weight [units, in], bias [units]
	Dropout = "dropout" // inverted dropout, identity at inference
)

// Units is a dense layer's width: a positive number, or the string "classes" meaning
// the dataset's class count, which is only known when the spec is resolved.
type Units struct {
	N       int
	Classes bool
}

// UnmarshalJSON accepts a positive integer or the string "classes".
func (u *Units) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if s != "classes" {
			return fmt.Errorf("units: want a positive integer or \"classes\", got %q", s)
		}
		*u = Units{Classes: true}
		return nil
	}
	n, err := strconv.Atoi(string(b))
	if err != nil {
		return fmt.Errorf("units: want a positive integer or \"classes\", got %s", b)
	}
	*u = Units{N: n}
	return nil
}

// MarshalJSON writes the form UnmarshalJSON reads.
func (u Units) MarshalJSON() ([]byte, error) {
	if u.Classes {
		return []byte(`"classes"`), nil
	}
	return []byte(strconv.Itoa(u.N)), nil
}

// Layer is one entry of a spec. Only the fields of its Type are meaningful.
type Layer struct {
	Type    string  `json:"type"`
	Name    string  `json:"name,omitempty"`    // conv and dense: tensor name prefix; defaulted to conv1.., fc1..
	Filters int     `json:"filters,omitempty"` // conv
	Kernel  int     `json:"kernel,omitempty"`  // conv, maxpool
	Stride  int     `json:"stride,omitempty"`  // conv, maxpool; default 1 for conv, kernel for maxpool
	Pad     int     `json:"pad,omitempty"`     // conv; zero padding on every side
	Units   *Units  `json:"units,omitempty"`   // dense
	Rate    float64 `json:"rate,omitempty"`    // dropout; probability of zeroing, in [0, 1)
}

// Spec is a network description as stored in configs/models/*.json.
type Spec struct {
	Name          string  `json:"name"`
	Description   string  `json:"description,omitempty"`
	InputChannels int     `json:"input_channels"`
	Layers        []Layer `json:"layers"`
}

// MaxSpecBytes bounds what Parse reads; real specs are a few hundred bytes.
const MaxSpecBytes = 1 << 20

// Parse decodes and validates a spec. Unknown fields are an error so that a typo such as
// "filter" does not silently fall back to a default.
func Parse(b []byte) (*Spec, error) {
	if len(b) > MaxSpecBytes {
		return nil, fmt.Errorf("model spec: %d bytes, larger than the %d byte limit", len(b), MaxSpecBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var s Spec
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("model spec: %w", err)
	}
	if err := s.normalize(); err != nil {
		return nil, fmt.Errorf("model spec %q: %w", s.Name, err)
	}
	return &s, nil
}

// Load reads and parses a spec file.
func Load(path string) (*Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("model spec: %w", err)
	}
	s, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// JSON returns the canonical encoding of the spec (defaults filled in), which is what
// work units carry and what hashes are taken over.
func (s *Spec) JSON() []byte {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // a Spec always marshals
	}
	return b
}

func (s *Spec) normalize() error {
	if s.Name == "" {
		return errors.New("name is empty")
	}
	if s.InputChannels == 0 {
		s.InputChannels = 1
	}
	if s.InputChannels < 0 {
		return fmt.Errorf("input_channels %d is negative", s.InputChannels)
	}
	if len(s.Layers) == 0 {
		return errors.New("no layers")
	}
	nconv, ndense := 0, 0
	seen := map[string]bool{}
	for i := range s.Layers {
		l := &s.Layers[i]
		where := fmt.Sprintf("layer %d (%s)", i, l.Type)
		switch l.Type {
		case Conv:
			nconv++
			if l.Name == "" {
				l.Name = fmt.Sprintf("conv%d", nconv)
			}
			if l.Stride == 0 {
				l.Stride = 1
			}
			if l.Filters <= 0 || l.Kernel <= 0 || l.Stride <= 0 || l.Pad < 0 {
				return fmt.Errorf("%s: filters, kernel and stride must be positive and pad not negative (got %d, %d, %d, %d)",
					where, l.Filters, l.Kernel, l.Stride, l.Pad)
			}
		case MaxPool:
			if l.Stride == 0 {
				l.Stride = l.Kernel
			}
			if l.Kernel <= 0 || l.Stride <= 0 {
				return fmt.Errorf("%s: kernel and stride must be positive (got %d, %d)", where, l.Kernel, l.Stride)
			}
		case Dense:
			ndense++
			if l.Name == "" {
				l.Name = fmt.Sprintf("fc%d", ndense)
			}
			if l.Units == nil || (!l.Units.Classes && l.Units.N <= 0) {
				return fmt.Errorf("%s: units must be a positive integer or \"classes\"", where)
			}
		case Dropout:
			if l.Rate < 0 || l.Rate >= 1 {
				return fmt.Errorf("%s: rate %g is outside [0, 1)", where, l.Rate)
			}
		case ReLU, Energy:
		default:
			return fmt.Errorf("%s: unknown layer type %q", where, l.Type)
		}
		if l.Name != "" {
			if seen[l.Name] {
				return fmt.Errorf("%s: duplicate layer name %q", where, l.Name)
			}
			seen[l.Name] = true
		}
	}
	last := s.Layers[len(s.Layers)-1]
	if last.Type != Dense {
		return fmt.Errorf("the last layer is %s; it must be dense (the logits)", last.Type)
	}
	return nil
}

// Param is one trainable tensor of a resolved network.
type Param struct {
	Name  string // stable tensor name, e.g. "conv1.weight"
	Shape []int
	Layer int // index into Spec.Layers
}

// Size returns the element count.
func (p Param) Size() int {
	n := 1
	for _, d := range p.Shape {
		n *= d
	}
	return n
}

// Shape is an activation shape per sample: channels x height x width, or a flat vector
// (H = W = 1) after the energy layer.
type Shape struct{ C, H, W int }

// Size returns C*H*W.
func (s Shape) Size() int { return s.C * s.H * s.W }

// Resolved is a spec bound to an input size and class count.
type Resolved struct {
	Spec    *Spec
	Classes int
	Size    int     // input fragment side in pixels
	In      []Shape // In[i] is the per-sample input shape of layer i
	Out     []Shape // Out[i] is the per-sample output shape of layer i
	Params  []Param // in layer order, weight before bias
	// FLOPs is the forward pass cost per sample, counting a multiply-add as two.
	FLOPs int64
}

// Resolve derives every shape and parameter for inputs of size x size pixels and the
// given number of classes. Spatial layers after the energy layer, and dense layers
// before it over a spatial input, are errors: the Texture-CNN keeps them apart.
func (s *Spec) Resolve(classes, size int) (*Resolved, error) {
	if classes < 2 {
		return nil, fmt.Errorf("model %s: %d classes; need at least 2", s.Name, classes)
	}
	if size <= 0 {
		return nil, fmt.Errorf("model %s: input size %d is not positive", s.Name, size)
	}
	r := &Resolved{Spec: s, Classes: classes, Size: size}
	cur := Shape{C: s.InputChannels, H: size, W: size}
	flat := false
	for i, l := range s.Layers {
		in := cur
		switch l.Type {
		case Conv:
			if flat {
				return nil, fmt.Errorf("model %s: layer %d (conv %s) comes after the features were flattened", s.Name, i, l.Name)
			}
			oh := (cur.H+2*l.Pad-l.Kernel)/l.Stride + 1
			ow := (cur.W+2*l.Pad-l.Kernel)/l.Stride + 1
			if cur.H+2*l.Pad < l.Kernel || oh <= 0 || ow <= 0 {
				return nil, fmt.Errorf("model %s: input %dx%d is too small for layer %d (conv %s, kernel %d): use larger fragments",
					s.Name, size, size, i, l.Name, l.Kernel)
			}
			r.Params = append(r.Params,
				Param{Name: l.Name + ".weight", Shape: []int{l.Filters, cur.C, l.Kernel, l.Kernel}, Layer: i},
				Param{Name: l.Name + ".bias", Shape: []int{l.Filters}, Layer: i})
			cur = Shape{C: l.Filters, H: oh, W: ow}
			r.FLOPs += 2 * int64(cur.Size()) * int64(in.C*l.Kernel*l.Kernel)
		case MaxPool:
			if flat {
				return nil, fmt.Errorf("model %s: layer %d (maxpool) comes after the features were flattened", s.Name, i)
			}
			if cur.H < l.Kernel || cur.W < l.Kernel {
				return nil, fmt.Errorf("model %s: input %dx%d is too small for layer %d (maxpool %d): use larger fragments",
					s.Name, size, size, i, l.Kernel)
			}
			cur = Shape{C: cur.C, H: (cur.H-l.Kernel)/l.Stride + 1, W: (cur.W-l.Kernel)/l.Stride + 1}
		case Energy:
			if flat {
				return nil, fmt.Errorf("model %s: layer %d (energy) comes after the features were flattened", s.Name, i)
			}
			cur = Shape{C: cur.C, H: 1, W: 1}
			flat = true
		case Dense:
			if !flat {
				return nil, fmt.Errorf("model %s: layer %d (dense %s) has a spatial input; put an energy layer before it", s.Name, i, l.Name)
			}
			units := l.Units.N
			if l.Units.Classes {
				units = classes
			}
			r.Params = append(r.Params,
				Param{Name: l.Name + ".weight", Shape: []int{units, cur.C}, Layer: i},
				Param{Name: l.Name + ".bias", Shape: []int{units}, Layer: i})
			r.FLOPs += 2 * int64(units) * int64(cur.C)
			cur = Shape{C: units, H: 1, W: 1}
		case ReLU, Dropout:
		}
		r.In = append(r.In, in)
		r.Out = append(r.Out, cur)
	}
	if cur.C != classes {
		return nil, fmt.Errorf("model %s: the last layer has %d units but the dataset has %d classes; set its units to \"classes\"",
			s.Name, cur.C, classes)
	}
	return r, nil
}

// NumParams returns the total number of trainable scalars.
func (r *Resolved) NumParams() int {
	n := 0
	for _, p := range r.Params {
		n += p.Size()
	}
	return n
}

// Param returns the parameter with the given name.
func (r *Resolved) Param(name string) (Param, bool) {
	for _, p := range r.Params {
		if p.Name == name {
			return p, true
		}
	}
	return Param{}, false
}
