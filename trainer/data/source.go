package data

import (
	"container/list"
	"fmt"
	"sync"
)

// ImageLoader returns the grey image stored under a dataset key ("<class>/<name>").
// It is called concurrently by FragmentSource and must be safe for that.
type ImageLoader func(key string) (*Gray, error)

// DefaultCacheBytes is the image cache of a FragmentSource when none is given: room for
// all 240 Kylberg 576x576 images (80 MB) with headroom.
const DefaultCacheBytes = 128 << 20

// FragmentSource serves fragments as training samples: sample i is fragment i cut from
// its image and labelled with the image's class. It implements the engine's
// train.Source (Len, Sample). Images come from memory or from a loader behind a
// bounded least-recently-used cache, so a volunteer never holds more than the cache's
// worth of pixels. Sample is safe for concurrent use.
type FragmentSource struct {
	images []ImageRef
	frags  []Fragment
	mem    []*Gray     // in-memory variant: mem[i] is images[i]
	cache  *imageCache // loader variant
}

// NewFragmentSource serves frags (whose Image fields index images) from images loaded
// on demand by load, holding at most cacheBytes of pixels (DefaultCacheBytes when
// <= 0; at least one image is always held). Fragments are checked against the
// images' recorded sizes here, so Sample fails only if a file changed on disk.
func NewFragmentSource(images []ImageRef, frags []Fragment, load ImageLoader, cacheBytes int64) (*FragmentSource, error) {
	if load == nil {
		return nil, fmt.Errorf("fragment source: nil loader")
	}
	if err := checkFragments(images, frags); err != nil {
		return nil, err
	}
	if cacheBytes <= 0 {
		cacheBytes = DefaultCacheBytes
	}
	return &FragmentSource{images: images, frags: frags, cache: newImageCache(load, cacheBytes)}, nil
}

// NewMemorySource serves frags from images already in memory: grays[i] is images[i].
func NewMemorySource(images []ImageRef, grays []*Gray, frags []Fragment) (*FragmentSource, error) {
	if len(grays) != len(images) {
		return nil, fmt.Errorf("fragment source: %d images but %d pixel buffers", len(images), len(grays))
	}
	for i, g := range grays {
		if err := g.check(); err != nil {
			return nil, fmt.Errorf("fragment source: image %s: %w", images[i].Key, err)
		}
		if g.W != images[i].Width || g.H != images[i].Height {
			return nil, fmt.Errorf("fragment source: image %s is %dx%d but its ref says %dx%d: %w",
				images[i].Key, g.W, g.H, images[i].Width, images[i].Height, ErrFragment)
		}
	}
	if err := checkFragments(images, frags); err != nil {
		return nil, err
	}
	return &FragmentSource{images: images, frags: frags, mem: grays}, nil
}

func checkFragments(images []ImageRef, frags []Fragment) error {
	for k, f := range frags {
		if f.Image < 0 || f.Image >= len(images) {
			return fmt.Errorf("fragment source: fragment %d names image %d of %d: %w", k, f.Image, len(images), ErrFragment)
		}
		im := images[f.Image]
		if f.Size <= 0 || f.X < 0 || f.Y < 0 || f.X > im.Width-f.Size || f.Y > im.Height-f.Size {
			return fmt.Errorf("fragment source: fragment %d (%d,%d size %d) is outside image %s (%dx%d): %w",
				k, f.X, f.Y, f.Size, im.Key, im.Width, im.Height, ErrFragment)
		}
	}
	return nil
}

// Len returns the number of samples (fragments).
func (s *FragmentSource) Len() int { return len(s.frags) }

// Fragment returns fragment i, for callers that group results by image.
func (s *FragmentSource) Fragment(i int) Fragment { return s.frags[i] }

// Images returns the image list fragments index into.
func (s *FragmentSource) Images() []ImageRef { return s.images }

// Sample writes fragment i into dst (size*size floats, x/255 - 0.5) and returns its
// class.
func (s *FragmentSource) Sample(i int, dst []float32) (label int, err error) {
	if i < 0 || i >= len(s.frags) {
		return 0, fmt.Errorf("sample %d of %d: %w", i, len(s.frags), ErrFragment)
	}
	f := s.frags[i]
	im := s.images[f.Image]
	var g *Gray
	if s.mem != nil {
		g = s.mem[f.Image]
	} else {
		g, err = s.cache.get(im.Key)
		if err != nil {
			return 0, fmt.Errorf("sample %d: load %s: %w", i, im.Key, err)
		}
	}
	if err := g.Cut(f, dst); err != nil {
		return 0, fmt.Errorf("sample %d from %s: %w", i, im.Key, err)
	}
	return im.Class, nil
}

// Loads returns how many times the loader has been called (0 for in-memory sources):
// with Len it tells whether the cache is large enough for the access pattern.
func (s *FragmentSource) Loads() int64 {
	if s.cache == nil {
		return 0
	}
	s.cache.mu.Lock()
	defer s.cache.mu.Unlock()
	return s.cache.loads
}

// imageCache is a byte-bounded LRU of decoded images. Concurrent requests for the same
// missing key share one load.
type imageCache struct {
	load  ImageLoader
	limit int64

	mu    sync.Mutex
	bytes int64
	loads int64
	lru   *list.List // of *cacheEntry, most recently used at the front
	byKey map[string]*list.Element
}

type cacheEntry struct {
	key   string
	ready chan struct{} // closed when g/err are set
	g     *Gray
	err   error
}

func newImageCache(load ImageLoader, limit int64) *imageCache {
	return &imageCache{load: load, limit: limit, lru: list.New(), byKey: map[string]*list.Element{}}
}

func (c *imageCache) get(key string) (*Gray, error) {
	c.mu.Lock()
	if el, ok := c.byKey[key]; ok {
		c.lru.MoveToFront(el)
		e := el.Value.(*cacheEntry)
		c.mu.Unlock()
		<-e.ready
		return e.g, e.err
	}
	e := &cacheEntry{key: key, ready: make(chan struct{})}
	el := c.lru.PushFront(e)
	c.byKey[key] = el
	c.loads++
	c.mu.Unlock()

	g, err := c.load(key)
	if err == nil {
		if cerr := g.check(); cerr != nil {
			g, err = nil, cerr
		}
	}
	e.g, e.err = g, err
	close(e.ready)

	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		// Do not cache failures: a later call may succeed (a file being replaced).
		if cur, ok := c.byKey[key]; ok && cur == el {
			c.lru.Remove(el)
			delete(c.byKey, key)
		}
		return nil, err
	}
	if cur, ok := c.byKey[key]; ok && cur == el {
		c.bytes += g.Bytes()
	}
	c.evict(el)
	return g, nil
}

// evict drops least recently used, fully loaded images until the cache fits, never
// dropping keep (the image just loaded). Callers hold c.mu.
func (c *imageCache) evict(keep *list.Element) {
	for el := c.lru.Back(); el != nil && c.bytes > c.limit; {
		prev := el.Prev()
		e := el.Value.(*cacheEntry)
		select {
		case <-e.ready:
			if el != keep && e.g != nil {
				c.bytes -= e.g.Bytes()
				c.lru.Remove(el)
				delete(c.byKey, e.key)
			}
		default: // still loading; its loader will account for it
		}
		el = prev
	}
}
