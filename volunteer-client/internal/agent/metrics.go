package agent

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the client's Prometheus counters, served only on the local API (see
// Agent.MetricsHandler): work units by how they ended, samples trained and the time
// spent training them (their ratio is samples per second), upload bytes and errors.
type metrics struct {
	reg      *prometheus.Registry
	units    *prometheus.CounterVec
	samples  prometheus.Counter
	training prometheus.Counter
	upload   prometheus.Counter
	errors   *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		units: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "texgrid_client_work_units_total",
			Help: "Work units ended, by outcome: accepted, late, dropped (a final refusal of the upload)."}, []string{"outcome"}),
		samples: prometheus.NewCounter(prometheus.CounterOpts{Name: "texgrid_client_samples_trained_total",
			Help: "Training samples in the results the server answered."}),
		training: prometheus.NewCounter(prometheus.CounterOpts{Name: "texgrid_client_training_seconds_total",
			Help: "Wall time spent training batches (not counting the CPU limit's sleeps)."}),
		upload: prometheus.NewCounter(prometheus.CounterOpts{Name: "texgrid_client_upload_bytes_total",
			Help: "Delta bytes sent to the project server, every attempt counted."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "texgrid_client_errors_total",
			Help: "Errors by kind: retried (a call to the server to be tried again) or failed (given up)."}, []string{"kind"}),
	}
	for _, o := range []string{"accepted", "late", "dropped"} {
		m.units.WithLabelValues(o)
	}
	for _, k := range []string{"retried", "failed"} {
		m.errors.WithLabelValues(k)
	}
	m.reg.MustRegister(m.units, m.samples, m.training, m.upload, m.errors)
	return m
}

// MetricsHandler serves the client's metrics in the Prometheus text format. The local
// API serves it behind its token at GET /metrics.
func (a *Agent) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(a.metrics.reg, promhttp.HandlerOpts{})
}
