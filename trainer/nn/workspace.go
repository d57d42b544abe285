package nn

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/texgrid/texgrid/trainer/gemm"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// Workspace holds every buffer one forward/backward pass over at most Batch samples
// needs, so that the training loop does not allocate. A Workspace is owned by one
// goroutine; it starts and waits for its own worker goroutines inside each call.
type Workspace struct {
	m       *Model
	batch   int
	threads int

	in   []float32   // batch x In[0]
	acts [][]float32 // acts[i]: batch x Out[i]; a ReLU shares its input's buffer
	mask [][]float32 // dropout scale per element: 0 or 1/(1-rate)
	idx  [][]int32   // arg-max per output of the 3x3 maxpools that apply a ReLU

	fuse     []bool // fuse[i]: conv layer i applies the following ReLU itself
	poolReLU []bool // poolReLU[i]: maxpool layer i applies the ReLU before it to its output
	skip     []bool // skip[i]: ReLU layer i is done by a neighbour (fuse or poolReLU)

	// Training buffers, allocated on the first TrainBatch.
	grads   []tensor.Named // spec order, summed over the batch
	dHead   [2][]float32   // ping-pong gradients for the batched head layers
	probs   []float32      // batch x classes
	workers []*worker
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
}

// NewWorkspace allocates the inference buffers for batches of up to batch samples run
// on threads worker goroutines; the training buffers follow on the first TrainBatch.
func NewWorkspace(m *Model, batch, threads int) (*Workspace, error) {
	if batch < 1 {
		return nil, fmt.Errorf("nn: workspace: batch size %d is not positive", batch)
	}
	if threads < 1 {
		return nil, fmt.Errorf("nn: workspace: threads %d is not positive", threads)
	}
	ws := &Workspace{m: m, batch: batch, threads: threads}
	r := m.r
	ws.in = make([]float32, batch*r.In[0].Size())
	n := len(m.layers)
	ws.acts = make([][]float32, n)
	ws.mask = make([][]float32, n)
	ws.idx = make([][]int32, n)
	ws.fuse = make([]bool, n)
	ws.poolReLU = make([]bool, n)
	ws.skip = make([]bool, n)
	for i, l := range m.layers {
		size := batch * l.out.Size()
		switch l.Type {
		case spec.ReLU:
			// In place: no layer's backward needs the output of the layer before a ReLU.
			if i == 0 {
				ws.acts[i] = ws.in
			} else {
				ws.acts[i] = ws.acts[i-1]
			}
			continue
		case spec.Dropout:
			ws.mask[i] = make([]float32, size)
		case spec.Conv:
			if i+1 < n && m.layers[i+1].Type == spec.ReLU {
				if i+2 < n && m.layers[i+2].Type == spec.MaxPool {
					ws.poolReLU[i+2] = true
					if m.layers[i+2].Kernel == 3 {
						ws.idx[i+2] = make([]int32, batch*m.layers[i+2].out.Size())
					}
				} else {
					ws.fuse[i] = true
				}
				ws.skip[i+1] = true
			}
		}
		ws.acts[i] = make([]float32, size)
	}
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

// sampleIdx returns sample s's arg-max slice of layer i, or nil.
func (ws *Workspace) sampleIdx(i, s int) []int32 {
	if ws.idx[i] == nil {
		return nil
	}
	n := ws.m.layers[i].out.Size()
	return ws.idx[i][s*n : (s+1)*n]
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
	parallel(min(workers, n), func(w int) {
		for {
			i := int(next.Add(1) - 1)
			if i >= n {
				return
			}
			f(w, i)
		}
	})
}

// parallel runs f(w) for w in [0, workers) and waits for all of them.
func parallel(workers int, f func(w int)) {
	if workers == 1 {
		f(0)
		return
	}
	var wg sync.WaitGroup
	for w := 1; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(w)
		}()
	}
	f(0)
	wg.Wait()
}

// Forward runs n samples from Input through the network and returns the logits
// [n, classes]. With train set, dropout draws its masks from seed; otherwise dropout is
// the identity. The returned slice is reused by the next call.
func (ws *Workspace) Forward(n int, train bool, seed uint64) []float32 {
	if n < 1 || n > ws.batch {
		panic(fmt.Sprintf("nn: forward: batch %d outside [1, %d]", n, ws.batch))
	}
	ws.gemmSetup()
	dynamic(ws.threads, n, func(w, s int) { ws.trunkForward(ws.workers[w], s, train, seed) })
	for i := ws.m.energy + 1; i < len(ws.m.layers); i++ {
		ws.headForward(i, n, train, seed)
	}
	last := len(ws.m.layers) - 1
	return ws.acts[last][:n*ws.m.r.Classes]
}

// gemmSetup keeps the BLAS single-threaded: the workspace parallelises itself.
func (ws *Workspace) gemmSetup() { gemm.SetThreads(1) }

// trunkForward runs sample s through the spatial layers up to and including energy.
func (ws *Workspace) trunkForward(w *worker, s int, train bool, seed uint64) {
	m := ws.m
	for i := 0; i <= m.energy; i++ {
		l := &m.layers[i]
		xs, ys := l.in.Size(), l.out.Size()
		x := ws.input(i)[s*xs : (s+1)*xs]
		y := ws.acts[i][s*ys : (s+1)*ys]
		switch l.Type {
		case spec.Conv:
			convForward(l, m.params[l.w].T.Data, m.params[l.b].T.Data, x, y, w.cols, w.planes, ws.fuse[i])
		case spec.ReLU:
			if !ws.skip[i] {
				relu(y)
			}
		case spec.MaxPool:
			maxPoolForward(l, x, y, ws.sampleIdx(i, s), ws.poolReLU[i])
		case spec.Energy:
			energyForward(l, x, y)
		case spec.Dropout:
			dropoutForward(l.Rate, train, seed, i, s, x, y, ws.mask[i][s*ys:(s+1)*ys])
		}
	}
}
