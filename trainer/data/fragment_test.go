package data

import (
	"fmt"
	"math"
	"reflect"
	"testing"
)

func TestSplitOfIsStableAndProportional(t *testing.T) {
	t.Parallel()
	// Known values pin the algorithm (checked independently with Python's hashlib):
	// changing it would move images between splits in every existing dataset.
	pinned := []struct {
		name string
		want Split
	}{
		{"blanket1-a-p001.png", Train},
		{"blanket1-a-p003.png", Train},
		{"blanket1-a-p004.png", Test},
		{"blanket1-a-p005.png", Train},
	}
	for _, p := range pinned {
		if got := SplitOf("blanket1", p.name, 0.2); got != p.want {
			t.Errorf("SplitOf(blanket1, %s) = %s, want %s", p.name, got, p.want)
		}
	}
	n, test := 20000, 0
	for i := 0; i < n; i++ {
		if SplitOf("c", fmt.Sprintf("img%05d.png", i), 0.2) == Test {
			test++
		}
	}
	if frac := float64(test) / float64(n); math.Abs(frac-0.2) > 0.015 {
		t.Fatalf("test fraction = %.3f, want about 0.2", frac)
	}
	if SplitOf("a", "b", 0) != Train || SplitOf("a", "b", 1) != Test {
		t.Fatal("fractions 0 and 1 must put everything in train and test")
	}
}

func TestSampleFragments(t *testing.T) {
	t.Parallel()
	images := []ImageRef{
		{Key: "b/2.png", Class: 1, Width: 300, Height: 260},
		{Key: "a/1.png", Class: 0, Width: 576, Height: 576},
		{Key: "a/small.png", Class: 0, Width: 100, Height: 400},
	}
	ok, small := Eligible(images, 256)
	if len(ok) != 2 || ok[0].Key != "a/1.png" || !reflect.DeepEqual(small, []string{"a/small.png"}) {
		t.Fatalf("Eligible = %v, %v", ok, small)
	}
	// The first fragments for seed 42 pin the documented algorithm.
	head, err := SampleFragments(ok, 42, 3, 256)
	if err != nil {
		t.Fatal(err)
	}
	wantHead := []Fragment{{0, 2, 212, 256}, {1, 35, 4, 256}, {0, 270, 190, 256}}
	if !reflect.DeepEqual(head, wantHead) {
		t.Fatalf("seed 42 fragments = %v, want %v", head, wantHead)
	}
	f1, err := SampleFragments(ok, 42, 5000, 256)
	if err != nil {
		t.Fatal(err)
	}
	f2, _ := SampleFragments(ok, 42, 5000, 256)
	if !reflect.DeepEqual(f1, f2) {
		t.Fatal("same seed gave different fragments")
	}
	f3, _ := SampleFragments(ok, 43, 5000, 256)
	if reflect.DeepEqual(f1, f3) {
		t.Fatal("different seeds gave the same fragments")
	}
	seen := map[int]int{}
	for _, f := range f1 {
		im := ok[f.Image]
		if f.X < 0 || f.Y < 0 || f.X+f.Size > im.Width || f.Y+f.Size > im.Height {
			t.Fatalf("fragment %+v outside image %+v", f, im)
		}
		seen[f.Image]++
	}
	if seen[0] < 2000 || seen[1] < 2000 {
		t.Fatalf("images not sampled uniformly: %v", seen)
	}
	if _, err := SampleFragments(nil, 1, 10, 256); err == nil {
		t.Fatal("no images: want an error")
	}
}

func TestGridFragments(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name                        string
		w, h, size, stride, wantLen int
	}{
		{"exact", 512, 512, 256, 256, 4},
		{"overlap at edge", 576, 576, 256, 256, 9},
		{"single", 256, 256, 256, 128, 1},
		{"too small", 200, 300, 256, 256, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs := GridFragments(7, c.w, c.h, c.size, c.stride)
			if len(fs) != c.wantLen {
				t.Fatalf("len = %d, want %d", len(fs), c.wantLen)
			}
			for _, f := range fs {
				if f.Image != 7 || f.X+f.Size > c.w || f.Y+f.Size > c.h {
					t.Fatalf("bad fragment %+v", f)
				}
			}
		})
	}
}
