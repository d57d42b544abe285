package par

import (
	"sync/atomic"
	"testing"
)

func TestDo(t *testing.T) {
	cases := []struct {
		name string
		n    int
		want []int64
	}{
		{"zero runs worker 0", 0, []int64{1}},
		{"one", 1, []int64{1}},
		{"four", 4, []int64{1, 1, 1, 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			calls := make([]atomic.Int64, len(c.want))
			Do(c.n, func(w int) { calls[w].Add(1) })
			for w, want := range c.want {
				if got := calls[w].Load(); got != want {
					t.Errorf("worker %d ran %d times, want %d", w, got, want)
				}
			}
		})
	}
}
