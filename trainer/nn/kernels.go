package nn

import (
	"math"
	"math/rand/v2"
	"os"

	"github.com/texgrid/texgrid/trainer/gemm"
)

// The per-sample kernels below work on one sample's CHW slice; the Workspace owns the
// buffers and decides which goroutine runs which sample.

// chunkFloats is about how many floats of im2col matrix one GEMM works on: the output
// rows of a conv are processed in chunks of that size, which bounds the scratch memory
// of wide layers (tcnn3's conv2 would need 9 MB per worker for cols and as much for
// its gradient). Measured here: 4 MB chunks run tcnn3's conv2 and conv3 as fast as
// whole matrices, 1 MB chunks 18% slower; tcnn-small's layers fit in one chunk.
var chunkFloats = 1 << 20

// chunkRows returns how many output rows go into one im2col chunk of layer l.
func chunkRows(l *layerInfo) int {
	k := l.in.C * l.Kernel * l.Kernel
	return max(1, min(l.out.H, chunkFloats/(k*l.out.W)))
}

// colsSize is the size of one im2col chunk of layer l: (Cin*k*k) x (rows*OW).
func colsSize(l *layerInfo) int {
	return l.in.C * l.Kernel * l.Kernel * chunkRows(l) * l.out.W
}

// packedWeights are a conv layer's weights packed for gemm.MulPacked: W (f x Cin*k*k)
// for the forward product and, when the layer passes a gradient down, W^T for the
// input gradient. The workspace packs them once per batch, before the samples run.
type packedWeights struct {
	w, wt       gemm.PackedA
	wBuf, wtBuf []float32
}

// newPackedWeights allocates the packing buffers of layer l; withT adds W^T's.
func newPackedWeights(l *layerInfo, withT bool) *packedWeights {
	f, k := l.Filters, l.in.C*l.Kernel*l.Kernel
	pw := &packedWeights{wBuf: make([]float32, gemm.PackASize(f, k))}
	if withT {
		pw.wtBuf = make([]float32, gemm.PackASize(k, f))
	}
	return pw
}

// pack packs wt (f x Cin*k*k) into pw.w and, with transposed, into pw.wt as well.
func (pw *packedWeights) pack(l *layerInfo, wt []float32, transposed bool) {
	f, k := l.Filters, l.in.C*l.Kernel*l.Kernel
	pw.w = gemm.PackAInto(pw.wBuf, false, f, k, wt, k)
	if transposed {
		pw.wt = gemm.PackAInto(pw.wtBuf, true, k, f, wt, k)
	}
}

// usePackedConv reports whether convolutions use the trainer's own packed GEMM
// (gemm.MulPacked, with the bias and ReLU fused into it) rather than gemm.MatMul. It
// does wherever its kernel is an assembly one: the AVX-512 kernel measured 2-20%
// faster than OpenBLAS on every conv product of the shipped models (23-74% with the
// bias and ReLU fused), and the AVX2 kernel is measured against OpenBLAS's Haswell
// kernels by trainer/bench. Its generic Go kernel is slower than gonum's.
// $TEXGRID_CONV_GEMM ("packed" or "blas") overrides the choice, for measuring.
func usePackedConv() bool {
	switch os.Getenv(EnvConvGEMM) {
	case "packed":
		return gemm.Kernel() != "generic" || gemm.Backend() != "openblas"
	case "blas":
		return false
	}
	k := gemm.Kernel()
	return k == "avx512" || k == "avx2" || (gemm.Backend() != "openblas" && k != "generic")
}

// EnvConvGEMM is the environment variable that chooses the convolutions' GEMM:
// "packed" (package gemm's own, where it has an assembly kernel or there is no
// OpenBLAS), "blas" (gemm.MatMul), or empty for the measured default.
const EnvConvGEMM = "TEXGRID_CONV_GEMM"

