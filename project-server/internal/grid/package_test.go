package grid

import (
	"bufio"
	"context"
	"debug/elf"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/texgrid/texgrid/project-server/internal/debpkg"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/poll"
	"github.com/texgrid/texgrid/trainer/synth"
)

// TestDebianPackages builds both packages, checks their size and lintian, installs
// them for real with dpkg, runs the installed volunteer-client against a grid started
// here until it completes a work unit, runs the server units' commands as systemd
// would (or with systemd when it runs), then removes and purges both and checks that
// only what Debian policy keeps is left. It needs root; the machine is left as found.
func TestDebianPackages(t *testing.T) {
	for _, tool := range []string{"dpkg", "dpkg-deb", "dpkg-query", "dpkg-statoverride", "lintian", "setpriv"} {
		requireTool(t, tool)
	}
	if os.Geteuid() != 0 {
		if os.Getenv("TEXGRID_REQUIRE_TOOLS") == "1" {
			t.Fatal("installing packages needs root (TEXGRID_REQUIRE_TOOLS=1)")
		}
		t.Skip("installing packages needs root")
	}
	// Refuse to run where the test would destroy something it did not create.
	for _, p := range []string{debpkg.Volunteer, debpkg.Server} {
		if out, _ := exec.Command("dpkg-query", "-W", "-f=${db:Status-Abbrev}", p).Output(); strings.TrimSpace(string(out)) != "" && !strings.HasPrefix(string(out), "un") {
			t.Fatalf("%s is already on this machine (%q): the test would remove it", p, out)
		}
	}
	for _, p := range []string{"/etc/texgrid", "/var/lib/texgrid"} {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("%s exists: the test's purge would delete it", p)
		}
	}
	_, userErr := user.Lookup("texgrid")
	hadUser := userErr == nil
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	out := t.TempDir()
	built, err := debpkg.Build(ctx, debpkg.Options{Root: repoRoot, Out: out, Version: "0.1.0", Tags: buildTags(), Log: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	debs := map[string]debpkg.Built{}
	for _, b := range built {
		debs[b.Name] = b
	}
	vol, srv := debs[debpkg.Volunteer], debs[debpkg.Server]

	// Sizes: the volunteer package stays under 20 MB installed and holds no ONNX Runtime.
	for _, b := range built {
		kb, err := exec.Command("dpkg-deb", "-f", b.Path, "Installed-Size").Output()
		if err != nil {
			t.Fatalf("dpkg-deb -f %s: %v", b.Path, err)
		}
		fi, _ := os.Stat(b.Path)
		t.Logf("%s: %d KB installed (control), %.1f MB of files, %.1f MB .deb", b.Name, atoi(t, kb), float64(b.InstalledSize)/(1<<20), float64(fi.Size())/(1<<20))
	}
	if vol.InstalledSize >= debpkg.MaxVolunteerInstalled {
		t.Errorf("%s installs %d bytes, want under %d", vol.Name, vol.InstalledSize, debpkg.MaxVolunteerInstalled)
	}
	for _, b := range built {
		list, _ := exec.Command("dpkg-deb", "-c", b.Path).Output()
		if strings.Contains(strings.ToLower(string(list)), "onnxruntime") {
			t.Errorf("%s contains ONNX Runtime:\n%s", b.Name, list)
		}
	}
	// Dependencies: OpenBLAS where linked, adduser for the postinst.
	for _, c := range []struct {
		b    debpkg.Built
		want []string
	}{{vol, []string{"libc6"}}, {srv, []string{"libc6", "adduser"}}} {
		dep, _ := exec.Command("dpkg-deb", "-f", c.b.Path, "Depends").Output()
		if buildTags() == "openblas" {
			c.want = append(c.want, "libopenblas0")
		}
		for _, w := range c.want {
			if !strings.Contains(string(dep), w) {
				t.Errorf("%s Depends: %q, want %s", c.b.Name, strings.TrimSpace(string(dep)), w)
			}
		}
	}
	conffiles, _ := exec.Command("dpkg-deb", "-I", srv.Path, "conffiles").Output()
	for _, f := range []string{"/etc/texgrid/project-server.json", "/etc/texgrid/dataset-ftp.json"} {
		if !strings.Contains(string(conffiles), f) {
			t.Errorf("%s is not a conffile of %s (conffiles: %q)", f, srv.Name, conffiles)
		}
	}

	// lintian: no errors.
	lint, _ := exec.CommandContext(ctx, "lintian", "--tag-display-limit", "0", vol.Path, srv.Path).CombinedOutput()
	for _, line := range strings.Split(string(lint), "\n") {
		if strings.HasPrefix(line, "E: ") {
			t.Errorf("lintian: %s", line)
		}
	}
	t.Logf("lintian:\n%s", lint)

	// From here on the machine changes; put it back whatever happens.
	t.Cleanup(func() {
		for _, p := range []string{debpkg.Volunteer, debpkg.Server} {
			exec.Command("dpkg", "-P", p).Run()
		}
		if !hadUser {
			exec.Command("deluser", "--system", "--quiet", "texgrid").Run()
			exec.Command("delgroup", "--system", "--quiet", "texgrid").Run()
		}
	})
	dpkg(t, "-i", vol.Path, srv.Path)
	for _, f := range append(vol.Files, srv.Files...) {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("after dpkg -i: %v", err)
		}
	}
	// The tray is pure Go: it needs no shared library, not even libc.
	if f, err := elf.Open("/usr/bin/volunteer-tray"); err != nil {
		t.Error(err)
	} else {
		if libs, _ := f.ImportedLibraries(); len(libs) != 0 {
			t.Errorf("volunteer-tray links %v, want no C library (built without cgo)", libs)
		}
		f.Close()
	}
	tg, err := user.Lookup("texgrid")
	if err != nil {
		t.Fatalf("postinst created no texgrid user: %v", err)
	}
	uid, _ := strconv.Atoi(tg.Uid)
	if uid >= 1000 {
		t.Errorf("texgrid is uid %d, want a system user", uid)
	}
	for _, c := range []struct {
		path  string
		mode  os.FileMode
		owner string
		group string
	}{
		{"/var/lib/texgrid", 0o750, "texgrid", "texgrid"},
		{"/var/lib/texgrid/project", 0o750, "texgrid", "texgrid"},
		{"/etc/texgrid/project-server.json", 0o640, "root", "texgrid"},
		{"/etc/texgrid/dataset-ftp.json", 0o640, "root", "texgrid"},
	} {
		fi, err := os.Stat(c.path)
		if err != nil {
			t.Errorf("after dpkg -i: %v", err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		u, _ := user.LookupId(strconv.Itoa(int(st.Uid)))
		g, _ := user.LookupGroupId(strconv.Itoa(int(st.Gid)))
		if fi.Mode().Perm() != c.mode || u == nil || u.Username != c.owner || g == nil || g.Name != c.group {
			t.Errorf("%s is %v %v:%v, want %v %s:%s", c.path, fi.Mode().Perm(), u, g, c.mode, c.owner, c.group)
		}
	}

	t.Run("installed volunteer-client completes a work unit", func(t *testing.T) { installedVolunteer(t, ctx) })
	t.Run("server units run as their unit files say", func(t *testing.T) { serverUnits(t, ctx, tg) })

	// Remove: programs go, configuration and state stay.
	dpkg(t, "-r", debpkg.Volunteer, debpkg.Server)
	for _, f := range []string{"/usr/bin/volunteer-client", "/usr/bin/volunteer-tray", "/usr/bin/project-server", "/usr/lib/systemd/user/texgrid-volunteer.service"} {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s still there after dpkg -r", f)
		}
	}
	for _, f := range []string{"/etc/texgrid/project-server.json", "/etc/xdg/autostart/texgrid-volunteer-tray.desktop", "/var/lib/texgrid/project"} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("dpkg -r removed configuration or state: %v", err)
		}
	}
	// Purge: nothing left but the system user, which Debian keeps.
	dpkg(t, "-P", debpkg.Volunteer, debpkg.Server)
	for _, f := range append(append([]string{"/etc/texgrid", "/var/lib/texgrid", "/usr/share/doc/texgrid-server", "/usr/share/doc/texgrid-volunteer"}, vol.Files...), srv.Files...) {
		if _, err := os.Stat(f); err == nil {
			t.Errorf("%s still there after dpkg -P", f)
		}
	}
	if so, _ := exec.Command("dpkg-statoverride", "--list").Output(); strings.Contains(string(so), "/etc/texgrid") {
		t.Errorf("statoverrides left after purge:\n%s", so)
	}
	for _, p := range []string{debpkg.Volunteer, debpkg.Server} {
		if st, _ := exec.Command("dpkg-query", "-W", "-f=${db:Status-Abbrev}", p).Output(); len(st) > 0 && !strings.HasPrefix(string(st), "un") && !strings.HasPrefix(string(st), "pn") {
			t.Errorf("%s after purge: dpkg status %q", p, st)
		}
	}
	if _, err := user.Lookup("texgrid"); err != nil {
		t.Errorf("purge removed the texgrid system user (Debian keeps system users): %v", err)
	}
}

