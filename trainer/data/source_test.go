package data

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// testImages returns n images of distinct sizes with distinct pixels, and their refs.
func testImages(n int) ([]ImageRef, []*Gray) {
	refs := make([]ImageRef, n)
	grays := make([]*Gray, n)
	for i := range n {
		w, h := 10+i, 12+2*i
		g := &Gray{W: w, H: h, Pix: make([]uint8, w*h)}
		for k := range g.Pix {
			g.Pix[k] = uint8(k*7 + 31*i)
		}
		refs[i] = ImageRef{Key: fmt.Sprintf("c%d/img%d.png", i%3, i), Class: i % 3, Width: w, Height: h}
		grays[i] = g
	}
	return refs, grays
}

func TestFragmentSource(t *testing.T) {
	t.Parallel()
	refs, grays := testImages(6)
	frags, err := SampleFragments(refs, 9, 200, 8)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	loader := func(key string) (*Gray, error) {
		calls.Add(1)
		for i, r := range refs {
			if r.Key == key {
				return grays[i], nil
			}
		}
		return nil, fmt.Errorf("no image %s", key)
	}
	mem, err := NewMemorySource(refs, grays, frags)
	if err != nil {
		t.Fatal(err)
	}
	// A cache with room for about two of the images.
	lazy, err := NewFragmentSource(refs, frags, loader, int64(2*len(grays[5].Pix)))
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float32, 64)
	got := make([]float32, 64)
	for i := range frags {
		f := frags[i]
		if err := grays[f.Image].Cut(f, want); err != nil {
			t.Fatal(err)
		}
		for _, src := range []*FragmentSource{mem, lazy} {
			label, err := src.Sample(i, got)
			if err != nil {
				t.Fatal(err)
			}
			if label != refs[f.Image].Class {
				t.Fatalf("sample %d label %d, want %d", i, label, refs[f.Image].Class)
			}
			for k := range want {
				if got[k] != want[k] {
					t.Fatalf("sample %d differs at %d", i, k)
				}
			}
		}
	}
	if mem.Len() != 200 || lazy.Len() != 200 || mem.Loads() != 0 {
		t.Errorf("Len %d %d, memory loads %d", mem.Len(), lazy.Len(), mem.Loads())
	}
	// Random access over 6 images with room for 2 reloads often, but the cache must
	// never exceed its bound by more than the one image it always keeps.
	if n := lazy.Loads(); n <= 6 || n != calls.Load() {
		t.Errorf("loads %d (loader called %d times): the small cache should have evicted", n, calls.Load())
	}
	lazy.cache.mu.Lock()
	held := lazy.cache.bytes
	lazy.cache.mu.Unlock()
	if held > lazy.cache.limit+int64(len(grays[5].Pix)) {
		t.Errorf("cache holds %d bytes, limit %d", held, lazy.cache.limit)
	}
	// A large cache loads every image exactly once.
	big, _ := NewFragmentSource(refs, frags, loader, 0)
	for i := range frags {
		if _, err := big.Sample(i, got); err != nil {
			t.Fatal(err)
		}
	}
	if big.Loads() != 6 {
		t.Errorf("default cache loaded %d times, want 6", big.Loads())
	}
}

func TestFragmentSourceConcurrent(t *testing.T) {
	t.Parallel()
	refs, grays := testImages(4)
	frags, _ := SampleFragments(refs, 1, 400, 6)
	var calls atomic.Int64
	src, err := NewFragmentSource(refs, frags, func(key string) (*Gray, error) {
		calls.Add(1)
		for i, r := range refs {
			if r.Key == key {
				return grays[i], nil
			}
		}
		return nil, errors.New("unknown")
	}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			dst := make([]float32, 36)
			for i := w; i < len(frags); i += 8 {
				if _, err := src.Sample(i, dst); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Concurrent misses on the same key share one load.
	if calls.Load() != 4 {
		t.Errorf("loader called %d times for 4 images", calls.Load())
	}
}

func TestFragmentSourceRejects(t *testing.T) {
	t.Parallel()
	refs, grays := testImages(3)
	ok := []Fragment{{Image: 0, X: 0, Y: 0, Size: 4}}
	load := func(string) (*Gray, error) { return grays[0], nil }
	cases := []struct {
		name  string
		build func() (*FragmentSource, error)
		msg   string
	}{
		{"image index out of range", func() (*FragmentSource, error) {
			return NewMemorySource(refs, grays, []Fragment{{Image: 3, Size: 4}})
		}, "names image 3 of 3"},
		{"fragment outside image", func() (*FragmentSource, error) {
			return NewFragmentSource(refs, []Fragment{{Image: 0, X: 7, Size: 4}}, load, 0)
		}, "outside image"},
		{"zero size", func() (*FragmentSource, error) { return NewMemorySource(refs, grays, []Fragment{{Image: 1}}) }, "size 0"},
		{"pixel count mismatch", func() (*FragmentSource, error) { return NewMemorySource(refs, grays[:2], ok) }, "3 images but 2"},
		{"size not matching ref", func() (*FragmentSource, error) {
			return NewMemorySource(refs, []*Gray{grays[1], grays[1], grays[2]}, ok)
		}, "is 11x14 but its ref says 10x12"},
		{"nil loader", func() (*FragmentSource, error) { return NewFragmentSource(refs, ok, nil, 0) }, "nil loader"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			if _, err := c.build(); err == nil || !strings.Contains(err.Error(), c.msg) {
				t.Errorf("got %v, want an error containing %q", err, c.msg)
			}
		})
	}

	// Sample-time failures: index range, loader errors (not cached), images that
	// changed size on disk.
	fail := true
	src, err := NewFragmentSource(refs, []Fragment{{Image: 0, Size: 4}, {Image: 1, X: 6, Size: 4}}, func(key string) (*Gray, error) {
		if key == refs[0].Key {
			if fail {
				return nil, errors.New("disk on fire")
			}
			return grays[0], nil
		}
		return grays[0], nil
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]float32, 16)
	if _, err := src.Sample(2, dst); !errors.Is(err, ErrFragment) {
		t.Errorf("index out of range: %v", err)
	}
	if _, err := src.Sample(-1, dst); !errors.Is(err, ErrFragment) {
		t.Errorf("negative index: %v", err)
	}
	if _, err := src.Sample(0, dst); err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("loader error: %v", err)
	}
	fail = false
	if _, err := src.Sample(0, dst); err != nil {
		t.Errorf("a failed load was cached: %v", err)
	}
	if _, err := src.Sample(0, dst[:15]); !errors.Is(err, ErrFragment) {
		t.Errorf("short dst: %v", err)
	}
	// Image 1's ref says 11x14 but the loader returns a 10x12 image (the file changed
	// since the scan): a fragment that fits only the ref fails at Sample time.
	src2, _ := NewFragmentSource(refs, []Fragment{{Image: 1, X: 7, Y: 10, Size: 4}}, func(string) (*Gray, error) { return grays[0], nil }, 0)
	if _, err := src2.Sample(0, dst); !errors.Is(err, ErrFragment) || !strings.Contains(err.Error(), "outside the 10x12 image") {
		t.Errorf("image changed on disk: %v", err)
	}
}