// ConvEngine names what new workspaces run the convolutions on: "packed/<kernel>"
// for package gemm's own GEMM (kernel as gemm.Kernel names it), "blas/<backend>"
// otherwise. Benchmarks print it next to their figures.
func ConvEngine() string {
	if usePackedConv() {
		return "packed/" + gemm.Kernel()
	}
	return "blas/" + gemm.Backend()
}

// convForward computes y = W * im2col(x) + b, followed by max(0, .) when fuseReLU.
// cols holds one chunk of the patch matrix, planes the phase planes of x. With pw (the
// packed W) the product runs in gemm.MulPacked, which adds the bias and applies the
// ReLU as it stores y; without, in gemm.MatMul, onto y filled with the bias first
// (which saves the pass over y a separate bias addition would cost).
func convForward(l *layerInfo, pw *packedWeights, wt, b, x, y, cols, planes []float32, fuseReLU bool) {
	f, k, p := l.Filters, l.in.C*l.Kernel*l.Kernel, l.out.H*l.out.W
	toPhases(l, x, planes)
	if pw == nil {
		for i := 0; i < f; i++ {
			row, bi := y[i*p:(i+1)*p], b[i]
			for j := range row {
				row[j] = bi
			}
		}
	}
	ep := gemm.Epilogue{Bias: b, ReLU: fuseReLU}
	rows, oh, ow := chunkRows(l), l.out.H, l.out.W
	for oy0 := 0; oy0 < oh; oy0 += rows {
		oy1 := min(oh, oy0+rows)
		pc := (oy1 - oy0) * ow
		c := cols[:k*pc]
		im2colRows(l, planes, c, oy0, oy1)
		if pw != nil {
			gemm.MulPacked(&pw.w, false, pc, c, pc, 0, y[oy0*ow:], p, ep, nil)
			continue
		}
		gemm.MatMul(false, false, f, pc, k, wt, k, c, pc, 1, y[oy0*ow:], p)
	}
	if fuseReLU && pw == nil {
		relu(y[:f*p])
	}
}

// convBackward adds this sample's weight and bias gradients into gw and gb and, when dx
// is not nil, writes the input gradient. cols and dcols hold one chunk of the patch
// matrix and its gradient; planes and dplanes the phase planes of x and of dx. With pw
// (its W^T packed when dx is not nil) the products run in the trainer's own GEMM.
func convBackward(l *layerInfo, pw *packedWeights, wt, x, dy, gw, gb, dx, cols, dcols, planes, dplanes []float32) {
	f, k, p := l.Filters, l.in.C*l.Kernel*l.Kernel, l.out.H*l.out.W
	toPhases(l, x, planes)
	for i := 0; i < f; i++ {
		var s float32
		for _, v := range dy[i*p : (i+1)*p] {
			s += v
		}
		gb[i] += s
	}
	if dx != nil {
		clear(dplanes[:phaseSize(l)])
	}
	rows, oh, ow := chunkRows(l), l.out.H, l.out.W
	for oy0 := 0; oy0 < oh; oy0 += rows {
		oy1 := min(oh, oy0+rows)
		pc := (oy1 - oy0) * ow
		c := cols[:k*pc]
		im2colRows(l, planes, c, oy0, oy1)
		if pw != nil {
			gemm.MatMulAsm(false, true, f, k, pc, dy[oy0*ow:], p, c, pc, 1, gw, k)
		} else {
			gemm.MatMul(false, true, f, k, pc, dy[oy0*ow:], p, c, pc, 1, gw, k)
		}
		if dx != nil {
			dc := dcols[:k*pc]
			if pw != nil {
				gemm.MulPacked(&pw.wt, false, pc, dy[oy0*ow:], p, 0, dc, pc, gemm.Epilogue{}, nil)
			} else {
				gemm.MatMul(true, false, k, pc, f, wt, k, dy[oy0*ow:], p, 0, dc, pc)
			}
			col2imRows(l, dc, dplanes, oy0, oy1)
		}
	}
	if dx != nil {
		fromPhases(l, dplanes, dx)
	}
}

