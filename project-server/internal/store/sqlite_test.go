package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestSQLiteTimes: times are stored as the text the schema has always held (written by
// the previous driver too), so old databases read back and "deadline <= ?" comparisons,
// which SQLite makes on that text, follow time order; sub-second times survive exactly.
func TestSQLiteTimes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	base := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name string
		at   time.Time
		text string
	}{
		{"whole second", base, "2026-11-21 12:00:00+00:00"},
		{"fraction", base.Add(250 * time.Millisecond), "2026-11-21 12:00:00.25+00:00"},
		{"nanoseconds", base.Add(time.Second + 123456789), "2026-11-21 12:00:01.123456789+00:00"},
	}
	for i, c := range cases {
		a := Account{Name: c.name, KeyHash: c.name, CreatedAt: c.at}
		if err := db.Create(&a).Error; err != nil {
			t.Fatal(err)
		}
		var text string
		if err := db.Raw("SELECT created_at || '' FROM accounts WHERE id = ?", a.ID).Row().Scan(&text); err != nil {
			t.Fatal(err)
		}
		if text != c.text {
			t.Errorf("%s: stored %q, want %q", c.name, text, c.text)
		}
		var back Account
		if err := db.R.Take(&back, a.ID).Error; err != nil || !back.CreatedAt.Equal(c.at) {
			t.Errorf("%s: read back %v (%v), want %v", c.name, back.CreatedAt, err, c.at)
		}
		// Rows older than the next case's time, compared in SQL.
		if i+1 < len(cases) {
			var n int64
			if err := db.R.Model(&Account{}).Where("created_at < ?", cases[i+1].at).Count(&n).Error; err != nil || n != int64(i+1) {
				t.Errorf("%s: %d rows before %v (%v), want %d", c.name, n, cases[i+1].at, err, i+1)
			}
		}
	}
	// A row written in the old driver's form by hand reads back too.
	if err := db.Exec("INSERT INTO accounts (name, key_hash, created_at) VALUES ('old', 'old', '2025-01-02 03:04:05.5+00:00')").Error; err != nil {
		t.Fatal(err)
	}
	var old Account
	if err := db.R.Where("name = ?", "old").Take(&old).Error; err != nil || !old.CreatedAt.Equal(time.Date(2025, 1, 2, 3, 4, 5, 5e8, time.UTC)) {
		t.Fatalf("old row: %v (%v)", old.CreatedAt, err)
	}
}
