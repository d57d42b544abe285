package server_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jlaffaye/ftp"

	"github.com/texgrid/texgrid/dataset-ftp/internal/ftptest"
)

// TestExplicitFTPS uploads and downloads over AUTH TLS (control and data encrypted)
// with --tls-required, and checks a plain-text login is refused with 534.
func TestExplicitFTPS(t *testing.T) {
	t.Parallel()
	env := ftptest.Start(t, ftptest.WithTLS(t, true))
	tc := env.ClientTLS(t)

	plain := rawDial(t, env.Addr)
	for _, line := range []string{"USER " + ftptest.Reader, "PASS " + ftptest.Password} {
		if code, msg := plain.cmd(t, line); code != 534 {
			t.Errorf("plain %q with TLS required: %d %s, want 534", line, code, msg)
		}
	}
	if code, msg := plain.cmd(t, "LIST"); code != 530 {
		t.Errorf("plain LIST with TLS required: %d %s, want 530 (never logged in)", code, msg)
	}

	wrongCA, err := ftp.Dial(env.Addr, ftp.DialWithExplicitTLS(&tls.Config{ServerName: "127.0.0.1"}))
	if err == nil {
		if err := wrongCA.Login(ftptest.Reader, ftptest.Password); err == nil {
			t.Error("a client that does not trust the certificate logged in")
		}
		wrongCA.Quit()
	}

	up := dial(t, env, ftptest.Uploader, ftptest.Password, ftp.DialWithExplicitTLS(tc))
	mkdirs(t, up, "/tls", "/tls/c")
	body := smallPNG(t, 32, 32)
	if err := up.Stor("/tls/c/a.png", bytes.NewReader(body)); err != nil {
		t.Fatalf("STOR over TLS: %v", err)
	}
	m := env.WaitIndexed(t, "tls", ftptest.Images(1))
	rd := dial(t, env, ftptest.Reader, ftptest.Password, ftp.DialWithExplicitTLS(tc))
	if got := retr(t, rd, "/tls/c/a.png"); !bytes.Equal(got, body) {
		t.Errorf("RETR over TLS returned %d bytes, want %d", len(got), len(body))
	}
	if m.Images[0].SHA256 != sha256Bytes(body) {
		t.Errorf("indexed sha256 %s", m.Images[0].SHA256)
	}
}

// TestStockToolsOverFTPS uploads with curl --ssl-reqd and lftp ftp:ssl-force to a server
// that requires TLS, trusting its self-signed certificate.
func TestStockToolsOverFTPS(t *testing.T) {
	t.Parallel()
	env := ftptest.Start(t, ftptest.WithTLS(t, true))
	body := smallPNG(t, 24, 24)
	local := filepath.Join(t.TempDir(), "ftps", "c")
	if err := os.MkdirAll(local, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a.png", "b.png"} {
		if err := os.WriteFile(filepath.Join(local, n), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	host, port, _ := strings.Cut(env.Addr, ":")
	t.Run("curl", func(t *testing.T) {
		curl := ftptest.Tool(t, "curl")
		run(t, exec.Command(curl, "-sS", "--ssl-reqd", "--cacert", env.Config.CertFile, "--ftp-create-dirs",
			"--user", ftptest.Uploader+":"+ftptest.Password, "-T", filepath.Join(local, "a.png"),
			"ftp://"+env.Addr+"/ftps-curl/c/"))
		env.WaitIndexed(t, "ftps-curl", ftptest.Images(1))
	})
	t.Run("lftp", func(t *testing.T) {
		lftp := ftptest.Tool(t, "lftp")
		script := fmt.Sprintf("set ftp:ssl-force yes; set ftp:ssl-protect-data yes; set ssl:ca-file %s; set ssl:check-hostname no; "+
			"set net:max-retries 2; set cmd:fail-exit yes; mirror -R --no-perms %s /ftps-lftp; quit", env.Config.CertFile, filepath.Dir(local))
		run(t, exec.Command(lftp, "-u", ftptest.Uploader+","+ftptest.Password, "-p", port, "-e", script, host))
		env.WaitIndexed(t, "ftps-lftp", ftptest.Images(2))
	})
}
