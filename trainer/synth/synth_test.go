package synth

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/trainer/data"
)

func TestGenerateDeterministicAndReadable(t *testing.T) {
	t.Parallel()
	a, b, c := t.TempDir(), t.TempDir(), t.TempDir()
	for _, d := range []struct {
		dir  string
		seed uint64
	}{{a, 7}, {b, 7}, {c, 8}} {
		if err := Generate(d.dir, 4, 3, 48, d.seed); err != nil {
			t.Fatal(err)
		}
	}
	names, _ := Classes(4)
	same, differ := 0, 0
	for _, class := range names {
		for i := range 3 {
			rel := filepath.Join(class, fmt.Sprintf("%s-%04d.png", class, i))
			x, err1 := os.ReadFile(filepath.Join(a, rel))
			y, err2 := os.ReadFile(filepath.Join(b, rel))
			z, err3 := os.ReadFile(filepath.Join(c, rel))
			if err1 != nil || err2 != nil || err3 != nil {
				t.Fatal(err1, err2, err3)
			}
			if bytes.Equal(x, y) {
				same++
			}
			if !bytes.Equal(x, z) {
				differ++
			}
			g, err := data.LoadGray(filepath.Join(a, rel))
			if err != nil || g.W != 48 || g.H != 48 {
				t.Fatalf("%s: %v", rel, err)
			}
		}
	}
	if same != 12 || differ != 12 {
		t.Errorf("same seed gave %d/12 identical files, another seed changed %d/12", same, differ)
	}
	// The folder is a dataset the trainer can scan.
	fo, err := data.ScanFolder(a, 0.25)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(fo.Classes, ",") != strings.Join(names, ",") || len(fo.Train)+len(fo.Test) != 12 || len(fo.Skipped) != 0 {
		t.Errorf("scan: classes %v, %d images, skipped %v", fo.Classes, len(fo.Train)+len(fo.Test), fo.Skipped)
	}
}

func TestGenerateRejects(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name                    string
		classes, perClass, size int
		msg                     string
	}{
		{"no classes", 0, 1, 32, "0 classes"},
		{"too many classes", MaxClasses + 1, 1, 32, "9 classes"},
		{"no images", 2, 0, 32, "0 images per class"},
		{"tiny size", 2, 1, 4, "size 4"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			err := Generate(t.TempDir(), c.classes, c.perClass, c.size, 1)
			if err == nil || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("got %v, want an error containing %q", err, c.msg)
			}
		})
	}
	if _, err := Render(-1, 0, 32, 1); err == nil {
		t.Error("Render accepted class -1")
	}
}

// features are cheap texture statistics, blind to brightness and contrast: normalised
// autocorrelation at several lags (averaged over x and y), and the kurtosis of the grey
// levels. A nearest-centroid classifier on them shows the classes are separable by
// structure; the same classifier on mean brightness shows they are not by grey level.
func features(g *data.Gray) []float64 {
	n := float64(len(g.Pix))
	var mean, v, m4 float64
	for _, p := range g.Pix {
		mean += float64(p)
	}
	mean /= n
	for _, p := range g.Pix {
		d := float64(p) - mean
		v += d * d
		m4 += d * d * d * d
	}
	v /= n
	f := []float64{m4 / n / (v*v + 1e-9)}
	for _, lag := range []int{1, 2, 3, 5, 8, 12} {
		var s float64
		var cnt int
		for y := range g.H - lag {
			for x := range g.W - lag {
				d := float64(g.Pix[y*g.W+x]) - mean
				s += d * (float64(g.Pix[y*g.W+x+lag]) - mean + float64(g.Pix[(y+lag)*g.W+x]) - mean)
				cnt += 2
			}
		}
		f = append(f, s/float64(cnt)/(v+1e-9))
	}
	return f
}

func nearestCentroidAccuracy(train, test [][][]float64) float64 {
	dim := len(train[0][0])
	// Standardise each feature over the training set.
	mu, sd := make([]float64, dim), make([]float64, dim)
	var n float64
	for _, cl := range train {
		for _, x := range cl {
			for k := range dim {
				mu[k] += x[k]
			}
			n++
		}
	}
	for k := range dim {
		mu[k] /= n
	}
	for _, cl := range train {
		for _, x := range cl {
			for k := range dim {
				sd[k] += (x[k] - mu[k]) * (x[k] - mu[k])
			}
		}
	}
	for k := range dim {
		sd[k] = math.Sqrt(sd[k]/n) + 1e-9
	}
	cent := make([][]float64, len(train))
	for c, cl := range train {
		cent[c] = make([]float64, dim)
		for _, x := range cl {
			for k := range dim {
				cent[c][k] += (x[k] - mu[k]) / sd[k] / float64(len(cl))
			}
		}
	}
	right, total := 0, 0
	for c, cl := range test {
		for _, x := range cl {
			best, bestD := -1, math.Inf(1)
			for j, ce := range cent {
				var d float64
				for k := range dim {
					z := (x[k]-mu[k])/sd[k] - ce[k]
					d += z * z
				}
				if d < bestD {
					best, bestD = j, d
				}
			}
			if best == c {
				right++
			}
			total++
		}
	}
	return float64(right) / float64(total)
}

func TestClassesNeedStructureNotBrightness(t *testing.T) {
	t.Parallel()
	const per, size = 24, 64
	var trainF, testF, trainM, testM [][][]float64
	lo, hi := make([]float64, MaxClasses), make([]float64, MaxClasses)
	for c := range MaxClasses {
		var tf, sf, tm, sm [][]float64
		lo[c], hi[c] = 255, 0
		for i := range per {
			g, err := Render(c, i, size, 42)
			if err != nil {
				t.Fatal(err)
			}
			var mean float64
			for _, p := range g.Pix {
				mean += float64(p)
			}
			mean /= float64(len(g.Pix))
			lo[c], hi[c] = math.Min(lo[c], mean), math.Max(hi[c], mean)
			if i%2 == 0 {
				tf, tm = append(tf, features(g)), append(tm, []float64{mean})
			} else {
				sf, sm = append(sf, features(g)), append(sm, []float64{mean})
			}
		}
		trainF, testF = append(trainF, tf), append(testF, sf)
		trainM, testM = append(trainM, tm), append(testM, sm)
	}
	// Every pair of classes has overlapping ranges of mean brightness.
	for a := range MaxClasses {
		for b := range a {
			if lo[a] > hi[b] || lo[b] > hi[a] {
				t.Errorf("classes %d and %d have disjoint mean brightness: [%.0f, %.0f] vs [%.0f, %.0f]", a, b, lo[a], hi[a], lo[b], hi[b])
			}
		}
	}
	chance := 1.0 / MaxClasses
	byMean := nearestCentroidAccuracy(trainM, testM)
	byStructure := nearestCentroidAccuracy(trainF, testF)
	t.Logf("nearest-centroid accuracy: mean brightness %.2f, texture statistics %.2f (chance %.2f)", byMean, byStructure, chance)
	if byMean > 2.5*chance {
		t.Errorf("mean brightness alone classifies %.2f of images (chance %.2f): classes differ in grey level", byMean, chance)
	}
	if byStructure < 3*chance {
		t.Errorf("simple texture statistics classify only %.2f of images: the families are not distinct enough", byStructure)
	}
}
