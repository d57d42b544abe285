// Package pgtest gives tests a real PostgreSQL: one server per test binary, started on
// first use with initdb into a temporary directory and pg_ctl on a free 127.0.0.1 port,
// and one fresh database per test. When the PostgreSQL binaries are missing, tests that
// ask for it are skipped, unless TEXGRID_REQUIRE_POSTGRES=1 makes that a failure.
//
// Use it from TestMain so the server is stopped when the binary ends:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }
package pgtest

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver for CREATE DATABASE
)

// Require is the environment switch that turns a missing PostgreSQL into a failure.
const Require = "TEXGRID_REQUIRE_POSTGRES"

type cluster struct {
	bin  string
	dir  string
	port int
	asPG bool // run the binaries as the postgres user (we are root)
	err  error
}

var (
	once    sync.Once
	shared  *cluster
	counter atomic.Int64
)

// Run runs the tests and then stops the server if one was started.
func Run(m *testing.M) int {
	code := m.Run()
	if shared != nil && shared.err == nil {
		shared.stop()
	}
	return code
}

// DSN returns the DSN of a new, empty database for this test, or skips the test when
// PostgreSQL is not installed (fails when TEXGRID_REQUIRE_POSTGRES=1).
func DSN(t testing.TB) string {
	t.Helper()
	once.Do(func() { shared = start() })
	if shared.err != nil {
		if os.Getenv(Require) == "1" {
			t.Fatalf("PostgreSQL required (%s=1) but unavailable: %v", Require, shared.err)
		}
		t.Skipf("PostgreSQL unavailable: %v", shared.err)
	}
	name := fmt.Sprintf("t%d_%d", os.Getpid(), counter.Add(1))
	db, err := sql.Open("pgx", shared.dsn("postgres"))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	return shared.dsn(name)
}

func (c *cluster) dsn(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// binDir finds the PostgreSQL server binaries.
func binDir() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "pg_ctl")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("no pg_ctl on PATH or under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
}

func version(binDir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return n
}

func start() *cluster {
	c := &cluster{}
	c.bin, c.err = binDir()
	if c.err != nil {
		return c
	}
	c.asPG = os.Geteuid() == 0
	c.dir, c.err = os.MkdirTemp("", "texgrid-pgtest-")
	if c.err != nil {
		return c
	}
	if c.asPG {
		u, err := user.Lookup("postgres")
		if err != nil {
			c.err = fmt.Errorf("running as root needs a postgres user: %w", err)
			return c
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(c.dir, uid, gid); err != nil {
			c.err = err
			return c
		}
	}
	data := filepath.Join(c.dir, "data")
	if out, err := c.run("initdb", "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"); err != nil {
		c.err = fmt.Errorf("initdb: %v: %s", err, out)
		return c
	}
	for attempt := 0; attempt < 5; attempt++ {
		c.port, c.err = freePort()
		if c.err != nil {
			return c
		}
		opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
			c.port, c.dir)
		var out []byte
		out, c.err = c.run("pg_ctl", "-D", data, "-o", opts, "-l", filepath.Join(c.dir, "log"), "-w", "-t", "60", "start")
		if c.err == nil {
			return c
		}
		c.err = fmt.Errorf("pg_ctl start: %v: %s", c.err, out)
	}
	return c
}

func (c *cluster) run(name string, args ...string) ([]byte, error) {
	path := filepath.Join(c.bin, name)
	var cmd *exec.Cmd
	if c.asPG {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = c.dir
	// A new process group, so a Ctrl-C aimed at the test does not reach postgres first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

func (c *cluster) stop() {
	c.run("pg_ctl", "-D", filepath.Join(c.dir, "data"), "-m", "immediate", "-w", "stop")
	os.RemoveAll(c.dir)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
