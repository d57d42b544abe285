// Package par runs the trainer's fixed-size worker fan-outs: worker 0 on the calling
// goroutine, the others on goroutines that are all joined before Do returns.
package par

import "sync"

// Do calls f(0), ..., f(n-1) concurrently and returns when all have returned.
func Do(n int, f func(w int)) {
	if n <= 1 {
		f(0)
		return
	}
	var wg sync.WaitGroup
	for w := 1; w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(w)
		}()
	}
	f(0)
	wg.Wait()
}
