package synth

import (
	"math"
	"math/rand/v2"
)

// Periods below are in pixels for a 64-pixel image and scale with the size.

// grating: a single oriented sinusoid.
func grating(p []float64, size int, rng *rand.Rand) {
	rot := rotator(rng)
	f := 2 * math.Pi / period(rng, size, 4, 14)
	ph := rng.Float64() * 2 * math.Pi
	for y := range size {
		for x := range size {
			u, _ := rot(float64(x), float64(y))
			p[y*size+x] = math.Sin(f*u + ph)
		}
	}
}

// checker: a rotated checkerboard with hard edges.
func checker(p []float64, size int, rng *rand.Rand) {
	rot := rotator(rng)
	cell := period(rng, size, 3, 10)
	ox, oy := rng.Float64()*cell, rng.Float64()*cell
	for y := range size {
		for x := range size {
			u, v := rot(float64(x), float64(y))
			a := int(math.Floor((u+ox)/cell)) + int(math.Floor((v+oy)/cell))
			p[y*size+x] = float64(a & 1)
		}
	}
}

// cloud: isotropic fractal value noise (several octaves of smoothly interpolated
// lattice values).
func cloud(p []float64, size int, rng *rand.Rand) {
	base := period(rng, size, 6, 20)
	persistence := uniform(rng, 0.4, 0.7)
	key := rng.Uint64()
	amp := 1.0
	for oct := range 4 {
		scale := base / math.Pow(2, float64(oct))
		if scale < 1.5 {
			break
		}
		k := key + uint64(oct)*0x9e3779b97f4a7c15
		for y := range size {
			for x := range size {
				p[y*size+x] += amp * valueNoise(float64(x)/scale, float64(y)/scale, k)
			}
		}
		amp *= persistence
	}
}

// dots: random discs with soft edges on a plain background.
func dots(p []float64, size int, rng *rand.Rand) {
	r := period(rng, size, 1.2, 3.5)
	coverage := uniform(rng, 0.2, 0.45)
	n := int(coverage * float64(size*size) / (math.Pi * r * r))
	for range n {
		cx, cy := rng.Float64()*float64(size), rng.Float64()*float64(size)
		rr := r * uniform(rng, 0.7, 1.3)
		x0, x1 := max(0, int(cx-rr-1)), min(size-1, int(cx+rr+1))
		y0, y1 := max(0, int(cy-rr-1)), min(size-1, int(cy+rr+1))
		for y := y0; y <= y1; y++ {
			for x := x0; x <= x1; x++ {
				d := math.Hypot(float64(x)-cx, float64(y)-cy)
				if v := math.Min(1, math.Max(0, rr-d+0.5)); v > p[y*size+x] {
					p[y*size+x] = v
				}
			}
		}
	}
}

// bricks: staggered rows of rectangles with a per-brick shade, separated by mortar.
func bricks(p []float64, size int, rng *rand.Rand) {
	rot := rotator(rng)
	bh := period(rng, size, 3, 8)
	bw := bh * uniform(rng, 1.8, 3)
	mortar := math.Max(1, bh*uniform(rng, 0.12, 0.25))
	key := rng.Uint64()
	for y := range size {
		for x := range size {
			u, v := rot(float64(x), float64(y))
			row := math.Floor(v / bh)
			uu := u + math.Mod(row, 2)*bw/2
			col := math.Floor(uu / bw)
			fu, fv := uu-col*bw, v-row*bh
			if fu < mortar || fv < mortar {
				p[y*size+x] = 0
				continue
			}
			p[y*size+x] = 0.7 + 0.3*hash01(int64(col), int64(row), key)
		}
	}
}

// hatch: two crossing gratings at roughly right angles, as in woven fabric.
func hatch(p []float64, size int, rng *rand.Rand) {
	a := rng.Float64() * math.Pi
	b := a + math.Pi/2 + uniform(rng, -0.3, 0.3)
	f1 := 2 * math.Pi / period(rng, size, 3, 9)
	f2 := f1 * uniform(rng, 0.8, 1.25)
	ph1, ph2 := rng.Float64()*2*math.Pi, rng.Float64()*2*math.Pi
	ca, sa, cb, sb := math.Cos(a), math.Sin(a), math.Cos(b), math.Sin(b)
	for y := range size {
		for x := range size {
			fx, fy := float64(x), float64(y)
			s1 := math.Sin(f1*(ca*fx+sa*fy) + ph1)
			s2 := math.Sin(f2*(cb*fx+sb*fy) + ph2)
			p[y*size+x] = math.Max(s1, 0) + math.Max(s2, 0)
		}
	}
}

// rings: concentric rings around a centre that may lie outside the image, perturbed
// by low-frequency noise, like wood grain.
func rings(p []float64, size int, rng *rand.Rand) {
	s := float64(size)
	cx, cy := uniform(rng, -0.5, 1.5)*s, uniform(rng, -0.5, 1.5)*s
	f := 2 * math.Pi / period(rng, size, 3, 9)
	warp := uniform(rng, 1, 3)
	scale := period(rng, size, 10, 24)
	key := rng.Uint64()
	for y := range size {
		for x := range size {
			d := math.Hypot(float64(x)-cx, float64(y)-cy)
			n := valueNoise(float64(x)/scale, float64(y)/scale, key)
			p[y*size+x] = math.Sin(f*d + warp*n)
		}
	}
}

// cells: Worley noise, the distance to the second-nearest minus the nearest random
// feature point: dark cell borders around bright cells.
func cells(p []float64, size int, rng *rand.Rand) {
	cell := period(rng, size, 5, 14)
	key := rng.Uint64()
	for y := range size {
		for x := range size {
			fx, fy := float64(x)/cell, float64(y)/cell
			ix, iy := int64(math.Floor(fx)), int64(math.Floor(fy))
			d1, d2 := math.Inf(1), math.Inf(1)
			for dy := int64(-1); dy <= 1; dy++ {
				for dx := int64(-1); dx <= 1; dx++ {
					h := mix(uint64(ix+dx)*0x632be59bd9b4e019 ^ uint64(iy+dy)*0x8cb92ba72f3d8dd7 ^ key)
					px := float64(ix+dx) + float64(h&0xffff)/65536
					py := float64(iy+dy) + float64(h>>16&0xffff)/65536
					d := math.Hypot(fx-px, fy-py)
					if d < d1 {
						d1, d2 = d, d1
					} else if d < d2 {
						d2 = d
					}
				}
			}
			p[y*size+x] = d2 - d1
		}
	}
}

// valueNoise is lattice noise in [-1, 1): random values at integer points, blended
// with a smoothstep.
func valueNoise(x, y float64, key uint64) float64 {
	ix, iy := math.Floor(x), math.Floor(y)
	fx, fy := x-ix, y-iy
	sx, sy := fx*fx*(3-2*fx), fy*fy*(3-2*fy)
	i, j := int64(ix), int64(iy)
	v00, v10 := hash01(i, j, key), hash01(i+1, j, key)
	v01, v11 := hash01(i, j+1, key), hash01(i+1, j+1, key)
	top := v00 + sx*(v10-v00)
	bot := v01 + sx*(v11-v01)
	return 2*(top+sy*(bot-top)) - 1
}

// hash01 maps a lattice point to a fixed pseudo-random value in [0, 1).
func hash01(i, j int64, key uint64) float64 {
	h := mix(uint64(i)*0x9e3779b97f4a7c15 ^ uint64(j)*0xc2b2ae3d27d4eb4f ^ key)
	return float64(h>>11) / (1 << 53)
}

// mix is the splitmix64 finaliser.
func mix(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}
