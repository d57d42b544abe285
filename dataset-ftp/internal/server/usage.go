package server

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
)

// usageFile is the ledger of who stored which file, inside stateDir.
const usageFile = "usage.log"

// ledger attributes stored bytes to the uploader who stored them, for quotas. It is an
// append-only log of "put <user> <size> <path>" and "del <path>" lines, replayed and
// compacted at start; entries whose file no longer exists are dropped then. A file that
// the indexer moves to quarantine keeps counting against its uploader until it is
// deleted or replaced.
type ledger struct {
	root     *os.Root
	mu       sync.Mutex
	files    map[string]ledgerEntry
	used     map[string]int64
	reserved map[string]int64 // bytes of uploads in progress, so parallel uploads share one quota
	f        *os.File
}

type ledgerEntry struct {
	user string
	size int64
}

func openLedger(root *os.Root) (*ledger, error) {
	l := &ledger{root: root, files: map[string]ledgerEntry{}, used: map[string]int64{}, reserved: map[string]int64{}}
	if err := root.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("usage ledger: %w", err)
	}
	name := stateDir + "/" + usageFile
	if b, err := root.ReadFile(name); err == nil {
		sc := bufio.NewScanner(strings.NewReader(string(b)))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l.apply(sc.Text())
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("usage ledger: %w", err)
	}
	for p := range l.files {
		if _, err := root.Lstat(p); err != nil {
			l.drop(p)
		}
	}
	// Compact: rewrite the live entries, then append from there.
	var sb strings.Builder
	for p, e := range l.files {
		fmt.Fprintf(&sb, "put %s %d %s\n", e.user, e.size, p)
	}
	tmp := name + ".tmp"
	if err := writeFileRoot(root, tmp, []byte(sb.String())); err != nil {
		return nil, fmt.Errorf("usage ledger: %w", err)
	}
	if err := root.Rename(tmp, name); err != nil {
		return nil, fmt.Errorf("usage ledger: %w", err)
	}
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("usage ledger: %w", err)
	}
	l.f = f
	return l, nil
}

func writeFileRoot(root *os.Root, name string, b []byte) error {
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (l *ledger) apply(line string) {
	kind, rest, _ := strings.Cut(line, " ")
	switch kind {
	case "put":
		user, rest, _ := strings.Cut(rest, " ")
		sz, p, _ := strings.Cut(rest, " ")
		n, err := strconv.ParseInt(sz, 10, 64)
		if err != nil || user == "" || p == "" {
			return
		}
		l.set(p, ledgerEntry{user, n})
	case "del":
		l.drop(rest)
	}
}

func (l *ledger) set(p string, e ledgerEntry) {
	l.drop(p)
	l.files[p] = e
	l.used[e.user] += e.size
}

func (l *ledger) drop(p string) {
	if old, ok := l.files[p]; ok {
		l.used[old.user] -= old.size
		delete(l.files, p)
	}
}

// Used returns the bytes stored by user.
func (l *ledger) Used(user string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.used[user]
}

// Reserve claims n more bytes for an upload in progress by user; it refuses (and
// claims nothing) if stored plus reserved bytes would exceed quota (0 = no quota).
func (l *ledger) Reserve(user string, n, quota int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if quota > 0 && l.used[user]+l.reserved[user]+n > quota {
		return false
	}
	l.reserved[user] += n
	return true
}

// Release returns n reserved bytes (the upload ended, or was committed with Put).
func (l *ledger) Release(user string, n int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.reserved[user] -= n; l.reserved[user] <= 0 {
		delete(l.reserved, user)
	}
}

// Size returns the recorded size of p, or -1.
func (l *ledger) Size(p string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.files[p]; ok {
		return e.size
	}
	return -1
}

// Put records that user stored size bytes at p (replacing any earlier entry).
func (l *ledger) Put(user, p string, size int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.set(p, ledgerEntry{user, size})
	_, err := fmt.Fprintf(l.f, "put %s %d %s\n", user, size, p)
	return err
}

// Delete forgets p.
func (l *ledger) Delete(p string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.drop(p)
	_, err := fmt.Fprintf(l.f, "del %s\n", p)
	return err
}

// Rename moves the entry of from (and every entry below it, for a folder) to to.
func (l *ledger) Rename(from, to string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var sb strings.Builder
	var moved []string
	for p := range l.files {
		if p == from || strings.HasPrefix(p, from+"/") {
			moved = append(moved, p)
		}
	}
	for _, p := range moved {
		e := l.files[p]
		np := to + strings.TrimPrefix(p, from)
		l.drop(p)
		l.set(np, e)
		fmt.Fprintf(&sb, "del %s\nput %s %d %s\n", p, e.user, e.size, np)
	}
	_, err := l.f.WriteString(sb.String())
	return err
}

func (l *ledger) Close() error { return l.f.Close() }
