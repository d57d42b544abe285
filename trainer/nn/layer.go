package nn

import (
	"fmt"

	"github.com/texgrid/texgrid/trainer/spec"
)

// layer is one spec layer bound to a Workspace's buffers. The layers up to and
// including the energy layer (the trunk) are called one sample at a time on a worker
// goroutine, hi == lo+1; the layers after it (the head) on the whole batch, [0, n).
type layer interface {
	// forward computes the outputs of samples [lo, hi) from their inputs.
	forward(p *pass, lo, hi int)
	// backward turns dy, the loss gradient of the outputs of samples [lo, hi), into the
	// gradient of their inputs and adds the parameter gradients into p.grads. It
	// returns dx, or dy itself, changed in place, when inPlace. dx is scratch space of
	// the input's size; a layer whose input needs no gradient may leave it alone.
	backward(p *pass, lo, hi int, dy, dx []float32) []float32
	// inPlace reports whether backward works on dy in place.
	inPlace() bool
}

// pass is what one forward or backward call needs besides the layer's own buffers.
type pass struct {
	w     *worker     // scratch space of the goroutine (trunk layers)
	grads [][]float32 // gradient sums by parameter index: a chunk's (trunk) or the batch's (head)
	train bool        // dropout active
	seed  uint64      // dropout masks
}

// buildLayers binds every spec layer of ws.m to ws's buffers. It decides the fusions:
// a ReLU right after a conv is applied by the conv, or by a maxpool that follows it
// (max and ReLU commute, so it then runs on the smaller output), and the first conv
// computes no input gradient.
func (ws *Workspace) buildLayers() {
	m := ws.m
	n := len(m.layers)
	ws.layers = make([]layer, n)
	firstConv := -1
	for i := 0; i < m.energy; i++ {
		if m.layers[i].Type == spec.Conv {
			firstConv = i
			break
		}
	}
	ws.firstConv = firstConv
	denseSeen := false
	for i := range m.layers {
		l := &m.layers[i]
		x, y := ws.input(i), ws.acts[i]
		switch l.Type {
		case spec.Conv:
			c := &conv2D{info: l, m: m, x: x, y: y, needDX: i != firstConv}
			if ws.packedConv {
				c.pw = newPackedWeights(l, c.needDX)
			}
			c.fuseReLU = i+1 < n && m.layers[i+1].Type == spec.ReLU && !(i+2 < n && m.layers[i+2].Type == spec.MaxPool)
			ws.layers[i] = c
		case spec.ReLU:
			r := &reluLayer{y: y, size: l.out.Size()}
			if i > 0 && m.layers[i-1].Type == spec.Conv {
				r.skipForward = true // done by the conv or the maxpool after it
				r.skipBackward = i+1 < n && m.layers[i+1].Type == spec.MaxPool
			}
			ws.layers[i] = r
		case spec.MaxPool:
			mp := &maxPool2D{info: l, x: x, y: y}
			mp.reluOut = i >= 2 && m.layers[i-1].Type == spec.ReLU && m.layers[i-2].Type == spec.Conv
			if mp.reluOut && l.Kernel == 3 {
				mp.idx = make([]int32, ws.batch*l.out.Size())
			}
			ws.layers[i] = mp
		case spec.Energy:
			ws.layers[i] = &energy{info: l, x: x, y: y}
		case spec.Dropout:
			ws.layers[i] = &dropout{info: l, index: i, x: x, y: y, mask: make([]float32, ws.batch*l.out.Size())}
		case spec.Dense:
			// The first dense layer passes a gradient down only if a conv waits for it.
			ws.layers[i] = &dense{info: l, m: m, x: x, y: y, threads: ws.threads, needDX: denseSeen || firstConv >= 0}
			denseSeen = true
		default:
			panic(fmt.Sprintf("nn: layer %d has unknown type %q", i, l.Type))
		}
	}
}

// conv2D is a convolution: im2col + GEMM per sample, see convForward.
type conv2D struct {
	info     *layerInfo
	m        *Model
	x, y     []float32
	fuseReLU bool           // apply the following ReLU here
	needDX   bool           // false for the first conv: nothing needs the input gradient
	pw       *packedWeights // nil when the conv runs on gemm.MatMul
}

// packWeights packs the layer's current weights for the samples of one batch; W^T
// too when training and the input gradient is needed.
func (c *conv2D) packWeights(train bool) {
	if c.pw != nil {
		c.pw.pack(c.info, c.m.params[c.info.w].T.Data, train && c.needDX)
	}
}

func (c *conv2D) forward(p *pass, lo, hi int) {
	xs, ys := c.info.in.Size(), c.info.out.Size()
	wt, b := c.m.params[c.info.w].T.Data, c.m.params[c.info.b].T.Data
	for s := lo; s < hi; s++ {
		convForward(c.info, c.pw, wt, b, c.x[s*xs:(s+1)*xs], c.y[s*ys:(s+1)*ys], p.w.cols, p.w.planes, c.fuseReLU)
	}
}

func (c *conv2D) backward(p *pass, lo, hi int, dy, dx []float32) []float32 {
	xs, ys := c.info.in.Size(), c.info.out.Size()
	wt := c.m.params[c.info.w].T.Data
	w := p.w
	for s := lo; s < hi; s++ {
		var d []float32
		if c.needDX {
			d = dx[(s-lo)*xs : (s-lo+1)*xs]
		}
		convBackward(c.info, c.pw, wt, c.x[s*xs:(s+1)*xs], dy[(s-lo)*ys:(s-lo+1)*ys], p.grads[c.info.w], p.grads[c.info.b],
			d, w.cols, w.dcols, w.planes, w.dplanes)
	}
	return dx
}

