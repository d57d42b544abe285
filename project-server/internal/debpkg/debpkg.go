// Package debpkg builds texgrid's Debian packages with goreleaser's nfpm library:
// texgrid-volunteer (volunteer-client and volunteer-tray, a systemd user unit, an XDG
// autostart entry) and texgrid-server (project-server, dataset-ftp and trainer, system
// units running as the texgrid user, example configurations in /etc/texgrid as
// conffiles). It compiles the binaries itself, stripped, so the package sizes are the
// sizes a volunteer installs; the unit files, scripts and documents come from
// configs/packaging in the source tree.
package debpkg

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
)

// Package names.
const (
	Volunteer = "texgrid-volunteer"
	Server    = "texgrid-server"
)

// MaxVolunteerInstalled is the installed size the volunteer package must stay under.
const MaxVolunteerInstalled = 20 << 20

const maintainer = "texgrid maintainers <texgrid@example.org>"

// Options say what to build.
type Options struct {
	Root    string    // the module root: go.mod and configs/packaging
	Out     string    // where the .deb files go (created)
	Version string    // upstream version, "0.1.0"; the Debian revision is 1
	Arch    string    // Debian architecture, amd64 or arm64; default: this machine's
	Tags    string    // build tags of the cgo binaries, "openblas" links OpenBLAS
	Log     io.Writer // progress lines; nil: discard
}

// Built is one package written.
type Built struct {
	Name          string
	Path          string
	InstalledSize int64 // bytes of the files it installs
	Files         []string
}

// Build compiles the binaries and writes both packages into o.Out.
func Build(ctx context.Context, o Options) ([]Built, error) {
	if o.Root == "" || o.Out == "" || o.Version == "" {
		return nil, fmt.Errorf("debpkg: Root, Out and Version are required")
	}
	if o.Arch == "" {
		o.Arch = runtime.GOARCH
	}
	if o.Arch != "amd64" && o.Arch != "arm64" {
		return nil, fmt.Errorf("debpkg: architecture %q: want amd64 or arm64", o.Arch)
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, fmt.Errorf("debpkg: %w", err)
	}
	bin, err := os.MkdirTemp("", "texgrid-debpkg-")
	if err != nil {
		return nil, fmt.Errorf("debpkg: %w", err)
	}
	defer os.RemoveAll(bin)
	openblas := strings.Contains(","+o.Tags+",", ",openblas,")
	// The tray talks D-Bus in pure Go: no cgo, so it needs no C library at all.
	if err := goBuild(ctx, o, bin, false, "./volunteer-client/cmd/volunteer-tray"); err != nil {
		return nil, err
	}
	if err := goBuild(ctx, o, bin, true, "./volunteer-client/cmd/volunteer-client", "./project-server/cmd/project-server",
		"./dataset-ftp/cmd/dataset-ftp", "./trainer/cmd/trainer"); err != nil {
		return nil, err
	}
	help := o.Arch == runtime.GOARCH && runtime.GOOS == "linux"
	depends := []string{"libc6"}
	if openblas {
		depends = append(depends, "libopenblas0")
	}
	pkgDir := filepath.Join(o.Root, "configs", "packaging")

	vol := spec{
		name: Volunteer, summary: "volunteer client for texgrid, with its tray icon",
		description: `Lends this machine's CPU to a texgrid project, a volunteer grid that
trains texture-classification networks the way BOINC runs science.
volunteer-client attaches to a project server, trains work units under the
volunteer's preferences (CPU share, idle only, time window) and uploads the
results; a systemd user unit runs it at login. volunteer-tray is the tray
icon: state, progress, credit, pause, snooze and preferences, through the
client's local API only.`,
		depends: depends,
		section: "science",
		bins:    []string{"volunteer-client", "volunteer-tray"},
		files: []file{
			{src: "volunteer/texgrid-volunteer.service", dst: "/usr/lib/systemd/user/texgrid-volunteer.service", mode: 0o644},
			{src: "volunteer/texgrid-volunteer-tray.desktop", dst: "/etc/xdg/autostart/texgrid-volunteer-tray.desktop", mode: 0o644, conf: true},
			{src: "volunteer/README.Debian", dst: "/usr/share/doc/texgrid-volunteer/README.Debian", mode: 0o644},
		},
	}
	srv := spec{
		name: Server, summary: "project server, dataset store and trainer of texgrid",
		description: `The server side of texgrid, a volunteer grid that trains
texture-classification networks: project-server hands out work units,
aggregates the volunteers' weight deltas and evaluates each round (SQLite
or PostgreSQL); dataset-ftp stores the image datasets behind FTP or FTPS;
trainer trains, evaluates and exports models by hand. Both servers run as
systemd units under the texgrid system user, with their state in
/var/lib/texgrid.`,
		depends:  append(append([]string(nil), depends...), "adduser"),
		suggests: []string{"postgresql"},
		section:  "science",
		bins:     []string{"project-server", "dataset-ftp", "trainer"},
		files: []file{
			{src: "server/texgrid-project-server.service", dst: "/usr/lib/systemd/system/texgrid-project-server.service", mode: 0o644},
			{src: "server/texgrid-dataset-ftp.service", dst: "/usr/lib/systemd/system/texgrid-dataset-ftp.service", mode: 0o644},
			// postinst narrows both to root:texgrid 0640 with dpkg-statoverride.
			{src: "server/project-server.json", dst: "/etc/texgrid/project-server.json", mode: 0o644, conf: true},
			{src: "server/dataset-ftp.json", dst: "/etc/texgrid/dataset-ftp.json", mode: 0o644, conf: true},
			{src: "server/README.Debian", dst: "/usr/share/doc/texgrid-server/README.Debian", mode: 0o644},
		},
		postinst: "server/postinst", prerm: "server/prerm", postrm: "server/postrm",
	}
	var out []Built
	for _, s := range []spec{vol, srv} {
		b, err := s.build(ctx, o, bin, pkgDir, help)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(o.Log, "debpkg: %s (%.1f MB installed)\n", b.Path, float64(b.InstalledSize)/(1<<20))
		out = append(out, b)
	}
	return out, nil
}

