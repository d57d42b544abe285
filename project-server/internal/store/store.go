// Package store opens the project server's database (SQLite by default, PostgreSQL when
// given a postgres DSN), runs the embedded SQL migrations, and defines the rows the
// scheduler reads and writes. The schema belongs to the migrations package; gorm only
// maps rows onto these structs and never creates or alters a table.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/texgrid/texgrid/migrations"
)

// DB is an open, migrated database.
type DB struct {
	*gorm.DB
	// R is for reads outside transactions. On SQLite it is a separate pool of
	// read-only connections, so readers never queue behind the one writer (WAL lets
	// them run concurrently); on PostgreSQL it is the same pool as DB.
	R *gorm.DB
	// Postgres is true on PostgreSQL, false on SQLite.
	Postgres bool
}

// IsPostgres reports whether dsn names a PostgreSQL database rather than a SQLite file.
func IsPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") ||
		strings.Contains(dsn, "host=") || strings.Contains(dsn, "dbname=")
}

// Open connects to dsn (a SQLite file path or a postgres DSN) and migrates it up.
// SQLite runs in WAL mode with a busy timeout and one connection, so every write is
// serialised in the process and never meets SQLITE_BUSY.
//
// SQLite durability: WAL with synchronous=NORMAL. A commit has written its pages to the
// WAL file when it returns, so an acknowledged result survives the process being
// killed (kill -9): the operating system still holds the file's pages and the next
// open replays the WAL. The WAL is fsynced at checkpoints, not at each commit, so a
// power loss or kernel crash can lose the last transactions before a checkpoint,
// though never corrupt the database. Blobs are fsynced before the rows naming them
// commit, whatever the mode.
func Open(ctx context.Context, dsn string) (*DB, error) {
	cfg := &gorm.Config{Logger: logger.Discard, SkipDefaultTransaction: true, PrepareStmt: true, PrepareStmtMaxSize: 256, PrepareStmtTTL: time.Hour, NowFunc: func() time.Time { return time.Now().UTC() }}
	var (
		g       *gorm.DB
		err     error
		pg      = IsPostgres(dsn)
		dialect = goose.DialectSQLite3
		dir     = migrations.SQLite
	)
	if pg {
		dialect, dir = goose.DialectPostgres, migrations.Postgres
		g, err = gorm.Open(postgres.Open(dsn), cfg)
	} else {
		g, err = gorm.Open(sqliteDialector{dsn: sqliteDSN(dsn)}, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", redact(dsn), err)
	}
	sqlDB, err := g.DB()
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	if pg {
		sqlDB.SetMaxOpenConns(16)
		sqlDB.SetMaxIdleConns(16)
	} else {
		sqlDB.SetMaxOpenConns(1)
		sqlDB.SetMaxIdleConns(1)
		sqlDB.SetConnMaxLifetime(0)
	}
	if err := sqlDB.PingContext(ctx); err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("open database %s: %w", redact(dsn), err)
	}
	if err := migrate(ctx, sqlDB, dialect, dir); err != nil {
		sqlDB.Close()
		return nil, err
	}
	d := &DB{DB: g, R: g, Postgres: pg}
	if !pg {
		r, err := gorm.Open(sqliteDialector{dsn: sqliteDSN(dsn) + "&_pragma=query_only(1)"}, cfg)
		if err != nil {
			sqlDB.Close()
			return nil, fmt.Errorf("open database %s for reading: %w", dsn, err)
		}
		rdb, err := r.DB()
		if err != nil {
			sqlDB.Close()
			return nil, err
		}
		rdb.SetMaxOpenConns(4)
		rdb.SetMaxIdleConns(4)
		d.R = r
	}
	return d, nil
}

// Close releases the connections.
func (d *DB) Close() error {
	var first error
	for _, g := range []*gorm.DB{d.R, d.DB} {
		sqlDB, err := g.DB()
		if err == nil {
			err = sqlDB.Close()
		}
		if err != nil && first == nil {
			first = err
		}
		if d.R == d.DB {
			break
		}
	}
	return first
}

func sqliteDSN(path string) string {
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "busy_timeout(10000)", "foreign_keys(1)", "synchronous(NORMAL)", "cache_size(-16000)", "mmap_size(268435456)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	// Times are written as "2006-01-02 15:04:05.999999999-07:00" (always UTC here), the
	// form the schema has always held, which sorts as text in time order.
	q.Set("_time_format", "sqlite")
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return path + sep + q.Encode()
}

func migrate(ctx context.Context, db *sql.DB, dialect goose.Dialect, dir string) error {
	fsys, err := migrations.Goose(dir)
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(dialect, db, fsys)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("migrate database: %w", err)
	}
	return nil
}

func redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxx")
			return u.String()
		}
	}
	return dsn
}

// ErrNotFound is returned when a looked-up row does not exist.
var ErrNotFound = errors.New("not found")

// NotFound maps gorm's record-not-found to ErrNotFound and leaves other errors alone.
func NotFound(err error) error {
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return ErrNotFound
	}
	return err
}
