package grid

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// binDir holds the binaries TestMain built for this test run.
var binDir string

// repoRoot is the module root, found from this file's folder.
var repoRoot string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	repoRoot = filepath.Join(wd, "..", "..", "..")
	dir, err := os.MkdirTemp("", "texgrid-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binDir = filepath.Join(dir, "bin")
	args := []string{"build", "-o", binDir + "/"}
	if tags := buildTags(); tags != "" {
		args = append(args, "-tags", tags)
	}
	args = append(args, "./trainer/cmd/...", "./dataset-ftp/cmd/...", "./project-server/cmd/...", "./volunteer-client/cmd/...")
	cmd := exec.Command("go", args...)
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the binaries: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// buildTags builds the binaries with OpenBLAS when the library is installed, as the
// Makefile does.
func buildTags() string {
	for _, p := range []string{"/usr/lib/x86_64-linux-gnu/libopenblas.so", "/usr/lib/aarch64-linux-gnu/libopenblas.so"} {
		if _, err := os.Stat(p); err == nil && runtime.GOOS == "linux" {
			return "openblas"
		}
	}
	return ""
}

// requireTool skips (or fails under TEXGRID_REQUIRE_TOOLS=1) when a command is missing.
func requireTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("TEXGRID_REQUIRE_TOOLS") == "1" {
			t.Fatalf("%s is not installed (make deps)", name)
		}
		t.Skipf("%s is not installed", name)
	}
}

// eachLogLine calls f with every line of the logs of the given processes (JSON lines
// for volunteers started by AddVolunteer).
func eachLogLine(t *testing.T, procs []*Proc, f func(line []byte)) {
	t.Helper()
	for _, p := range procs {
		fh, err := os.Open(p.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			f(sc.Bytes())
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			t.Fatalf("reading %s: %v", p.LogPath, err)
		}
	}
}

// testLog adapts t.Logf to an io.Writer for the grid's progress lines.
type testLog struct{ t *testing.T }

func (l testLog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
