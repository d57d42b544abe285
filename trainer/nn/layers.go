package nn

import (
	"math"
	"math/rand/v2"

	"github.com/texgrid/texgrid/trainer/gemm"
)

// The per-sample kernels below work on one sample's CHW slice; the Workspace owns the
// buffers and decides which goroutine runs which sample.

// colsSize is the im2col matrix size of a conv layer: (Cin*k*k) x (OH*OW).
func colsSize(l *layerInfo) int {
	return l.in.C * l.Kernel * l.Kernel * l.out.H * l.out.W
}

// convForward computes y = W * im2col(x) + b, followed by max(0, .) when fuseReLU.
func convForward(l *layerInfo, wt, b, x, y, cols []float32, fuseReLU bool) {
	f, k, p := l.Filters, l.in.C*l.Kernel*l.Kernel, l.out.H*l.out.W
	cols = cols[:k*p]
	im2col(l, x, cols)
	gemm.MatMul(false, false, f, p, k, wt, k, cols, p, 0, y, p)
	for i := 0; i < f; i++ {
		row, bi := y[i*p:(i+1)*p], b[i]
		if fuseReLU {
			for j, v := range row {
				v += bi
				if v < 0 {
					v = 0
				}
				row[j] = v
			}
		} else {
			for j := range row {
				row[j] += bi
			}
		}
	}
}

// convBackward adds this sample's weight and bias gradients into gw and gb and, when dx
// is not nil, writes the input gradient. cols and dcols are scratch space.
func convBackward(l *layerInfo, wt, x, dy, gw, gb, dx, cols, dcols []float32) {
	f, k, p := l.Filters, l.in.C*l.Kernel*l.Kernel, l.out.H*l.out.W
	cols = cols[:k*p]
	im2col(l, x, cols)
	gemm.MatMul(false, true, f, k, p, dy, p, cols, p, 1, gw, k)
	for i := 0; i < f; i++ {
		var s float32
		for _, v := range dy[i*p : (i+1)*p] {
			s += v
		}
		gb[i] += s
	}
	if dx == nil {
		return
	}
	dcols = dcols[:k*p]
	gemm.MatMul(true, false, k, p, f, wt, k, dy, p, 0, dcols, p)
	col2im(l, dcols, dx)
}

// validRange returns the output columns [lo, hi) whose input column ox*s-pad+kj lies
// inside [0, w).
func validRange(w, ow, s, pad, kj int) (lo, hi int) {
	if a := pad - kj; a > 0 {
		lo = (a + s - 1) / s
	}
	if a := w - 1 + pad - kj; a >= 0 {
		hi = min(ow, a/s+1)
	}
	lo = min(lo, ow)
	hi = max(hi, lo)
	return lo, hi
}

// im2col lays out every k x k input patch as a column: cols[(c*k+ki)*k+kj][oy*OW+ox].
func im2col(l *layerInfo, x, cols []float32) {
	c, h, w := l.in.C, l.in.H, l.in.W
	k, s, pad := l.Kernel, l.Stride, l.Pad
	oh, ow := l.out.H, l.out.W
	p := oh * ow
	for ci := 0; ci < c; ci++ {
		plane := x[ci*h*w : (ci+1)*h*w]
		for ki := 0; ki < k; ki++ {
			for kj := 0; kj < k; kj++ {
				row := cols[((ci*k+ki)*k+kj)*p:][:p]
				lo, hi := validRange(w, ow, s, pad, kj)
				for oy := 0; oy < oh; oy++ {
					dst := row[oy*ow : (oy+1)*ow]
					iy := oy*s - pad + ki
					if iy < 0 || iy >= h {
						clear(dst)
						continue
					}
					src := plane[iy*w : (iy+1)*w]
					clear(dst[:lo])
					if s == 1 {
						copy(dst[lo:hi], src[lo-pad+kj:hi-pad+kj])
					} else {
						ix := lo*s - pad + kj
						for ox := lo; ox < hi; ox++ {
							dst[ox] = src[ix]
							ix += s
						}
					}
					clear(dst[hi:])
				}
			}
		}
	}
}

// col2im is the adjoint of im2col: it sums every column entry back into dx.
func col2im(l *layerInfo, cols, dx []float32) {
	c, h, w := l.in.C, l.in.H, l.in.W
	k, s, pad := l.Kernel, l.Stride, l.Pad
	oh, ow := l.out.H, l.out.W
	p := oh * ow
	clear(dx[:c*h*w])
	for ci := 0; ci < c; ci++ {
		plane := dx[ci*h*w : (ci+1)*h*w]
		for ki := 0; ki < k; ki++ {
			for kj := 0; kj < k; kj++ {
				row := cols[((ci*k+ki)*k+kj)*p:][:p]
				lo, hi := validRange(w, ow, s, pad, kj)
				for oy := 0; oy < oh; oy++ {
					iy := oy*s - pad + ki
					if iy < 0 || iy >= h {
						continue
					}
					src := row[oy*ow : (oy+1)*ow]
					dst := plane[iy*w : (iy+1)*w]
					ix := lo*s - pad + kj
					for ox := lo; ox < hi; ox++ {
						dst[ix] += src[ox]
						ix += s
					}
				}
			}
		}
	}
}

