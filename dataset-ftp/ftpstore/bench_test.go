package ftpstore_test

import (
	"context"
	"testing"

	"github.com/texgrid/texgrid/dataset-ftp/ftpstore"
)

// BenchmarkFetch compares a work unit's fetch on a cold cache (miss: every image
// downloaded and verified) with the next work unit on the same dataset (hit: every
// image re-verified from disk). downloaded-B/op shows the second unit downloads nothing.
func BenchmarkFetch(b *testing.B) {
	env, m := serveKTH(b, 10)
	ctx := context.Background()
	b.Run("miss", func(b *testing.B) {
		var downloaded int64
		for b.Loop() {
			b.StopTimer()
			s := open(b, env, ftpstore.Config{})
			b.StartTimer()
			if err := s.Fetch(ctx, "kth", m.Images); err != nil {
				b.Fatal(err)
			}
			downloaded += s.Stats().BytesDownloaded
			b.StopTimer()
			s.Close()
			b.StartTimer()
		}
		b.ReportMetric(float64(downloaded)/float64(b.N), "downloaded-B/op")
		b.SetBytes(totalSize(m.Images))
	})
	b.Run("hit", func(b *testing.B) {
		s := open(b, env, ftpstore.Config{})
		if err := s.Fetch(ctx, "kth", m.Images); err != nil {
			b.Fatal(err)
		}
		before := s.Stats().BytesDownloaded
		for b.Loop() {
			if err := s.Fetch(ctx, "kth", m.Images); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(s.Stats().BytesDownloaded-before)/float64(b.N), "downloaded-B/op")
		b.SetBytes(totalSize(m.Images))
	})
}
