// Package state owns a volunteer-client's state directory: the host identity and token
// from attach, the lock that keeps two clients out of one directory, and the atomic
// file writes every other package uses. The directory is mode 0700 and every secret in
// it 0600; a looser mode is an error, not a warning, because the host token lets anyone
// upload results in the volunteer's name.
package state

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File names inside the state directory.
const (
	IdentityFile = "host.json"  // Identity, mode 0600
	TokenFile    = "host.token" // the host bearer token, mode 0600
	LockFile     = "lock"       // flock'ed while a client runs
	WorkDir      = "work"       // the current work unit's files (package checkpoint)
	CacheDir     = "cache"      // the image cache (dataset-ftp/ftpstore)
)

// Sentinel errors callers act on.
var (
	ErrNotAttached = errors.New("this state directory is not attached to a project (run `volunteer-client attach`)")
	ErrBadMode     = errors.New("unsafe file mode")
	ErrLocked      = errors.New("another volunteer-client is using this state directory")
)

// Dir is an opened state directory.
type Dir struct {
	Path string
	lock *os.File
}

// Open checks an existing state directory: it must be a directory of mode 0700 owned
// by this user. With create, a missing directory is made (with parents) mode 0700.
func Open(path string, create bool) (*Dir, error) {
	if path == "" {
		return nil, errors.New("state dir: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("state dir %s: %w", path, err)
	}
	fi, err := os.Stat(abs)
	if errors.Is(err, fs.ErrNotExist) && create {
		if err := os.MkdirAll(abs, 0o700); err != nil {
			return nil, fmt.Errorf("state dir: %w", err)
		}
		if err := os.Chmod(abs, 0o700); err != nil { // MkdirAll applies the umask
			return nil, fmt.Errorf("state dir: %w", err)
		}
		fi, err = os.Stat(abs)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("state dir %s does not exist: %w", abs, ErrNotAttached)
	}
	if err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("state dir %s is not a directory", abs)
	}
	if tooOpen(fi.Mode()) {
		return nil, fmt.Errorf("state dir %s has mode %04o; it holds the host token, so group and others must have no access (chmod 700 %s): %w",
			abs, fi.Mode().Perm(), abs, ErrBadMode)
	}
	if uid, ok := owner(fi); ok && uid != os.Getuid() {
		return nil, fmt.Errorf("state dir %s belongs to uid %d, not to this user (uid %d): %w", abs, uid, os.Getuid(), ErrBadMode)
	}
	return &Dir{Path: abs}, nil
}

// File returns the path of name inside the directory.
func (d *Dir) File(name ...string) string {
	return filepath.Join(append([]string{d.Path}, name...)...)
}

// Lock takes an exclusive advisory lock for the life of a running client. A second
// client on the same directory gets ErrLocked; different directories never collide.
func (d *Dir) Lock() error {
	f, err := os.OpenFile(d.File(LockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("lock state dir: %w", err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		if errors.Is(err, errWouldBlock) {
			return fmt.Errorf("%s: %w", d.Path, ErrLocked)
		}
		return fmt.Errorf("lock state dir: %w", err)
	}
	d.lock = f
	return nil
}

// Unlock releases Lock; the kernel also releases it when the process dies.
func (d *Dir) Unlock() {
	if d.lock != nil {
		d.lock.Close()
		d.lock = nil
	}
}

// Identity is what attach learned from the server.
type Identity struct {
	Server     string    `json:"server"` // project server base URL
	HostID     int64     `json:"host_id"`
	Name       string    `json:"name"`
	GFLOPS     float64   `json:"gflops"` // measured at attach
	AttachedAt time.Time `json:"attached_at"`
}

// SaveIdentity writes the identity and the token, both mode 0600.
func (d *Dir) SaveIdentity(id Identity, token string) error {
	b, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return err
	}
	if err := WriteFile(d.File(TokenFile), []byte(token+"\n"), 0o600); err != nil {
		return fmt.Errorf("save host token: %w", err)
	}
	if err := WriteFile(d.File(IdentityFile), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save host identity: %w", err)
	}
	return nil
}

// LoadIdentity reads the identity and token, refusing a token file others can read.
func (d *Dir) LoadIdentity() (Identity, string, error) {
	var id Identity
	b, err := os.ReadFile(d.File(IdentityFile))
	if errors.Is(err, fs.ErrNotExist) {
		return id, "", fmt.Errorf("%s: %w", d.Path, ErrNotAttached)
	}
	if err != nil {
		return id, "", fmt.Errorf("host identity: %w", err)
	}
	if err := json.Unmarshal(b, &id); err != nil {
		return id, "", fmt.Errorf("host identity %s: %w", d.File(IdentityFile), err)
	}
	tok, err := ReadSecret(d.File(TokenFile))
	if errors.Is(err, fs.ErrNotExist) {
		return id, "", fmt.Errorf("%s has no host token: %w", d.Path, ErrNotAttached)
	}
	if err != nil {
		return id, "", err
	}
	if tok == "" {
		return id, "", fmt.Errorf("host token %s is empty: %w", d.File(TokenFile), ErrNotAttached)
	}
	return id, tok, nil
}

// RemoveIdentity deletes the token and the identity (detach).
func (d *Dir) RemoveIdentity() error {
	for _, f := range []string{TokenFile, IdentityFile} {
		if err := os.Remove(d.File(f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("detach: %w", err)
		}
	}
	return nil
}

// ReadSecret reads a token file, which must not be readable by group or others.
func ReadSecret(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("secret: %w", err)
	}
	if tooOpen(fi.Mode()) {
		return "", fmt.Errorf("%s has mode %04o; a token file must be 0600 (chmod 600 %s): %w", path, fi.Mode().Perm(), path, ErrBadMode)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("secret: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// WriteFile replaces path atomically: it writes a temporary file in the same
// directory, fsyncs it, renames it over path and fsyncs the directory, so a crash
// leaves either the old or the new content, never a torn file.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return SyncDir(dir)
}

// SyncDir fsyncs a directory so a rename inside it is durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// DirSize returns the bytes of regular files under path (0 when it does not exist).
func DirSize(path string) (int64, error) {
	var n int64
	err := filepath.WalkDir(path, func(_ string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if e.Type().IsRegular() {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n, err
}