// Convolutions gather their patches from "phase planes": the zero-padded input split
// by row and column remainder modulo the stride, plane (c, a, b)[i][j] = xpad[i*s+a][j*s+b].
// In that layout every row of the im2col matrix is a run of contiguous copies whatever
// the stride, and col2im is a run of contiguous additions.

// phaseDims returns the side lengths of one phase plane.
func phaseDims(l *layerInfo) (ph, pw int) {
	s := l.Stride
	return (l.in.H + 2*l.Pad + s - 1) / s, (l.in.W + 2*l.Pad + s - 1) / s
}

// phaseSize is the scratch size of a conv layer's phase planes.
func phaseSize(l *layerInfo) int {
	ph, pw := phaseDims(l)
	return l.in.C * l.Stride * l.Stride * ph * pw
}

// toPhases scatters x into the phase planes, padding with zeros.
func toPhases(l *layerInfo, x, planes []float32) {
	c, h, w, s, pad := l.in.C, l.in.H, l.in.W, l.Stride, l.Pad
	ph, pw := phaseDims(l)
	planes = planes[:phaseSize(l)]
	clear(planes)
	for ci := 0; ci < c; ci++ {
		for iy := 0; iy < h; iy++ {
			py := iy + pad
			src := x[(ci*h+iy)*w : (ci*h+iy+1)*w]
			if s == 1 {
				copy(planes[(ci*ph+py)*pw+pad:], src)
				continue
			}
			for b := 0; b < s; b++ {
				// Columns ix with (ix+pad) % s == b land in plane (py%s, b) at (ix+pad)/s.
				ix0 := (b - pad%s + s) % s
				plane := planes[((ci*s+py%s)*s+b)*ph*pw+(py/s)*pw:][:pw]
				j := (ix0 + pad) / s
				for ix := ix0; ix < w; ix += s {
					plane[j] = src[ix]
					j++
				}
			}
		}
	}
}

// fromPhases gathers the phase planes back into dx, dropping the padding.
func fromPhases(l *layerInfo, planes, dx []float32) {
	c, h, w, s, pad := l.in.C, l.in.H, l.in.W, l.Stride, l.Pad
	ph, pw := phaseDims(l)
	for ci := 0; ci < c; ci++ {
		for iy := 0; iy < h; iy++ {
			py := iy + pad
			dst := dx[(ci*h+iy)*w : (ci*h+iy+1)*w]
			if s == 1 {
				copy(dst, planes[(ci*ph+py)*pw+pad:][:w])
				continue
			}
			for b := 0; b < s; b++ {
				ix0 := (b - pad%s + s) % s
				plane := planes[((ci*s+py%s)*s+b)*ph*pw+(py/s)*pw:][:pw]
				j := (ix0 + pad) / s
				for ix := ix0; ix < w; ix += s {
					dst[ix] = plane[j]
					j++
				}
			}
		}
	}
}

// im2colRows lays out the k x k input patches of output rows [oy0, oy1) as columns:
// cols[(c*k+ki)*k+kj][(oy-oy0)*OW+ox], reading the phase planes made by toPhases.
func im2colRows(l *layerInfo, planes, cols []float32, oy0, oy1 int) {
	c, k, s := l.in.C, l.Kernel, l.Stride
	ow := l.out.W
	ph, pw := phaseDims(l)
	p := (oy1 - oy0) * ow
	for ci := 0; ci < c; ci++ {
		for ki := 0; ki < k; ki++ {
			for kj := 0; kj < k; kj++ {
				row := cols[((ci*k+ki)*k+kj)*p:][:p]
				plane := planes[((ci*s+ki%s)*s+kj%s)*ph*pw:][:ph*pw]
				at := (oy0+ki/s)*pw + kj/s
				for o := 0; o < p; o += ow {
					copy(row[o:o+ow], plane[at:at+ow])
					at += pw
				}
			}
		}
	}
}

