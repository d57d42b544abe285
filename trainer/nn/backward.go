package nn

import (
	"fmt"

	"github.com/texgrid/texgrid/trainer/gemm"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"

	"github.com/texgrid/texgrid/trainer/internal/par"
)

// parMatMul is gemm.MatMul with the columns of c split across up to threads
// goroutines when the product is large enough to pay for them. Each element of c is
// computed by exactly one call, so the split does not change the summation order.
// Products that denseOnAsm picks run on gemm.MatMulAsm instead, whose sums likewise
// depend only on the inputs and the kernel.
func parMatMul(threads int, transA, transB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	mul := gemm.MatMul
	if denseOnAsm(m, n, k) {
		mul = gemm.MatMulAsm
	}
	if threads == 1 || 2*m*n*k < 1<<22 || n < 32*threads {
		mul(transA, transB, m, n, k, a, lda, b, ldb, beta, c, ldc)
		return
	}
	par.Do(threads, func(w int) {
		j0 := (w * n / threads) &^ 15
		j1 := ((w + 1) * n / threads) &^ 15
		if w == threads-1 {
			j1 = n
		}
		if j1 <= j0 {
			return
		}
		bb := b[j0:]
		if transB {
			bb = b[j0*ldb:]
		}
		mul(transA, transB, m, j1-j0, k, a, lda, bb, ldb, beta, c[j0:], ldc)
	})
}

// denseOnAsm reports whether a dense layer's m x n x k product runs on package gemm's
// own GEMM rather than the BLAS: always where the BLAS is gonum's pure Go and the
// kernels are assembly, and with OpenBLAS for products under 64 MFLOP, where the trip
// through cgo and OpenBLAS's own packing cost more than the product (measured on the
// shipped models' dense shapes: 1.0-1.9x faster with AVX-512, 1.0-1.3x with AVX2;
// OpenBLAS stays ahead on some of tcnn3's 4096-wide products).
func denseOnAsm(m, n, k int) bool {
	if gemm.Kernel() == "generic" {
		return false
	}
	return gemm.Backend() != "openblas" || 2*m*n*k < 1<<26
}

// ensureTraining allocates the gradient buffers on first use.
func (ws *Workspace) ensureTraining() {
	if ws.grads != nil {
		return
	}
	m := ws.m
	ws.grads = make([]tensor.Named, len(m.params))
	ws.headGrads = make([][]float32, len(m.params))
	for i, p := range m.params {
		ws.grads[i] = tensor.Named{Name: p.Name, T: tensor.New(p.T.Shape...)}
		ws.headGrads[i] = ws.grads[i].T.Data
	}
	width, act := 0, 0
	for i, l := range m.layers {
		if i > m.energy {
			width = max(width, l.in.Size(), l.out.Size())
		} else {
			act = max(act, l.in.Size(), l.out.Size())
		}
	}
	ws.dHead[0] = make([]float32, ws.batch*width)
	ws.dHead[1] = make([]float32, ws.batch*width)
	ws.probs = make([]float32, ws.batch*m.r.Classes)
	for _, w := range ws.workers {
		w.dcols = make([]float32, len(w.cols))
		w.dA = make([]float32, act)
		w.dB = make([]float32, act)
	}
	ws.chunkGrads = make([][][]float32, min(ws.batch, maxChunks))
	for c := range ws.chunkGrads {
		g := make([][]float32, len(m.params))
		for i, l := range m.layers {
			if i < m.energy && l.Type == spec.Conv {
				g[l.w] = make([]float32, m.params[l.w].T.Len())
				g[l.b] = make([]float32, m.params[l.b].T.Len())
			}
		}
		ws.chunkGrads[c] = g
	}
}

// Grads returns the gradients of the last TrainBatch in spec order, named like Params.
// They are the mean over the batch of the cross-entropy loss gradient.
func (ws *Workspace) Grads() []tensor.Named {
	ws.ensureTraining()
	return ws.grads
}