func (c *conv2D) inPlace() bool { return false }

// reluLayer is max(0, x), in place: no layer's backward needs the output of the layer
// before a ReLU, so input and output share a buffer.
type reluLayer struct {
	y            []float32
	size         int
	skipForward  bool // the conv before (or maxpool after) applies it
	skipBackward bool // the maxpool after applies its gradient mask
}

func (r *reluLayer) forward(p *pass, lo, hi int) {
	if !r.skipForward {
		relu(r.y[lo*r.size : hi*r.size])
	}
}

func (r *reluLayer) backward(p *pass, lo, hi int, dy, dx []float32) []float32 {
	if !r.skipBackward {
		reluBackward(r.y[lo*r.size:hi*r.size], dy)
	}
	return dy
}

func (r *reluLayer) inPlace() bool { return true }

// maxPool2D is max pooling without padding; after conv + ReLU it applies the ReLU.
type maxPool2D struct {
	info    *layerInfo
	x, y    []float32
	idx     []int32 // arg-max per output, for the 3x3 ReLU case
	reluOut bool
}

func (mp *maxPool2D) sampleIdx(s int) []int32 {
	if mp.idx == nil {
		return nil
	}
	n := mp.info.out.Size()
	return mp.idx[s*n : (s+1)*n]
}

func (mp *maxPool2D) forward(p *pass, lo, hi int) {
	xs, ys := mp.info.in.Size(), mp.info.out.Size()
	for s := lo; s < hi; s++ {
		var idx []int32
		if p.train {
			idx = mp.sampleIdx(s) // inference needs no arg-max
		}
		maxPoolForward(mp.info, mp.x[s*xs:(s+1)*xs], mp.y[s*ys:(s+1)*ys], idx, mp.reluOut)
	}
}

func (mp *maxPool2D) backward(p *pass, lo, hi int, dy, dx []float32) []float32 {
	xs, ys := mp.info.in.Size(), mp.info.out.Size()
	for s := lo; s < hi; s++ {
		maxPoolBackward(mp.info, mp.x[s*xs:(s+1)*xs], mp.y[s*ys:(s+1)*ys], dy[(s-lo)*ys:(s-lo+1)*ys],
			dx[(s-lo)*xs:(s-lo+1)*xs], mp.sampleIdx(s), mp.reluOut)
	}
	return dx
}

func (mp *maxPool2D) inPlace() bool { return false }

// energy is the T-CNN energy layer: the mean of each feature map.
type energy struct {
	info *layerInfo
	x, y []float32
}

func (e *energy) forward(p *pass, lo, hi int) {
	xs, ys := e.info.in.Size(), e.info.out.Size()
	for s := lo; s < hi; s++ {
		energyForward(e.info, e.x[s*xs:(s+1)*xs], e.y[s*ys:(s+1)*ys])
	}
}

func (e *energy) backward(p *pass, lo, hi int, dy, dx []float32) []float32 {
	xs, ys := e.info.in.Size(), e.info.out.Size()
	for s := lo; s < hi; s++ {
		energyBackward(e.info, dy[(s-lo)*ys:(s-lo+1)*ys], dx[(s-lo)*xs:(s-lo+1)*xs])
	}
	return dx
}

func (e *energy) inPlace() bool { return false }

// dropout is inverted dropout with masks drawn per (layer, sample) from the pass seed.
type dropout struct {
	info       *layerInfo
	index      int
	x, y, mask []float32
}

func (d *dropout) forward(p *pass, lo, hi int) {
	size := d.info.out.Size()
	for s := lo; s < hi; s++ {
		at := s * size
		dropoutForward(d.info.Rate, p.train, p.seed, d.index, s, d.x[at:at+size], d.y[at:at+size], d.mask[at:at+size])
	}
}

func (d *dropout) backward(p *pass, lo, hi int, dy, dx []float32) []float32 {
	size := d.info.out.Size()
	mulInPlace(dy, d.mask[lo*size:hi*size])
	return dy
}

func (d *dropout) inPlace() bool { return true }

// dense is a fully connected layer over the batch: y = x W^T + b.
type dense struct {
	info    *layerInfo
	m       *Model
	x, y    []float32
	threads int
	needDX  bool
}

func (d *dense) forward(p *pass, lo, hi int) {
	n, xs, ys := hi-lo, d.info.in.Size(), d.info.out.Size()
	x, y := d.x[lo*xs:hi*xs], d.y[lo*ys:hi*ys]
	wt, b := d.m.params[d.info.w].T.Data, d.m.params[d.info.b].T.Data
	parMatMul(d.threads, false, true, n, ys, xs, x, xs, wt, xs, 0, y, ys)
	for s := 0; s < n; s++ {
		row := y[s*ys : (s+1)*ys]
		for j := range row {
			row[j] += b[j]
		}
	}
}

func (d *dense) backward(p *pass, lo, hi int, dy, dx []float32) []float32 {
	n, xs, ys := hi-lo, d.info.in.Size(), d.info.out.Size()
	x := d.x[lo*xs : hi*xs]
	parMatMul(d.threads, true, false, ys, xs, n, dy, ys, x, xs, 0, p.grads[d.info.w], xs)
	gb := p.grads[d.info.b]
	clear(gb)
	for s := 0; s < n; s++ {
		for j, v := range dy[s*ys : (s+1)*ys] {
			gb[j] += v
		}
	}
	if d.needDX {
		wt := d.m.params[d.info.w].T.Data
		parMatMul(d.threads, false, false, n, xs, ys, dy, ys, wt, xs, 0, dx, xs)
	}
	return dx
}

func (d *dense) inPlace() bool { return false }
