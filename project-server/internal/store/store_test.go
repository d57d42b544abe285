package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pressly/goose/v3"

	"github.com/texgrid/texgrid/migrations"
	"github.com/texgrid/texgrid/project-server/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// onEachDatabase runs fn as a parallel subtest on a fresh SQLite file and on a fresh
// PostgreSQL database; fn gets the DSN so that it can reopen the store.
func onEachDatabase(t *testing.T, fn func(t *testing.T, ctx context.Context, dsn string)) {
	cases := []struct {
		name string
		dsn  func(t *testing.T) string
	}{
		{"sqlite", func(t *testing.T) string { return filepath.Join(t.TempDir(), "m.db") }},
		{"postgres", func(t *testing.T) string { return pgtest.DSN(t) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fn(t, context.Background(), tc.dsn(t))
		})
	}
}

// TestMigrations: every migration goes up, all the way down, and up again, on SQLite
// and PostgreSQL, and the schema then takes a row of every table.
func TestMigrations(t *testing.T) {
	onEachDatabase(t, func(t *testing.T, ctx context.Context, dsn string) {
		db, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		dialect, dir := goose.DialectSQLite3, migrations.SQLite
		if db.Postgres {
			dialect, dir = goose.DialectPostgres, migrations.Postgres
		}
		fsys, err := migrations.Goose(dir)
		if err != nil {
			t.Fatal(err)
		}
		sqlDB, _ := db.DB.DB()
		p, err := goose.NewProvider(dialect, sqlDB, fsys)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.DownTo(ctx, 0); err != nil {
			t.Fatalf("down: %v", err)
		}
		db.Close()
		if db, err = Open(ctx, dsn); err != nil {
			t.Fatalf("up again: %v", err)
		}
		defer db.Close()
		a := Account{Name: "a", KeyHash: "h"}
		if err := db.Create(&a).Error; err != nil {
			t.Fatal(err)
		}
		if err := db.Create(&Researcher{Name: "r", TokenHash: "t"}).Error; err != nil {
			t.Fatal(err)
		}
		if err := db.Create(&Host{AccountID: a.ID, Name: "h"}).Error; err != nil {
			t.Fatal(err)
		}
		var n int64
		if err := db.R.Model(&Account{}).Count(&n).Error; err != nil || n != 1 {
			t.Fatalf("read pool sees %d accounts (%v)", n, err)
		}
	})
}

func TestIsPostgres(t *testing.T) {
	t.Parallel()
	cases := []struct {
		dsn  string
		want bool
	}{
		{"postgres://u@h/db", true},
		{"postgresql://u@h/db", true},
		{"host=/tmp dbname=x", true},
		{"data/texgrid.db", false},
		{"/abs/path.db", false},
	}
	for _, tc := range cases {
		if got := IsPostgres(tc.dsn); got != tc.want {
			t.Errorf("IsPostgres(%q) = %v", tc.dsn, got)
		}
	}
}

// TestSharedModelVersions: two campaigns may name the same model blob (the same seed
// and model give the same W(0)), on SQLite and PostgreSQL; one campaign still has one
// row per blob; migrating down keeps the oldest campaign's row and up again works.
func TestSharedModelVersions(t *testing.T) {
	onEachDatabase(t, func(t *testing.T, ctx context.Context, dsn string) {
		db, err := Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { db.Close() }()
		r := Researcher{Name: "r", TokenHash: "t"}
		if err := db.Create(&r).Error; err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC()
		var ids []int64
		for _, name := range []string{"a", "b"} {
			c := Campaign{Name: name, ResearcherID: r.ID, SpecJSON: "{}", ModelSpec: "{}", ClassesJSON: "[]", State: "draft",
				ModelSHA256: "w0", CreatedAt: now, UpdatedAt: now}
			if err := db.Create(&c).Error; err != nil {
				t.Fatal(err)
			}
			ids = append(ids, c.ID)
			if err := db.Create(&ModelVersion{SHA256: "w0", CampaignID: c.ID, Size: 1, CreatedAt: now}).Error; err != nil {
				t.Fatalf("campaign %s names the shared blob: %v", name, err)
			}
		}
		if err := db.Create(&ModelVersion{SHA256: "w0", CampaignID: ids[0], Round: 3, Size: 1, CreatedAt: now}).Error; err == nil {
			t.Fatal("a campaign got a second row for the same blob")
		}
		var n int64
		if err := db.R.Model(&ModelVersion{}).Where("sha256 = ?", "w0").Count(&n).Error; err != nil || n != 2 {
			t.Fatalf("%d rows name the shared blob (%v), want 2", n, err)
		}
		dialect, dir := goose.DialectSQLite3, migrations.SQLite
		if db.Postgres {
			dialect, dir = goose.DialectPostgres, migrations.Postgres
		}
		fsys, err := migrations.Goose(dir)
		if err != nil {
			t.Fatal(err)
		}
		sqlDB, _ := db.DB.DB()
		p, err := goose.NewProvider(dialect, sqlDB, fsys)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.DownTo(ctx, 3); err != nil {
			t.Fatalf("down: %v", err)
		}
		var kept []int64
		if err := db.Raw("SELECT campaign_id FROM model_versions WHERE sha256 = 'w0'").Scan(&kept).Error; err != nil || len(kept) != 1 || kept[0] != ids[0] {
			t.Fatalf("after down the blob is named by campaigns %v (%v), want only %d", kept, err, ids[0])
		}
		db.Close()
		if db, err = Open(ctx, dsn); err != nil {
			t.Fatalf("up again: %v", err)
		}
		if err := db.Create(&ModelVersion{SHA256: "w0", CampaignID: ids[1], Size: 1, CreatedAt: now}).Error; err != nil {
			t.Fatalf("after up again: %v", err)
		}
	})
}