// col2imRows is the adjoint of im2colRows: it adds every column entry into the phase
// planes of the input gradient (fromPhases turns them into dx).
func col2imRows(l *layerInfo, cols, planes []float32, oy0, oy1 int) {
	c, k, s := l.in.C, l.Kernel, l.Stride
	ow := l.out.W
	ph, pw := phaseDims(l)
	p := (oy1 - oy0) * ow
	for ci := 0; ci < c; ci++ {
		for ki := 0; ki < k; ki++ {
			for kj := 0; kj < k; kj++ {
				row := cols[((ci*k+ki)*k+kj)*p:][:p]
				plane := planes[((ci*s+ki%s)*s+kj%s)*ph*pw:][:ph*pw]
				at := (oy0+ki/s)*pw + kj/s
				for o := 0; o < p; o += ow {
					d, src := plane[at:at+ow], row[o:o+ow]
					for i, v := range src {
						d[i] += v
					}
					at += pw
				}
			}
		}
	}
}

// addTo adds src into dst element-wise; len(dst) >= len(src).
func addTo(dst, src []float32) {
	dst = dst[:len(src)]
	i := 0
	for ; i+4 <= len(src); i += 4 {
		d, s := dst[i:i+4:i+4], src[i:i+4:i+4]
		d[0] += s[0]
		d[1] += s[1]
		d[2] += s[2]
		d[3] += s[3]
	}
	for ; i < len(src); i++ {
		dst[i] += src[i]
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

// maxPoolForward takes the maximum of each k x k window (no padding). With reluOut it
// also clamps the outputs at zero: max and ReLU commute, so a ReLU before the pool can
// run on the smaller output instead. The 3x3 ReLU case records the arg-max of each
// window in idx (an index into x) when idx is not nil (training); otherwise, and in the
// other cases, the backward pass searches the window again.
func maxPoolForward(l *layerInfo, x, y []float32, idx []int32, reluOut bool) {
	c, h, w := l.in.C, l.in.H, l.in.W
	k, s := l.Kernel, l.Stride
	oh, ow := l.out.H, l.out.W
	o := 0
	for ci := 0; ci < c; ci++ {
		base := ci * h * w
		for oy := 0; oy < oh; oy++ {
			top := base + oy*s*w
			yr := y[o : o+ow]
			switch {
			case reluOut && k == 3 && idx != nil:
				// Non-negative float32s order like their bits as int32, and every negative
				// float's bits are a negative int32, so max(0, max(window)) is an integer
				// max, which compiles to conditional moves instead of unpredictable
				// branches. The low 4 bits carry 8 minus the window position, so the max
				// also names the first arg-max in row-major order.
				r0, r1, r2 := x[top:top+w], x[top+w:top+2*w], x[top+2*w:top+3*w]
				ir := idx[o : o+ow]
				for ox := range yr {
					j := ox * s
					a0, a1, a2 := r0[j:j+3:j+3], r1[j:j+3:j+3], r2[j:j+3:j+3]
					m := max(pack(a0[0], 8), pack(a0[1], 7), pack(a0[2], 6), pack(a1[0], 5), pack(a1[1], 4), pack(a1[2], 3),
						pack(a2[0], 2), pack(a2[1], 1), pack(a2[2], 0), 0)
					yr[ox] = math.Float32frombits(uint32(m >> 4))
					p := 8 - int(m&15)
					ir[ox] = int32(top + (p/3)*w + j + p%3)
				}
				o += ow
				continue
			case reluOut && k == 3:
				// The same integer max without the arg-max, for inference.
				r0, r1, r2 := x[top:top+w], x[top+w:top+2*w], x[top+2*w:top+3*w]
				for ox := range yr {
					j := ox * s
					a0, a1, a2 := r0[j:j+3:j+3], r1[j:j+3:j+3], r2[j:j+3:j+3]
					m := max(bits(a0[0]), bits(a0[1]), bits(a0[2]), bits(a1[0]), bits(a1[1]), bits(a1[2]),
						bits(a2[0]), bits(a2[1]), bits(a2[2]), 0)
					yr[ox] = math.Float32frombits(uint32(m))
				}
				o += ow
				continue
			case k == 3:
				r0, r1, r2 := x[top:top+w], x[top+w:top+2*w], x[top+2*w:top+3*w]
				for ox := range yr {
					j := ox * s
					a0, a1, a2 := r0[j:j+3:j+3], r1[j:j+3:j+3], r2[j:j+3:j+3]
					yr[ox] = fmax(fmax(fmax(a0[0], a0[1]), fmax(a0[2], a1[0])), fmax(fmax(a1[1], a1[2]), fmax(fmax(a2[0], a2[1]), a2[2])))
				}
			default:
				for ox := range yr {
					at := top + ox*s
					best := x[at]
					for ki := 0; ki < k; ki++ {
						for _, v := range x[at+ki*w : at+ki*w+k] {
							best = fmax(best, v)
						}
					}
					yr[ox] = best
				}
			}
			if reluOut {
				relu(yr)
			}
			o += ow
		}
	}
}

// bits returns v's bit pattern as a signed integer.
func bits(v float32) int32 { return int32(math.Float32bits(v)) }

// pack puts v's bit pattern, as a signed integer, above a 4-bit tag.
func pack(v float32, tag int64) int64 { return int64(int32(math.Float32bits(v)))<<4 | tag }

// fmax is max without the NaN and signed-zero rules of the builtin, which compiles to
// a single comparison and conditional move.
func fmax(a, b float32) float32 {
	if b > a {
		return b
	}
	return a
}

// maxPoolBackward routes each output gradient to the arg-max of its window: idx when
// the forward pass recorded it, else the first input of the window, in row-major
// order, that equals the output. With reluOut only where the output was positive.
func maxPoolBackward(l *layerInfo, x, y, dy, dx []float32, idx []int32, reluOut bool) {
	c, h, w := l.in.C, l.in.H, l.in.W
	k, s := l.Kernel, l.Stride
	oh, ow := l.out.H, l.out.W
	clear(dx[:c*h*w])
	if idx != nil && reluOut {
		for j, g := range dy[:len(idx)] {
			if y[j] > 0 {
				dx[idx[j]] += g
			}
		}
		return
	}
	o := 0
	for ci := 0; ci < c; ci++ {
		base := ci * h * w
		for oy := 0; oy < oh; oy++ {
			for ox := 0; ox < ow; ox, o = ox+1, o+1 {
				g, v := dy[o], y[o]
				if g == 0 || (reluOut && !(v > 0)) {
					continue
				}
				at := base + oy*s*w + ox*s
			search:
				for ki := 0; ki < k; ki++ {
					r := at + ki*w
					for kj, u := range x[r : r+k] {
						if u == v {
							dx[r+kj] += g
							break search
						}
					}
				}
			}
		}
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

// SoftmaxXentRow writes the softmax of one row of logits into probs (same length) and
// returns the cross-entropy of class y and the row's arg-max. Training and evaluation
// share it, so both score a prediction with the same arithmetic.
func SoftmaxXentRow(logits, probs []float32, y int) (loss float64, argmax int) {
	mx, am := logits[0], 0
	for j, v := range logits {
		if v > mx {
			mx, am = v, j
		}
	}
	var sum float64
	for j, v := range logits {
		e := math.Exp(float64(v - mx))
		probs[j] = float32(e)
		sum += e
	}
	for j := range probs {
		probs[j] = float32(float64(probs[j]) / sum)
	}
	return math.Log(sum) - float64(logits[y]-mx), am
}

// softmaxXent writes softmax probabilities of logits [n, c] into probs and the mean
// cross-entropy gradient into dlogits, returning the summed loss and the number of
// rows whose arg-max is the label.
func softmaxXent(logits, probs, dlogits []float32, labels []int, n, c int) (loss float64, correct int) {
	inv := 1 / float32(n)
	for s := 0; s < n; s++ {
		y := labels[s]
		l, am := SoftmaxXentRow(logits[s*c:(s+1)*c], probs[s*c:(s+1)*c], y)
		loss += l
		if am == y {
			correct++
		}
		pr := probs[s*c : (s+1)*c]
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