// relu clamps negatives to zero in place.
func relu(y []float32) {
	for j, v := range y {
		if v < 0 {
			y[j] = 0
		}
	}
}

// reluBackward zeroes the gradient where the ReLU output was not positive.
func reluBackward(y, dy []float32) {
	for j, v := range y {
		if !(v > 0) {
			dy[j] = 0
		}
	}
}

// maxPoolForward takes the maximum of each k x k window (no padding) and records
// where it came from; ties go to the first element in row-major order.
func maxPoolForward(l *layerInfo, x, y []float32, idx []int32) {
	c, h, w := l.in.C, l.in.H, l.in.W
	k, s := l.Kernel, l.Stride
	oh, ow := l.out.H, l.out.W
	o := 0
	for ci := 0; ci < c; ci++ {
		base := ci * h * w
		for oy := 0; oy < oh; oy++ {
			for ox := 0; ox < ow; ox++ {
				at := base + oy*s*w + ox*s
				best, bi := x[at], at
				for ki := 0; ki < k; ki++ {
					r := base + (oy*s+ki)*w + ox*s
					for kj, v := range x[r : r+k] {
						if v > best {
							best, bi = v, r+kj
						}
					}
				}
				y[o], idx[o] = best, int32(bi)
				o++
			}
		}
	}
}

// maxPoolBackward routes each output gradient to the input that won the window.
func maxPoolBackward(dy, dx []float32, idx []int32) {
	clear(dx)
	for j, g := range dy {
		dx[idx[j]] += g
	}
}

// energyForward is the T-CNN energy layer: the mean of each feature map.
func energyForward(l *layerInfo, x, y []float32) {
	hw := l.in.H * l.in.W
	for ci := 0; ci < l.in.C; ci++ {
		var s float64
		for _, v := range x[ci*hw : (ci+1)*hw] {
			s += float64(v)
		}
		y[ci] = float32(s / float64(hw))
	}
}

// energyBackward spreads each channel's gradient evenly over its map.
func energyBackward(l *layerInfo, dy, dx []float32) {
	hw := l.in.H * l.in.W
	for ci := 0; ci < l.in.C; ci++ {
		g := dy[ci] / float32(hw)
		row := dx[ci*hw : (ci+1)*hw]
		for j := range row {
			row[j] = g
		}
	}
}

// dropoutForward is inverted dropout: in training each element is kept with
// probability 1-rate and scaled by 1/(1-rate); the mask of sample s in layer i comes
// from a PCG seeded with (seed, i<<32|s), so it does not depend on the worker split.
func dropoutForward(rate float64, train bool, seed uint64, layer, s int, x, y, mask []float32) {
	if !train || rate == 0 {
		copy(y, x)
		for j := range mask {
			mask[j] = 1
		}
		return
	}
	var g rand.PCG
	g.Seed(seed, uint64(layer)<<32|uint64(s))
	thr := uint64(rate * 18446744073709551616.0)
	scale := float32(1 / (1 - rate))
	for j, v := range x {
		if g.Uint64() < thr {
			mask[j], y[j] = 0, 0
		} else {
			mask[j], y[j] = scale, v*scale
		}
	}
}

// mulInPlace multiplies dy by mask element-wise.
func mulInPlace(dy, mask []float32) {
	for j, m := range mask {
		dy[j] *= m
	}
}

// softmaxXent writes softmax probabilities of logits [n, c] into probs and the mean
// cross-entropy gradient into dlogits, returning the summed loss and the number of
// rows whose arg-max is the label.
func softmaxXent(logits, probs, dlogits []float32, labels []int, n, c int) (loss float64, correct int) {
	inv := 1 / float32(n)
	for s := 0; s < n; s++ {
		row := logits[s*c : (s+1)*c]
		pr := probs[s*c : (s+1)*c]
		mx, am := row[0], 0
		for j, v := range row {
			if v > mx {
				mx, am = v, j
			}
		}
		var sum float64
		for j, v := range row {
			e := math.Exp(float64(v - mx))
			pr[j] = float32(e)
			sum += e
		}
		for j := range pr {
			pr[j] = float32(float64(pr[j]) / sum)
		}
		y := labels[s]
		loss += math.Log(sum) - float64(row[y]-mx)
		if am == y {
			correct++
		}
		if dlogits != nil {
			d := dlogits[s*c : (s+1)*c]
			for j, p := range pr {
				d[j] = p * inv
			}
			d[y] -= inv
		}
	}
	return loss, correct
}
