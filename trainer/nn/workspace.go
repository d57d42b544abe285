package nn

import (
	"fmt"
	"sync/atomic"

	"github.com/texgrid/texgrid/trainer/gemm"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"

	"github.com/texgrid/texgrid/trainer/internal/par"
)

// Workspace holds every buffer one forward/backward pass over at most Batch samples
// needs, so that the training loop does not allocate. A Workspace is owned by one
// goroutine; it starts and waits for its own worker goroutines inside each call.
type Workspace struct {
	m          *Model
	batch      int
	threads    int
	packedConv bool // convolutions on gemm.MulPacked (see usePackedConv)

	in        []float32   // batch x In[0]
	acts      [][]float32 // acts[i]: batch x Out[i]; a ReLU shares its input's buffer
	layers    []layer     // spec order, bound to in and acts
	firstConv int         // index of the first conv layer, -1 when there is none
	workers   []*worker
	head      pass // pass of the batched layers after the energy layer

	// Training buffers, allocated on the first TrainBatch.
	grads     []tensor.Named // spec order, summed over the batch
	headGrads [][]float32    // the Data of grads, by parameter index, for the head layers
	dHead     [2][]float32   // ping-pong gradients for the batched head layers
	probs     []float32      // batch x classes
	// chunkGrads[c][p] sums trunk parameter p's gradient over the samples of chunk c
	// (nil for head parameters). Chunks, not workers, own the partial sums, so the
	// summation order does not depend on which goroutine ran which chunk.
	chunkGrads [][][]float32
}

// maxChunks bounds how many partial gradient sums the trunk keeps: enough pieces for
// load balancing across a few threads, few enough to keep the memory small.
const maxChunks = 8

// worker is one goroutine's scratch space for the per-sample trunk.
type worker struct {
	cols    []float32 // im2col of one sample for the largest conv
	planes  []float32 // phase planes of one conv input
	dplanes []float32 // phase planes of one conv input gradient
	dcols   []float32 // gradient of cols
	dA      []float32 // per-sample activation gradients, ping-pong
	dB      []float32 //
	pass    pass      // reused for every call, so the layer interface calls do not allocate
}

// NewWorkspace allocates the inference buffers for batches of up to batch samples run
// on threads worker goroutines; the training buffers follow on the first TrainBatch.
func NewWorkspace(m *Model, batch, threads int) (*Workspace, error) {
	return newWorkspace(m, batch, threads, usePackedConv())
}

// newWorkspace is NewWorkspace with the GEMM of the convolutions chosen by the caller:
// gemm.MulPacked when packedConv, gemm.MatMul otherwise.
func newWorkspace(m *Model, batch, threads int, packedConv bool) (*Workspace, error) {
	if batch < 1 {
		return nil, fmt.Errorf("nn: workspace: batch size %d is not positive", batch)
	}
	if threads < 1 {
		return nil, fmt.Errorf("nn: workspace: threads %d is not positive", threads)
	}
	ws := &Workspace{m: m, batch: batch, threads: threads, packedConv: packedConv}
	r := m.r
	ws.in = make([]float32, batch*r.In[0].Size())
	n := len(m.layers)
	ws.acts = make([][]float32, n)
	for i, l := range m.layers {
		if l.Type == spec.ReLU {
			// In place: no layer's backward needs the output of the layer before a ReLU.
			ws.acts[i] = ws.input(i)
			continue
		}
		ws.acts[i] = make([]float32, batch*l.out.Size())
	}
	ws.buildLayers()
	cols, planes := 0, 0
	for _, l := range m.layers {
		if l.Type == spec.Conv {
			cols = max(cols, colsSize(&l))
			planes = max(planes, phaseSize(&l))
		}
	}
	ws.workers = make([]*worker, threads)
	for w := range ws.workers {
		ws.workers[w] = &worker{cols: make([]float32, cols), planes: make([]float32, planes), dplanes: make([]float32, planes)}
	}
	return ws, nil
}

// Batch returns the largest batch the workspace takes.
func (ws *Workspace) Batch() int { return ws.batch }

// Input returns the input buffer for n samples, [n, C, S, S] flattened; fill it before
// Forward or TrainBatch.
func (ws *Workspace) Input(n int) []float32 { return ws.in[:n*ws.m.r.In[0].Size()] }

// input returns layer i's input buffer.
func (ws *Workspace) input(i int) []float32 {
	if i == 0 {
		return ws.in
	}
	return ws.acts[i-1]
}

// split returns part w of n items cut into parts contiguous blocks.
func split(n, parts, w int) (lo, hi int) { return w * n / parts, (w + 1) * n / parts }

// dynamic runs f(worker, item) for every item in [0, n) on up to workers goroutines,
// each taking the next item as soon as it is free, and waits for all of them. It is
// only used where the result does not depend on which worker runs which item.
func dynamic(workers, n int, f func(w, item int)) {
	var next atomic.Int64
	par.Do(min(workers, n), func(w int) {
		for {
			i := int(next.Add(1) - 1)
			if i >= n {
				return
			}
			f(w, i)
		}
	})
}

// Forward runs n samples from Input through the network and returns the logits
// [n, classes]. With train set, dropout draws its masks from seed; otherwise dropout is
// the identity. The returned slice is reused by the next call.
func (ws *Workspace) Forward(n int, train bool, seed uint64) []float32 {
	if n < 1 || n > ws.batch {
		panic(fmt.Sprintf("nn: forward: batch %d outside [1, %d]", n, ws.batch))
	}
	ws.gemmSetup()
	for _, l := range ws.layers[:ws.m.energy+1] {
		if c, ok := l.(*conv2D); ok {
			c.packWeights(train)
		}
	}
	dynamic(ws.threads, n, func(w, s int) { ws.trunkForward(ws.workers[w], s, train, seed) })
	ws.head.train, ws.head.seed = train, seed
	for i := ws.m.energy + 1; i < len(ws.layers); i++ {
		ws.layers[i].forward(&ws.head, 0, n)
	}
	last := len(ws.m.layers) - 1
	return ws.acts[last][:n*ws.m.r.Classes]
}

// gemmSetup keeps every BLAS call single-threaded: the workspace runs one sample per
// worker goroutine. (Letting the BLAS split each product across the threads instead,
// with the samples in sequence, measured 30-50% slower here for tcnn3, whose conv2
// product per sample is the largest of the shipped models.)
func (ws *Workspace) gemmSetup() { gemm.SetThreads(1) }

// trunkForward runs sample s through the spatial layers up to and including energy.
func (ws *Workspace) trunkForward(w *worker, s int, train bool, seed uint64) {
	p := &w.pass
	p.w, p.train, p.seed = w, train, seed
	for _, l := range ws.layers[:ws.m.energy+1] {
		l.forward(p, s, s+1)
	}
}
