package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/texgrid/texgrid/project-server/internal/store"
)

// Metrics is the server's Prometheus registry: RPC latency by route, results by outcome,
// work units issued and rounds closed as counters, and, read from the database at
// scrape time, work units and rounds by state, work by campaign and kind, and round
// durations; plus the database pools' statistics. It implements scheduler.Counters.
type Metrics struct {
	reg     *prometheus.Registry
	latency *prometheus.HistogramVec
	results *prometheus.CounterVec
	issued  prometheus.Counter
	closed  prometheus.Counter
}

// NewMetrics registers the server's metrics; db feeds the by-state gauges.
func NewMetrics(db *store.DB) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "texgrid_rpc_duration_seconds", Help: "API request latency by route and status.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10},
		}, []string{"method", "route", "code"}),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "texgrid_results_total", Help: "Results read in full and failure reports, by outcome (accepted, late, duplicate, over_limit, invalid, failed).",
		}, []string{"outcome"}),
		issued: prometheus.NewCounter(prometheus.CounterOpts{Name: "texgrid_work_units_issued_total", Help: "Work units issued (including reissues)."}),
		closed: prometheus.NewCounter(prometheus.CounterOpts{Name: "texgrid_rounds_closed_total", Help: "Rounds closed by this process."}),
	}
	m.reg.MustRegister(m.latency, m.results, m.issued, m.closed, &stateCollector{db: db}, &campaignCollector{db: db},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerPools(m.reg, db)
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler { return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}) }

func (m *Metrics) observe(method, route string, code int, d time.Duration) {
	m.latency.WithLabelValues(method, route, strconv.Itoa(code)).Observe(d.Seconds())
}

// Result counts a result by outcome.
func (m *Metrics) Result(outcome string) { m.results.WithLabelValues(outcome).Inc() }

// Issued counts an issued work unit.
func (m *Metrics) Issued() { m.issued.Inc() }

// RoundClosed counts a closed round.
func (m *Metrics) RoundClosed() { m.closed.Inc() }

type stateCollector struct{ db *store.DB }

var (
	wuDesc    = prometheus.NewDesc("texgrid_work_units", "Work units by state.", []string{"state"}, nil)
	roundDesc = prometheus.NewDesc("texgrid_rounds", "Rounds by state.", []string{"state"}, nil)
)

func (s *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- wuDesc
	ch <- roundDesc
}

func (s *stateCollector) Collect(ch chan<- prometheus.Metric) {
	type row struct {
		State string
		N     int64
	}
	for _, q := range []struct {
		table string
		desc  *prometheus.Desc
	}{{"work_units", wuDesc}, {"rounds", roundDesc}} {
		var rows []row
		if err := s.db.Raw("SELECT state, COUNT(*) AS n FROM " + q.table + " GROUP BY state").Scan(&rows).Error; err != nil {
			continue
		}
		for _, r := range rows {
			ch <- prometheus.MustNewConstMetric(q.desc, prometheus.GaugeValue, float64(r.N), r.State)
		}
	}
}
