package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/texgrid/texgrid/trainer/data"
)

// Role says what an account may do.
type Role string

// The account roles.
const (
	// RoleUploader reads everything and writes the datasets it is granted.
	RoleUploader Role = "uploader"
	// RoleReader (volunteers, the project server, anonymous) only reads.
	RoleReader Role = "reader"
)

// AllDatasets in an account's Datasets grants it every dataset.
const AllDatasets = "*"

// AnonymousUser is the login name of anonymous read-only access ("ftp" is accepted too).
const AnonymousUser = "anonymous"

// Account is one login. PasswordHash is a bcrypt hash (see `dataset-ftp passwd`); a
// plain password is never stored.
type Account struct {
	Name         string   `json:"name"`
	Role         Role     `json:"role"`
	PasswordHash string   `json:"password_hash"`
	Datasets     []string `json:"datasets,omitempty"`    // uploaders: datasets it may write, or ["*"]
	QuotaBytes   int64    `json:"quota_bytes,omitempty"` // uploaders: bytes it may store in total; 0 = unlimited
}

// CanWrite reports whether the account may write into dataset.
func (a *Account) CanWrite(dataset string) bool {
	if a == nil || a.Role != RoleUploader || dataset == "" {
		return false
	}
	for _, d := range a.Datasets {
		if d == AllDatasets || d == dataset {
			return true
		}
	}
	return false
}

// Duration is a time.Duration that reads "2s" style strings from JSON.
type Duration time.Duration

// UnmarshalJSON accepts a Go duration string or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var secs float64
		if err2 := json.Unmarshal(b, &secs); err2 != nil {
			return fmt.Errorf("duration %s: want \"2s\" or seconds", b)
		}
		*d = Duration(secs * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// Config is the server's configuration: Defaults, then a JSON file (LoadConfig), then
// command-line flags, in that order.
type Config struct {
	Root           string    `json:"root"`             // folder holding <dataset>/<class>/<image>
	Listen         string    `json:"listen"`           // control connection address, e.g. "0.0.0.0:2121"
	PublicIP       string    `json:"public_ip"`        // IPv4 announced in PASV replies; empty = the control connection's local address
	PassivePorts   string    `json:"passive_ports"`    // "30000-30100"; empty = any free port
	CertFile       string    `json:"cert_file"`        // explicit FTPS (AUTH TLS) when both are set
	KeyFile        string    `json:"key_file"`         //
	TLSRequired    bool      `json:"tls_required"`     // refuse every command before AUTH TLS
	Anonymous      bool      `json:"anonymous"`        // allow anonymous read-only logins
	MaxUploadBytes int64     `json:"max_upload_bytes"` // per file; 0 = unlimited
	MaxImageBytes  int64     `json:"max_image_bytes"`  // larger files are quarantined at indexing; 0 = unlimited
	TestFraction   float64   `json:"test_fraction"`    // share of images in the test split
	IndexDelay     Duration  `json:"index_delay"`      // quiet time after the last write before a dataset is indexed
	IdleTimeout    Duration  `json:"idle_timeout"`     // control and data connections idle longer are closed
	PartialMaxAge  Duration  `json:"partial_max_age"`  // partial uploads older than this are removed at start; 0 = keep
	Accounts       []Account `json:"accounts"`
	// MetricsListen is where GET /metrics (Prometheus) is served over HTTP, e.g.
	// "127.0.0.1:9121"; empty = not served.
	MetricsListen string `json:"metrics_listen"`
}

// Defaults returns the configuration used where the file and flags say nothing.
func Defaults() Config {
	return Config{
		Listen:         "127.0.0.1:2121",
		MaxUploadBytes: 256 << 20,
		MaxImageBytes:  256 << 20,
		TestFraction:   data.DefaultTestFraction,
		IndexDelay:     Duration(2 * time.Second),
		IdleTimeout:    Duration(5 * time.Minute),
		PartialMaxAge:  Duration(7 * 24 * time.Hour),
	}
}

// LoadConfig reads a JSON config file over Defaults. Unknown fields are an error, so a
// misspelt option is not silently ignored.
func LoadConfig(path string) (Config, error) {
	cfg := Defaults()
	f, err := os.Open(path)
	if err != nil {
		return cfg, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Validate reports the first problem in the configuration.
func (c *Config) Validate() error {
	if c.Root == "" {
		return errors.New("config: root is empty")
	}
	if st, err := os.Stat(c.Root); err != nil || !st.IsDir() {
		return fmt.Errorf("config: root %q is not a directory", c.Root)
	}
	if c.PassivePorts != "" {
		if _, _, err := ParsePortRange(c.PassivePorts); err != nil {
			return err
		}
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("config: cert_file and key_file go together")
	}
	if c.TLSRequired && c.CertFile == "" {
		return errors.New("config: tls_required needs cert_file and key_file")
	}
	if c.TestFraction < 0 || c.TestFraction >= 1 {
		return fmt.Errorf("config: test_fraction %g is not in [0,1)", c.TestFraction)
	}
	if c.MaxUploadBytes < 0 || c.MaxImageBytes < 0 {
		return errors.New("config: negative size limit")
	}
	seen := map[string]bool{}
	for i, a := range c.Accounts {
		switch {
		case a.Name == "" || strings.ContainsAny(a.Name, " \t\r\n"):
			return fmt.Errorf("config: account %d: bad name %q", i, a.Name)
		case seen[a.Name]:
			return fmt.Errorf("config: account %q listed twice", a.Name)
		case a.Name == AnonymousUser || a.Name == "ftp":
			return fmt.Errorf("config: account name %q is reserved for anonymous access", a.Name)
		case a.Role != RoleUploader && a.Role != RoleReader:
			return fmt.Errorf("config: account %q: role %q is not %q or %q", a.Name, a.Role, RoleUploader, RoleReader)
		case !strings.HasPrefix(a.PasswordHash, "$2"):
			return fmt.Errorf("config: account %q: password_hash is not a bcrypt hash (make one with `dataset-ftp passwd`)", a.Name)
		case a.QuotaBytes < 0:
			return fmt.Errorf("config: account %q: negative quota", a.Name)
		}
		for _, d := range a.Datasets {
			if d != AllDatasets && (d == "" || strings.ContainsAny(d, "/\\") || strings.HasPrefix(d, ".")) {
				return fmt.Errorf("config: account %q: bad dataset %q", a.Name, d)
			}
		}
		seen[a.Name] = true
	}
	return nil
}

// ParsePortRange reads "min-max" with 1024 <= min < max <= 65535.
func ParsePortRange(s string) (lo, hi int, err error) {
	a, b, ok := strings.Cut(s, "-")
	if ok {
		lo, err = strconv.Atoi(strings.TrimSpace(a))
		if err == nil {
			hi, err = strconv.Atoi(strings.TrimSpace(b))
		}
	}
	if !ok || err != nil || lo < 1024 || hi <= lo || hi > 65535 {
		return 0, 0, fmt.Errorf("config: passive_ports %q is not \"min-max\" with 1024 <= min < max <= 65535", s)
	}
	return lo, hi, nil
}