func dpkg(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("dpkg", args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func atoi(t *testing.T, b []byte) int {
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("not a number: %q", b)
	}
	return n
}

// installedVolunteer runs /usr/bin/volunteer-client from the package against a grid
// of freshly built servers until it has a result accepted.
func installedVolunteer(t *testing.T, ctx context.Context) {
	work := t.TempDir()
	bins := filepath.Join(work, "bin")
	if err := os.MkdirAll(bins, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"project-server", "dataset-ftp", "trainer"} {
		if err := os.Symlink(filepath.Join(binDir, b), filepath.Join(bins, b)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/usr/bin/volunteer-client", filepath.Join(bins, "volunteer-client")); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(work, "synthetic")
	if err := synth.Generate(data, 4, 12, 96, 7); err != nil {
		t.Fatal(err)
	}
	g, err := Start(ctx, Options{BinDir: bins, WorkDir: filepath.Join(work, "grid"), Upload: UploadDatasetFTP, Log: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := g.Close(); err != nil {
			t.Logf("close: %v", err)
		}
		if t.Failed() {
			for _, p := range append([]*Proc{g.Server}, g.Volunteers...) {
				t.Logf("--- tail of %s:\n%s", p.Name, p.Tail(3000))
			}
		}
	}()
	if _, err := g.UploadDataset(ctx, data, "synthetic"); err != nil {
		t.Fatal(err)
	}
	spec := faultCampaign(1, 32, 32, 5*time.Minute)
	spec.WorkUnitsPerRound = 1 // quorum 0.75 of one work unit: that one
	c, err := g.CreateCampaign(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	v, err := g.AddVolunteer(ctx, VolunteerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v.Path != filepath.Join(bins, "volunteer-client") {
		t.Fatalf("volunteer runs %s", v.Path)
	}
	if _, err := g.WaitCampaign(ctx, c.ID, 5*time.Minute, nil); err != nil {
		t.Fatal(err)
	}
	accepted := 0
	eachLogLine(t, g.Volunteers, func(line []byte) {
		var e struct {
			Msg     string `json:"msg"`
			Outcome string `json:"outcome"`
		}
		if json.Unmarshal(line, &e) == nil && e.Msg == "result accepted" && e.Outcome == protocol.OutcomeAccepted {
			accepted++
		}
	})
	if accepted < 1 {
		t.Errorf("the installed volunteer-client had %d results accepted, want at least 1", accepted)
	}
}

// unit is what the test reads from a systemd unit file to run it as systemd would.
type unit struct {
	user, group, dir string
	exec             []string
	env              []string
}

func readUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var u unit
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		switch k {
		case "User":
			u.user = v
		case "Group":
			u.group = v
		case "WorkingDirectory":
			u.dir = v
		case "ExecStart":
			u.exec = strings.Fields(v)
		case "Environment":
			u.env = append(u.env, v)
		case "EnvironmentFile":
			b, err := os.ReadFile(strings.TrimPrefix(v, "-"))
			if err != nil && !strings.HasPrefix(v, "-") {
				t.Fatalf("%s: EnvironmentFile %s: %v", path, v, err)
			}
			for _, l := range strings.Split(string(b), "\n") {
				if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
					u.env = append(u.env, l)
				}
			}
		}
	}
	if u.user == "" || u.dir == "" || len(u.exec) == 0 {
		t.Fatalf("%s: want User, WorkingDirectory and ExecStart, got %+v", path, u)
	}
	return u
}

// serverUnits writes working configurations into /etc/texgrid, as an administrator
// does after installing, then starts both server units: with systemd when it runs,
// else by running ExecStart as the unit's user in its working directory.
func serverUnits(t *testing.T, ctx context.Context, tg *user.User) {
	ftpPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	httpPort, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret-for-the-test"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	ftpAddr := fmt.Sprintf("127.0.0.1:%d", ftpPort)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", httpPort)
	writeConf := func(path string, v any) {
		b, _ := json.MarshalIndent(v, "", "  ")
		// Keep the mode and group dpkg-statoverride gave the file.
		if err := os.WriteFile(path, b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	writeConf("/etc/texgrid/dataset-ftp.json", map[string]any{
		"root": "/var/lib/texgrid/datasets", "listen": ftpAddr, "passive_ports": "30100-30199",
		"accounts": []map[string]any{{"name": "project-server", "role": "reader", "password_hash": string(hash)}},
	})
	writeConf("/etc/texgrid/project-server.json", map[string]any{
		"addr": httpAddr, "data_dir": "/var/lib/texgrid/project", "db": "/var/lib/texgrid/project/texgrid.db",
		"ftp_addr": ftpAddr, "ftp_user": "project-server", "ftp_password": "s3cret-for-the-test",
	})

	state, _ := exec.Command("systemctl", "is-system-running").Output()
	withSystemd := strings.TrimSpace(string(state)) == "running" || strings.TrimSpace(string(state)) == "degraded"
	t.Logf("systemctl is-system-running: %q; %s", strings.TrimSpace(string(state)), map[bool]string{true: "starting the units with systemd", false: "running ExecStart as the unit would"}[withSystemd])
	units := []string{"texgrid-dataset-ftp.service", "texgrid-project-server.service"}
	var procs []*exec.Cmd
	if withSystemd {
		exec.Command("systemctl", "daemon-reload").Run()
		for _, u := range units {
			if out, err := exec.Command("systemctl", "start", u).CombinedOutput(); err != nil {
				t.Fatalf("systemctl start %s: %v\n%s", u, err, out)
			}
			defer exec.Command("systemctl", "stop", u).Run()
		}
	} else {
		for _, name := range units {
			u := readUnit(t, "/usr/lib/systemd/system/"+name)
			group := u.group
			if group == "" {
				group = u.user
			}
			args := append([]string{"--reuid=" + u.user, "--regid=" + group, "--init-groups", "--no-new-privs", "--"}, u.exec...)
			cmd := exec.Command("setpriv", args...)
			cmd.Dir = u.dir
			cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + tg.HomeDir, "LANG=C.UTF-8"}, u.env...)
			logf, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stdout, cmd.Stderr = logf, logf
			if err := cmd.Start(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			procs = append(procs, cmd)
			defer func() {
				cmd.Process.Signal(syscall.SIGTERM)
				done := make(chan struct{})
				go func() { cmd.Wait(); close(done) }()
				select {
				case <-done:
				case <-time.After(20 * time.Second):
					cmd.Process.Kill()
					<-done
				}
				if t.Failed() {
					b, _ := os.ReadFile(logf.Name())
					t.Logf("--- %s:\n%s", name, b)
				}
			}()
		}
	}
	// Both answer: the FTP port accepts, the project server reports its status.
	poll.For(t, 60*time.Second, "the dataset-ftp unit to listen on "+ftpAddr, func() error {
		c, err := net.DialTimeout("tcp", ftpAddr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	var st protocol.Status
	poll.For(t, 60*time.Second, "the project-server unit to answer on "+httpAddr, func() error {
		resp, err := http.Get("http://" + httpAddr + protocol.APIPrefix + "/status")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		return json.NewDecoder(resp.Body).Decode(&st)
	})
	if st.ProtocolVersion != protocol.Version {
		t.Errorf("installed project-server speaks protocol %d, want %d", st.ProtocolVersion, protocol.Version)
	}
	// They run as the texgrid user and keep their state in /var/lib/texgrid.
	for _, cmd := range procs {
		// setpriv execs the server in place: same pid.
		pid := cmd.Process.Pid
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) > 1 && f[0] == "Uid:" && f[1] != tg.Uid {
				t.Errorf("%s runs as uid %s, want texgrid (%s)", cmd.Args, f[1], tg.Uid)
			}
		}
	}
	fi, err := os.Stat("/var/lib/texgrid/project/texgrid.db")
	if err != nil {
		t.Fatalf("project-server kept no database under /var/lib/texgrid: %v", err)
	}
	if st := fi.Sys().(*syscall.Stat_t); strconv.Itoa(int(st.Uid)) != tg.Uid {
		t.Errorf("database owned by uid %d, want texgrid", st.Uid)
	}
}
