package index

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Scheduler debounces indexing: a dataset is indexed once no write has touched it for
// the delay and no upload into it is in progress. Run owns the only goroutine that
// indexes; Flush runs what is still pending after Run has stopped.
type Scheduler struct {
	delay time.Duration
	run   func(ctx context.Context, dataset string)

	mu   sync.Mutex
	due  map[string]time.Time
	busy map[string]int
	wake chan struct{}
}

// NewScheduler returns a scheduler that calls run for each settled dataset.
func NewScheduler(delay time.Duration, run func(ctx context.Context, dataset string)) *Scheduler {
	return &Scheduler{delay: delay, run: run, due: map[string]time.Time{}, busy: map[string]int{},
		wake: make(chan struct{}, 1)}
}

func (s *Scheduler) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Touch records a write to dataset: it will be indexed delay after the last Touch.
func (s *Scheduler) Touch(dataset string) {
	s.mu.Lock()
	s.due[dataset] = time.Now().Add(s.delay)
	s.mu.Unlock()
	s.signal()
}

// Begin marks an upload into dataset in progress; indexing waits until End.
func (s *Scheduler) Begin(dataset string) {
	s.mu.Lock()
	s.busy[dataset]++
	s.mu.Unlock()
}

// End marks an upload finished (committed or not).
func (s *Scheduler) End(dataset string) {
	s.mu.Lock()
	if s.busy[dataset]--; s.busy[dataset] <= 0 {
		delete(s.busy, dataset)
	}
	if _, ok := s.due[dataset]; ok {
		s.due[dataset] = time.Now().Add(s.delay)
	}
	s.mu.Unlock()
	s.signal()
}

// take removes and returns the datasets ready now (all pending ones if force), and
// the time of the next deadline.
func (s *Scheduler) take(now time.Time, force bool) (ready []string, next time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ds, t := range s.due {
		if s.busy[ds] > 0 && !force {
			continue
		}
		if force || !t.After(now) {
			ready = append(ready, ds)
			delete(s.due, ds)
			continue
		}
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	sort.Strings(ready)
	return ready, next
}

// Run indexes settled datasets until ctx ends. An indexing run in progress finishes
// (with its own uncancelled context) before Run returns.
func (s *Scheduler) Run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		ready, next := s.take(time.Now(), false)
		for i, ds := range ready {
			if ctx.Err() != nil {
				for _, left := range ready[i:] {
					s.Touch(left) // leave them for Flush
				}
				return
			}
			s.run(context.WithoutCancel(ctx), ds)
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), time.Millisecond)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-timer.C:
		}
	}
}

// Flush indexes every pending dataset now; call it after Run has returned.
func (s *Scheduler) Flush(ctx context.Context) {
	ready, _ := s.take(time.Now(), true)
	for _, ds := range ready {
		s.run(ctx, ds)
	}
}
