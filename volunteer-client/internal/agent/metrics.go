package agent

import (
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
)

// metrics are the client's Prometheus counters, served only on the local API (see
// Agent.MetricsHandler): work units by how they ended, samples trained and the time
// spent training them (their ratio is samples per second), upload bytes and errors.
//
// They are written in the Prometheus text format by hand rather than with the client
// library: five counters do not need it, and the library (with the protobuf runtime it
// pulls in) would add over a megabyte to a binary the volunteer package must keep
// small.
type metrics struct {
	units    *counterVec
	samples  *counter
	training *counter
	upload   *counter
	errors   *counterVec
	all      []exposer
}

func newMetrics() *metrics {
	m := &metrics{
		units: newCounterVec("texgrid_client_work_units_total",
			"Work units ended, by outcome: accepted, late, dropped (a final refusal of the upload).", "outcome", "accepted", "late", "dropped"),
		samples:  &counter{name: "texgrid_client_samples_trained_total", help: "Training samples in the results the server answered."},
		training: &counter{name: "texgrid_client_training_seconds_total", help: "Wall time spent training batches (not counting the CPU limit's sleeps)."},
		upload:   &counter{name: "texgrid_client_upload_bytes_total", help: "Delta bytes sent to the project server, every attempt counted."},
		errors: newCounterVec("texgrid_client_errors_total",
			"Errors by kind: retried (a call to the server to be tried again) or failed (given up).", "kind", "retried", "failed"),
	}
	m.all = []exposer{m.units, m.samples, m.training, m.upload, m.errors}
	return m
}

// MetricsHandler serves the client's metrics in the Prometheus text format (version
// 0.0.4). The local API serves it behind its token at GET /metrics.
func (a *Agent) MetricsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		var b strings.Builder
		for _, e := range a.metrics.all {
			e.expose(&b)
		}
		_, _ = w.Write([]byte(b.String()))
	})
}

// exposer writes one metric family in the text format.
type exposer interface{ expose(b *strings.Builder) }

// counter is a float counter that only goes up.
type counter struct {
	name, help string
	mu         sync.Mutex
	v          float64
}

// Inc adds one.
func (c *counter) Inc() { c.Add(1) }

// Add adds v; negative and non-finite values are ignored, since a counter only goes up.
func (c *counter) Add(v float64) {
	if !(v >= 0) || math.IsInf(v, 0) {
		return
	}
	c.mu.Lock()
	c.v += v
	c.mu.Unlock()
}

func (c *counter) value() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.v
}

func (c *counter) expose(b *strings.Builder) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s counter\n%s %s\n", c.name, c.help, c.name, c.name, formatValue(c.value()))
}

// counterVec is a counter family with one label; its label values are fixed when it is
// made, so the exposition always lists them (at zero before anything happened) and an
// unexpected value cannot grow it without bound.
type counterVec struct {
	name, help, label string
	values            []string
	byValue           map[string]*counter
}

func newCounterVec(name, help, label string, values ...string) *counterVec {
	v := &counterVec{name: name, help: help, label: label, values: values, byValue: map[string]*counter{}}
	for _, lv := range values {
		v.byValue[lv] = &counter{}
	}
	return v
}

// WithLabelValues returns the counter of a label value; an unknown value gets a counter
// that is not exposed, so a caller never has to check.
func (v *counterVec) WithLabelValues(lv string) *counter {
	if c, ok := v.byValue[lv]; ok {
		return c
	}
	return &counter{}
}

func (v *counterVec) expose(b *strings.Builder) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s counter\n", v.name, v.help, v.name)
	for _, lv := range v.values {
		fmt.Fprintf(b, "%s{%s=%q} %s\n", v.name, v.label, lv, formatValue(v.byValue[lv].value()))
	}
}

// formatValue writes a sample value as the text format expects.
func formatValue(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e15 {
		return fmt.Sprintf("%.0f", f)
	}
	return fmt.Sprintf("%g", f)
}