// goBuild compiles pkgs into dir, stripped, for o.Arch; cgo binaries get o.Tags.
func goBuild(ctx context.Context, o Options, dir string, cgo bool, pkgs ...string) error {
	// Position-independent, as Debian's hardening wants; a pure-Go PIE still asks
	// the dynamic loader to relocate it, so it is not a static binary either.
	args := []string{"build", "-trimpath", "-buildmode=pie", "-ldflags=-s -w", "-o", dir + "/"}
	env := append(os.Environ(), "GOOS=linux", "GOARCH="+o.Arch)
	if cgo {
		if o.Tags != "" {
			args = append(args, "-tags", o.Tags)
		}
		env = append(env, "CGO_ENABLED=1")
		if o.Arch != runtime.GOARCH {
			env = append(env, "CC="+map[string]string{"arm64": "aarch64-linux-gnu-gcc", "amd64": "x86_64-linux-gnu-gcc"}[o.Arch])
		}
	} else {
		env = append(env, "CGO_ENABLED=0")
	}
	cmd := exec.CommandContext(ctx, "go", append(args, pkgs...)...)
	cmd.Dir, cmd.Env = o.Root, env
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("debpkg: go build %s: %w\n%s", strings.Join(pkgs, " "), err, b)
	}
	return nil
}

// spec is one package's contents.
type spec struct {
	name, summary, description string
	depends, suggests          []string
	section                    string
	bins                       []string // from the build directory into /usr/bin
	files                      []file   // from configs/packaging
	postinst, prerm, postrm    string   // maintainer scripts in configs/packaging
}

type file struct {
	src, dst string
	mode     os.FileMode
	conf     bool // a conffile
}