// Probs returns the softmax probabilities [n, classes] of the last TrainBatch.
func (ws *Workspace) Probs(n int) []float32 { return ws.probs[:n*ws.m.r.Classes] }

// TrainBatch runs n samples from Input forward with dropout masks drawn from seed,
// computes the mean softmax cross-entropy against labels and leaves the gradients in
// Grads. It returns the summed loss and how many samples were classified correctly.
func (ws *Workspace) TrainBatch(n int, labels []int, seed uint64) (loss float64, correct int, err error) {
	if n < 1 || n > ws.batch {
		return 0, 0, fmt.Errorf("nn: train batch: %d samples, want 1..%d: %w", n, ws.batch, ErrShape)
	}
	if len(labels) != n {
		return 0, 0, fmt.Errorf("nn: train batch: %d labels for %d samples: %w", len(labels), n, ErrShape)
	}
	classes := ws.m.r.Classes
	for i, y := range labels {
		if y < 0 || y >= classes {
			return 0, 0, fmt.Errorf("nn: train batch: label %d of sample %d is outside [0, %d): %w", y, i, classes, ErrShape)
		}
	}
	ws.ensureTraining()
	m := ws.m
	logits := ws.Forward(n, true, seed)
	cur := 0
	loss, correct = softmaxXent(logits, ws.probs, ws.dHead[cur], labels, n, classes)

	ws.head.grads = ws.headGrads
	for i := len(m.layers) - 1; i > m.energy; i-- {
		l, info := ws.layers[i], &m.layers[i]
		dy := ws.dHead[cur][:n*info.out.Size()]
		if l.inPlace() {
			l.backward(&ws.head, 0, n, dy, nil)
			continue
		}
		l.backward(&ws.head, 0, n, dy, ws.dHead[1-cur][:n*info.in.Size()])
		cur = 1 - cur
	}
	if ws.firstConv < 0 {
		return loss, correct, nil
	}
	dE := ws.dHead[cur]
	es := m.layers[m.energy].out.Size()
	chunks := min(n, maxChunks)
	dynamic(ws.threads, chunks, func(w, c int) {
		g := ws.chunkGrads[c]
		for _, p := range g {
			clear(p)
		}
		lo, hi := split(n, chunks, c)
		for s := lo; s < hi; s++ {
			ws.trunkBackward(ws.workers[w], g, s, dE[s*es:(s+1)*es])
		}
	})
	ws.reduce(chunks)
	return loss, correct, nil
}

// trunkBackward back-propagates sample s from the energy output down to the first
// conv, adding parameter gradients into grads (its chunk's sums) and using w's scratch
// buffers.
func (ws *Workspace) trunkBackward(w *worker, grads [][]float32, s int, dE []float32) {
	p := &w.pass
	p.w, p.grads = w, grads
	dy := dE
	bufs := [2][]float32{w.dA, w.dB}
	next := 0
	for i := ws.m.energy; i >= ws.firstConv; i-- {
		l := ws.layers[i]
		if l.inPlace() {
			dy = l.backward(p, s, s+1, dy, nil)
			continue
		}
		dy = l.backward(p, s, s+1, dy, bufs[next][:ws.m.layers[i].in.Size()])
		next = 1 - next
	}
}

// reduce sums the first chunks partial gradients, in chunk order, into ws.grads. The
// elements are split across goroutines; each element's sum order is fixed.
func (ws *Workspace) reduce(chunks int) {
	for pi, g := range ws.grads {
		if ws.chunkGrads[0][pi] == nil {
			continue
		}
		dst := g.T.Data
		parts := min(ws.threads, max(1, len(dst)/4096))
		par.Do(parts, func(part int) {
			lo, hi := split(len(dst), parts, part)
			d := dst[lo:hi]
			copy(d, ws.chunkGrads[0][pi][lo:hi])
			for c := 1; c < chunks; c++ {
				addTo(d, ws.chunkGrads[c][pi][lo:hi])
			}
		})
	}
}
