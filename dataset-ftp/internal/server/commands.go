package server

import (
	"fmt"
	"io"
	"reflect"
	"strconv"
	"time"

	ftpserver "goftp.io/server/v2"
)

// The server replaces goftp's STOR, APPE, RETR and SIZE to give precise reply codes (552
// for limits, 553 for names and paths), to write uploads through a partial file, and
// to close a data connection that stalls past the idle timeout. (goftp's passive
// socket holds a lock while it reads or writes, so that close takes effect when the
// blocked call returns; a vanished peer is detected by TCP keepalive.) Every command is wrapped to remember the previous one,
// because a REST offset applies only to the command right after it.

const (
	dataPrev = "texgrid.prev"
	dataRest = "texgrid.rest"
)

// tracked wraps a command to record its name after it runs, and enforces
// tls_required (goftp v2.0.3 drops its own ForceTLS option when it copies the options).
type tracked struct {
	name  string
	inner ftpserver.Command
	s     *Server
}

// beforeTLS are the commands allowed on a plain connection when TLS is required.
var beforeTLS = map[string]bool{"AUTH": true, "FEAT": true, "QUIT": true, "NOOP": true}

func (c tracked) IsExtend() bool     { return c.inner.IsExtend() }
func (c tracked) RequireParam() bool { return c.inner.RequireParam() }
func (c tracked) RequireAuth() bool  { return c.inner.RequireAuth() }
func (c tracked) Execute(sess *ftpserver.Session, param string) {
	if c.s.cfg.TLSRequired && !beforeTLS[c.name] && !sessionTLS(sess) {
		c.s.log.Warn("refused", "ip", remoteIP(sess), "cmd", c.name, "reason", "TLS required")
		sess.WriteMessage(534, "Request denied for policy reasons: AUTH TLS required")
		return
	}
	if c.name == "REST" {
		if n, err := strconv.ParseInt(param, 10, 64); err == nil && n >= 0 {
			sess.Data[dataRest] = n
		} else {
			delete(sess.Data, dataRest)
		}
	}
	c.inner.Execute(sess, param)
	sess.Data[dataPrev] = c.name
}

// restOffset returns the REST offset if the previous command was REST, else -1.
func restOffset(sess *ftpserver.Session) int64 {
	if sess.Data[dataPrev] != "REST" {
		return -1
	}
	if n, ok := sess.Data[dataRest].(int64); ok {
		return n
	}
	return -1
}

// command is the fixed part of goftp's Command interface for the replaced commands.
type command struct{}

func (command) IsExtend() bool     { return false }
func (command) RequireParam() bool { return true }
func (command) RequireAuth() bool  { return true }

func replyErr(sess *ftpserver.Session, err error) {
	sess.WriteMessage(replyFor(err), err.Error())
}

type storCommand struct {
	command
	s    *Server
	appe bool
}

func (c storCommand) Execute(sess *ftpserver.Session, param string) {
	name := "STOR"
	if c.appe {
		name = "APPE"
	}
	ctx := &ftpserver.Context{Sess: sess, Cmd: name, Param: param, Data: map[string]interface{}{}}
	up, err := c.s.beginUpload(ctx, sess.BuildPath(param), restOffset(sess), c.appe)
	if err != nil {
		replyErr(sess, err)
		return
	}
	dc := sess.DataConn()
	if dc == nil {
		up.fail(fmt.Errorf("%w: no data connection", ErrAborted)) // keeps a resumable partial
		sess.WriteMessage(425, "Use PASV or EPSV first")
		return
	}
	sess.WriteMessage(150, fmt.Sprintf("Ready to receive at offset %d", up.offset))
	n, err := up.receive(dc, func() { dc.Close() })
	dc.Close()
	if err == nil && c.s.peerGone(sess) {
		err = fmt.Errorf("%w: control connection closed", ErrAborted)
	}
	if err != nil {
		up.fail(err)
		replyErr(sess, err)
		return
	}
	if err := up.commit(); err != nil {
		c.s.log.Error("commit upload", "err", err)
		sess.WriteMessage(451, "Local error storing the file")
		return
	}
	sess.WriteMessage(226, fmt.Sprintf("OK, received %d bytes", n))
}

type retrCommand struct {
	command
	s *Server
}

