package server

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	ftpserver "goftp.io/server/v2"

	"github.com/texgrid/texgrid/dataset-ftp/manifest"
)

// Conditions the server refuses; each maps to one FTP reply code (see replyFor).
var (
	ErrPermission  = errors.New("permission denied")                          // 550
	ErrOutsideRoot = errors.New("path leaves the dataset root")               // 553
	ErrSymlink     = errors.New("symbolic links are not served")              // 553
	ErrBadName     = errors.New("file name not allowed")                      // 553
	ErrNotFound    = errors.New("no such file or directory")                  // 550
	ErrTooLarge    = errors.New("file exceeds the upload size limit")         // 552
	ErrQuota       = errors.New("upload exceeds the account's quota")         // 552
	ErrAborted     = errors.New("upload aborted before it completed")         // 426
	ErrBadOffset   = errors.New("restart offset beyond the partial file")     // 554
	ErrBusy        = errors.New("another upload to this file is in progress") // 450
)

// replyFor maps an error to its FTP reply code.
func replyFor(err error) int {
	switch {
	case errors.Is(err, ErrTooLarge), errors.Is(err, ErrQuota):
		return 552
	case errors.Is(err, ErrOutsideRoot), errors.Is(err, ErrSymlink), errors.Is(err, ErrBadName):
		return 553
	case errors.Is(err, ErrBadOffset):
		return 554
	case errors.Is(err, ErrAborted):
		return 426
	case errors.Is(err, ErrBusy):
		return 450
	default:
		return 550
	}
}

// stateDir holds the server's own files (the usage ledger) at the top of the root; it
// is invisible and inaccessible over FTP.
const stateDir = ".dataset-ftp"

// partPrefix and partSuffix name an upload in progress: "<dir>/.<name>.part". Only a
// completed upload is renamed to <name>; the indexer skips hidden names, so a partial
// upload is never indexed, and a client can resume it with REST + STOR <name>.
const (
	partPrefix = "."
	partSuffix = ".part"
)

func partName(rel string) string {
	dir, name := path.Split(rel)
	return dir + partPrefix + name + partSuffix
}

// op is the kind of access a command needs.
type op int

const (
	opRead   op = iota
	opWrite     // create or change: never a hidden name
	opDelete    // remove: writers may also clear their dataset's quarantine and partial files
)

// target is a checked path: rel is slash-separated and relative to the root ("" is the
// root itself); dataset is its first component.
type target struct {
	rel     string
	dataset string
	parts   []string
	acct    *Account
}

func (t target) fsName() string {
	if t.rel == "" {
		return "."
	}
	return t.rel
}

// escapes reports whether resolving raw from the directory cwd would climb above "/".
// goftp cleans paths before the driver sees them (clamping "/.." to "/"), so the raw
// parameter is checked here to refuse and log the attempt instead of silently serving
// something else.
func escapes(cwd, raw string) bool {
	if strings.HasPrefix(raw, "/") {
		cwd = "/"
	}
	depth := 0
	for _, p := range strings.Split(strings.Trim(cwd, "/"), "/") {
		if p != "" {
			depth++
		}
	}
	for _, p := range strings.Split(strings.ReplaceAll(raw, "\\", "/"), "/") {
		switch p {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return true
			}
		default:
			depth++
		}
	}
	return false
}

// rawParam strips LIST-style flags ("-la") from a command parameter.
func rawParam(ctx *ftpserver.Context) string {
	p := ctx.Param
	switch ctx.Cmd {
	case "LIST", "NLST", "STAT", "MLSD":
		for strings.HasPrefix(p, "-") {
			_, rest, _ := strings.Cut(p, " ")
			p = strings.TrimLeft(rest, " ")
		}
	}
	return p
}

// check resolves a virtual path for a command and enforces the rules: stay inside the
// root (no "..", no symlinks anywhere on the path), hidden names only for writers of the
// dataset, writes only where the account is granted. Every refusal is logged.
func (s *Server) check(ctx *ftpserver.Context, vpath string, want op) (target, error) {
	t, err := s.resolve(ctx, vpath, want)
	if err != nil {
		user, ip, cmd := "", "", ""
		if ctx != nil {
			cmd = ctx.Cmd
			if ctx.Sess != nil {
				user, ip = ctx.Sess.LoginUser(), remoteIP(ctx.Sess)
			}
		}
		if !errors.Is(err, ErrNotFound) {
			s.log.Warn("refused", "user", user, "ip", ip, "cmd", cmd, "path", vpath, "reason", err.Error())
		}
	}
	return t, err
}

func (s *Server) resolve(ctx *ftpserver.Context, vpath string, want op) (target, error) {
	var t target
	if ctx != nil && ctx.Sess != nil {
		if raw := rawParam(ctx); raw != "" && escapes(ctx.Sess.BuildPath(""), raw) {
			return t, fmt.Errorf("%s: %w", raw, ErrOutsideRoot)
		}
		t.acct = s.account(ctx.Sess.LoginUser())
	}
	clean := path.Clean("/" + strings.ReplaceAll(vpath, "\\", "/"))
	t.rel = strings.TrimPrefix(clean, "/")
	if strings.ContainsRune(t.rel, 0) {
		return t, ErrBadName
	}
	if t.rel != "" {
		t.parts = strings.Split(t.rel, "/")
		t.dataset = t.parts[0]
	}
	writer := t.acct.CanWrite(t.dataset)
	for i, p := range t.parts {
		if !strings.HasPrefix(p, ".") {
			continue
		}
		if i == 0 || !writer || want == opWrite {
			// (opDelete and opRead of hidden names below the dataset are the writer's.)
			// Hidden names are the server's (.quarantine, partial uploads, state): readers
			// never see them and nobody creates them over FTP.
			if want == opWrite {
				return t, fmt.Errorf("%s: %w", clean, ErrBadName)
			}
			return t, fmt.Errorf("%s: %w", clean, ErrNotFound)
		}
	}
	if want == opWrite || want == opDelete {
		if !writer {
			return t, fmt.Errorf("%s: %w", clean, ErrPermission)
		}
		if len(t.parts) == 2 && t.parts[1] == manifest.FileName {
			return t, fmt.Errorf("%s is written by the server: %w", clean, ErrPermission)
		}
	}
	if err := s.noSymlinks(t.parts); err != nil {
		return t, err
	}
	return t, nil
}

// noSymlinks walks the path from the root and refuses it if any existing component is a
// symbolic link (telling apart links that point outside the root). The os.Root used for
// the actual file operations refuses escapes again, so a link planted between this check
// and the operation still cannot leave the root.
func (s *Server) noSymlinks(parts []string) error {
	cur := ""
	for _, p := range parts {
		cur = path.Join(cur, p)
		fi, err := s.root.Lstat(cur)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			// os.Root reports a parent that escapes as an error other than ErrNotExist.
			return fmt.Errorf("/%s: %v: %w", cur, err, ErrOutsideRoot)
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			dst, rerr := filepath.EvalSymlinks(filepath.Join(s.rootDir, filepath.FromSlash(cur)))
			if rerr != nil || !within(s.rootDir, dst) {
				return fmt.Errorf("/%s -> %s: %w", cur, dst, ErrOutsideRoot)
			}
			return fmt.Errorf("/%s: %w", cur, ErrSymlink)
		}
	}
	return nil
}

// within reports whether p is dir or below it (both absolute and symlink-free).
func within(dir, p string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}
