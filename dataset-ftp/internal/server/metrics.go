package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the FTP store's Prometheus metrics: bytes each way, control sessions,
// logins by result, and per dataset the images indexed and files quarantined at the
// last indexing.
type metrics struct {
	reg         *prometheus.Registry
	sent        prometheus.Counter
	received    prometheus.Counter
	sessions    prometheus.Counter
	active      prometheus.Gauge
	logins      *prometheus.CounterVec
	images      *prometheus.GaugeVec
	quarantined *prometheus.GaugeVec
	indexRuns   *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		sent: prometheus.NewCounter(prometheus.CounterOpts{Name: "texgrid_ftp_sent_bytes_total",
			Help: "File bytes sent to clients (RETR)."}),
		received: prometheus.NewCounter(prometheus.CounterOpts{Name: "texgrid_ftp_received_bytes_total",
			Help: "File bytes received from uploaders (STOR, APPE), refused uploads included."}),
		sessions: prometheus.NewCounter(prometheus.CounterOpts{Name: "texgrid_ftp_sessions_total",
			Help: "Control connections accepted."}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "texgrid_ftp_sessions_active",
			Help: "Control connections open now."}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "texgrid_ftp_logins_total",
			Help: "Login attempts by result: ok or failed (unknown user or bad password)."}, []string{"result"}),
		images: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "texgrid_ftp_dataset_images",
			Help: "Images in each dataset's manifest at its last indexing."}, []string{"dataset"}),
		quarantined: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "texgrid_ftp_dataset_quarantined",
			Help: "Files of each dataset in quarantine at its last indexing."}, []string{"dataset"}),
		indexRuns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "texgrid_ftp_index_runs_total",
			Help: "Indexing runs by result: ok or error."}, []string{"result"}),
	}
	for _, r := range []string{"ok", "failed"} {
		m.logins.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "error"} {
		m.indexRuns.WithLabelValues(r)
	}
	m.reg.MustRegister(m.sent, m.received, m.sessions, m.active, m.logins, m.images, m.quarantined, m.indexRuns,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// MetricsHandler serves the server's metrics in the Prometheus text format. Serve
// serves it at GET /metrics on Config.MetricsListen when that is set.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})
}

// MetricsAddr is the address GET /metrics is served on, once Serve has started; nil
// when Config.MetricsListen is empty.
func (s *Server) MetricsAddr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mAddr
}

// serveMetrics serves GET /metrics on addr until ctx ends; the returned channel is
// closed once the HTTP server has stopped.
func (s *Server) serveMetrics(ctx context.Context, addr string) (<-chan struct{}, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.MetricsHandler())
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("metrics server", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		hs.Shutdown(sctx)
	}()
	s.mu.Lock()
	s.mAddr = ln.Addr()
	s.mu.Unlock()
	s.log.Info("serving metrics", "addr", ln.Addr().String())
	return done, nil
}

// countingReader counts the bytes read through it as sent.
type countingReader struct {
	io.ReadCloser
	c prometheus.Counter
}

func (r countingReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.c.Add(float64(n))
	return n, err
}
