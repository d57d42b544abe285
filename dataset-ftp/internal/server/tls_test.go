package server_test

import (
	"bytes"
	"crypto/tls"
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
