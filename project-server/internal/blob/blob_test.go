package blob

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A temporary left by a crash is removed when the store opens.
	os.MkdirAll(filepath.Join(dir, "tmp"), 0o755)
	os.WriteFile(filepath.Join(dir, "tmp", "blob-123"), []byte("partial"), 0o644)
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Fatalf("%d temporaries survived Open", len(ents))
	}
	data := []byte("weights")
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])
	sha, err := s.Put(data)
	if err != nil || sha != want {
		t.Fatalf("Put: %s, %v; want %s", sha, err, want)
	}
	if again, err := s.Put(data); err != nil || again != sha {
		t.Fatalf("second Put of the same bytes: %s, %v", again, err)
	}
	f, err := s.Open(sha)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 100)
	n, _ := f.Read(b)
	f.Close()
	if string(b[:n]) != "weights" {
		t.Fatalf("read back %q", b[:n])
	}
	// An aborted writer leaves nothing behind.
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("half"))
	w.Abort()
	names, err := s.List()
	if err != nil || len(names) != 1 || names[0] != sha {
		t.Fatalf("List after abort: %v, %v", names, err)
	}
	if err := s.Remove(sha); err != nil || s.Has(sha) {
		t.Fatalf("Remove: %v, still there: %v", err, s.Has(sha))
	}
	if err := s.Remove(sha); err != nil {
		t.Fatalf("removing a missing blob: %v", err)
	}
}

func TestValidName(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		in   string
		ok   bool
	}{
		{"sha256", strings.Repeat("0a", 32), true},
		{"upper case", strings.Repeat("0A", 32), false},
		{"short", "abc", false},
		{"path", "../" + strings.Repeat("a", 61), false},
		{"empty", "", false},
	}
	for _, tc := range cases {
		if got := ValidName(tc.in); got != tc.ok {
			t.Errorf("%s: ValidName(%q) = %v", tc.name, tc.in, got)
		}
		if _, err := (&Store{dir: t.TempDir()}).Path(tc.in); (err == nil) != tc.ok {
			t.Errorf("%s: Path error %v", tc.name, err)
		}
	}
}
