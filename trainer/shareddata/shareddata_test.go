package shareddata

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestRootIsBesideTheModule(t *testing.T) {
	t.Parallel()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	root, err := Root()
	if err != nil {
		t.Fatal(err)
	}
	// This package is trainer/shareddata: the module root is two levels up.
	if want := filepath.Join(wd, "..", "..", "..", "shared", "data"); root != want {
		t.Errorf("Root() = %s, want %s", root, want)
	}
}

// recorder is a testing.TB that records how a helper ended instead of ending the test.
type recorder struct {
	testing.TB
	ended string // "skip", "fatal" or "" (returned)
	msg   string
}

func (r *recorder) Helper() {}

func (r *recorder) Skipf(format string, args ...any) {
	r.ended, r.msg = "skip", fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.ended, r.msg = "fatal", fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }

func TestFind(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "kylberg6", "canvas1"), 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		elem     []string
		required bool
		ended    string
	}{
		{"present", []string{"kylberg6"}, false, ""},
		{"present class, required", []string{"kylberg6", "canvas1"}, true, ""},
		{"missing skips", []string{"kth-tips-grey"}, false, "skip"},
		{"missing fails when required", []string{"kth-tips-grey"}, true, "fatal"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := &recorder{TB: t}
			var got string
			done := make(chan struct{})
			go func() {
				defer close(done)
				got = find(r, root, c.required, c.elem...)
			}()
			<-done
			if r.ended != c.ended {
				t.Fatalf("ended %q (%s), want %q", r.ended, r.msg, c.ended)
			}
			want := filepath.Join(append([]string{root}, c.elem...)...)
			switch {
			case c.ended == "" && got != want:
				t.Errorf("path %s, want %s", got, want)
			case c.ended != "" && !strings.Contains(r.msg, want):
				t.Errorf("message %q does not name %s", r.msg, want)
			}
		})
	}
}