func (c retrCommand) Execute(sess *ftpserver.Session, param string) {
	ctx := &ftpserver.Context{Sess: sess, Cmd: "RETR", Param: param, Data: map[string]interface{}{}}
	offset := max(restOffset(sess), 0)
	size, rc, err := driver{c.s}.GetFile(ctx, sess.BuildPath(param), offset)
	if err != nil {
		replyErr(sess, err)
		return
	}
	defer rc.Close()
	dc := sess.DataConn()
	if dc == nil {
		sess.WriteMessage(425, "Use PASV or EPSV first")
		return
	}
	sess.WriteMessage(150, fmt.Sprintf("Sending %d bytes from offset %d", size, offset))
	n, err := copyIdle(dc, rc, time.Duration(c.s.cfg.IdleTimeout), func() { dc.Close() })
	dc.Close()
	if err != nil {
		sess.WriteMessage(426, fmt.Sprintf("Transfer aborted after %d bytes: %v", n, err))
		return
	}
	sess.WriteMessage(226, fmt.Sprintf("Closing data connection, sent %d bytes", n))
}

// copyIdle copies src to dst, calling stop if a write blocks for longer than idle.
func copyIdle(dst io.Writer, src io.Reader, idle time.Duration, stop func()) (int64, error) {
	var watchdog *time.Timer
	if idle > 0 {
		watchdog = time.AfterFunc(idle, stop)
		defer watchdog.Stop()
	}
	buf := make([]byte, 256<<10)
	var n int64
	for {
		k, rerr := src.Read(buf)
		if k > 0 {
			if _, err := dst.Write(buf[:k]); err != nil {
				return n, err
			}
			n += int64(k)
			if watchdog != nil {
				watchdog.Reset(idle)
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

type sizeCommand struct {
	command
	s *Server
}

// Execute answers SIZE; for an account that may write the dataset, a file that exists
// only as a partial upload reports the partial size, so stock clients resume it.
func (c sizeCommand) Execute(sess *ftpserver.Session, param string) {
	ctx := &ftpserver.Context{Sess: sess, Cmd: "SIZE", Param: param, Data: map[string]interface{}{}}
	t, err := c.s.check(ctx, sess.BuildPath(param), opRead)
	if err != nil {
		replyErr(sess, err)
		return
	}
	fi, err := c.s.root.Lstat(t.fsName())
	if err != nil && len(t.parts) >= 2 && t.acct.CanWrite(t.dataset) {
		fi, err = c.s.root.Lstat(partName(t.rel))
	}
	if err != nil || !fi.Mode().IsRegular() {
		sess.WriteMessage(550, fmt.Sprintf("/%s: no such file", t.rel))
		return
	}
	sess.WriteMessage(213, strconv.FormatInt(fi.Size(), 10))
}

// noActive refuses PORT, EPRT and LPRT: active mode makes the server connect to an
// address the client names, which is an FTP bounce (request forgery) risk, and NAT
// breaks it anyway. Passive mode (PASV, EPSV) is the only data mode.
type noActive struct{ command }

func (noActive) RequireAuth() bool { return false }

func (noActive) Execute(sess *ftpserver.Session, param string) {
	sess.WriteMessage(502, "Active mode is not supported; use PASV or EPSV")
}

// commands returns goftp's command table with the replacements, every entry tracked.
func (s *Server) commands() map[string]ftpserver.Command {
	cmds := map[string]ftpserver.Command{}
	for name, c := range ftpserver.DefaultCommands() {
		cmds[name] = c
	}
	cmds["STOR"] = storCommand{s: s}
	cmds["APPE"] = storCommand{s: s, appe: true}
	cmds["RETR"] = retrCommand{s: s}
	cmds["SIZE"] = sizeCommand{s: s}
	for _, name := range []string{"PORT", "EPRT", "LPRT"} {
		cmds[name] = noActive{}
	}
	for name, c := range cmds {
		cmds[name] = tracked{name: name, inner: c, s: s}
	}
	return cmds
}

// sessionTLS reports whether the session's control connection has been upgraded by AUTH
// TLS. goftp keeps that in an unexported field; reading it with reflect is the only way,
// and TestExplicitFTPS fails if a goftp upgrade changes it (sessionTLS then says false,
// so a TLS-required server refuses everything rather than allowing plain text).
func sessionTLS(sess *ftpserver.Session) bool {
	v := reflect.ValueOf(sess).Elem().FieldByName("tls")
	return v.IsValid() && v.Kind() == reflect.Bool && v.Bool()
}