func (s spec) build(ctx context.Context, o Options, bin, pkgDir string, help bool) (Built, error) {
	stage, err := os.MkdirTemp("", "texgrid-stage-")
	if err != nil {
		return Built{}, fmt.Errorf("debpkg: %w", err)
	}
	defer os.RemoveAll(stage)
	mtime := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	var contents files.Contents
	add := func(src, dst string, mode os.FileMode, typ string) error {
		if _, err := os.Stat(src); err != nil {
			return fmt.Errorf("debpkg: %s: %w", s.name, err)
		}
		contents = append(contents, &files.Content{Source: src, Destination: dst, Type: typ,
			FileInfo: &files.ContentFileInfo{Owner: "root", Group: "root", Mode: mode, MTime: mtime}})
		return nil
	}
	doc := "/usr/share/doc/" + s.name
	for _, b := range s.bins {
		if err := add(filepath.Join(bin, b), "/usr/bin/"+b, 0o755, ""); err != nil {
			return Built{}, err
		}
		if !help {
			continue
		}
		// The programs' own --help is their manual: kept in /usr/share/doc.
		txt, err := helpText(ctx, filepath.Join(bin, b))
		if err != nil {
			return Built{}, fmt.Errorf("debpkg: %s --help: %w", b, err)
		}
		p := filepath.Join(stage, b+".txt")
		if err := os.WriteFile(p, txt, 0o644); err != nil {
			return Built{}, fmt.Errorf("debpkg: %w", err)
		}
		if err := add(p, doc+"/"+b+".txt", 0o644, files.TypeFile); err != nil {
			return Built{}, err
		}
	}
	for _, f := range s.files {
		typ := files.TypeFile
		if f.conf {
			typ = files.TypeConfig
		}
		if err := add(filepath.Join(pkgDir, f.src), f.dst, f.mode, typ); err != nil {
			return Built{}, err
		}
	}
	if err := add(filepath.Join(pkgDir, "copyright"), doc+"/copyright", 0o644, files.TypeFile); err != nil {
		return Built{}, err
	}
	if err := compressDocs(contents, stage); err != nil {
		return Built{}, err
	}
	var size int64
	var names []string
	for _, c := range contents {
		fi, err := os.Stat(c.Source)
		if err != nil {
			return Built{}, fmt.Errorf("debpkg: %w", err)
		}
		size += fi.Size()
		names = append(names, c.Destination)
	}
	script := func(name string) string {
		if name == "" {
			return ""
		}
		return filepath.Join(pkgDir, name)
	}
	info := &nfpm.Info{
		Name: s.name, Arch: o.Arch, Platform: "linux", Version: o.Version, Release: "1",
		Section: s.section, Priority: "optional", Maintainer: maintainer,
		Description: s.summary + "\n" + s.description,
		Homepage:    "https://github.com/texgrid/texgrid", License: "Apache-2.0",
		Changelog: filepath.Join(pkgDir, "changelog.yaml"), MTime: mtime,
		Overridables: nfpm.Overridables{
			Depends: s.depends, Suggests: s.suggests, Contents: contents,
			Scripts: nfpm.Scripts{PostInstall: script(s.postinst), PreRemove: script(s.prerm), PostRemove: script(s.postrm)},
			Deb:     nfpm.Deb{Compression: "xz"},
		},
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.Validate(info); err != nil {
		return Built{}, fmt.Errorf("debpkg: %s: %w", s.name, err)
	}
	pk, err := nfpm.Get("deb")
	if err != nil {
		return Built{}, fmt.Errorf("debpkg: %w", err)
	}
	path := filepath.Join(o.Out, pk.ConventionalFileName(info))
	f, err := os.Create(path)
	if err != nil {
		return Built{}, fmt.Errorf("debpkg: %w", err)
	}
	if err := pk.Package(info, f); err != nil {
		f.Close()
		os.Remove(path)
		return Built{}, fmt.Errorf("debpkg: %s: %w", s.name, err)
	}
	if err := f.Close(); err != nil {
		return Built{}, fmt.Errorf("debpkg: %s: %w", path, err)
	}
	return Built{Name: s.name, Path: path, InstalledSize: size, Files: names}, nil
}

// helpText runs a program's --help; the programs print usage to stderr and may exit 2.
func helpText(ctx context.Context, bin string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--help")
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	cmd.Env = append(os.Environ(), "HOME=/nonexistent", "TEXGRID_STATE_DIR=", "XDG_STATE_HOME=")
	err := cmd.Run()
	if b.Len() < 40 {
		return nil, fmt.Errorf("no usage text (%v): %q", err, b.String())
	}
	return b.Bytes(), nil
}

// compressDocs gzips the files under /usr/share/doc larger than 4 KB, as Debian
// policy asks; copyright stays plain.
func compressDocs(cs files.Contents, stage string) error {
	for _, c := range cs {
		if !strings.HasPrefix(c.Destination, "/usr/share/doc/") || strings.HasSuffix(c.Destination, "/copyright") {
			continue
		}
		b, err := os.ReadFile(c.Source)
		if err != nil {
			return fmt.Errorf("debpkg: %w", err)
		}
		if len(b) <= 4096 {
			continue
		}
		var z bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&z, gzip.BestCompression) // the level is valid
		zw.Write(b)
		if err := zw.Close(); err != nil {
			return fmt.Errorf("debpkg: gzip %s: %w", c.Source, err)
		}
		p := filepath.Join(stage, filepath.Base(c.Destination)+".gz")
		if err := os.WriteFile(p, z.Bytes(), 0o644); err != nil {
			return fmt.Errorf("debpkg: %w", err)
		}
		c.Source, c.Destination = p, c.Destination+".gz"
	}
	return nil
}
