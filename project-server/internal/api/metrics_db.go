package api

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/texgrid/texgrid/project-server/internal/store"
)

// campaignCollector reads per-campaign work counts and round durations from the
// database at scrape time. Reading them from the database (rather than counting in this
// process) makes every replica over one database report the same, complete figures, and
// keeps them across restarts; a dashboard takes max() over replicas, not sum().
type campaignCollector struct{ db *store.DB }

var (
	campaignWorkDesc = prometheus.NewDesc("texgrid_campaign_work_total",
		"Work units and results of each campaign's rounds, by kind: issued, accepted, late, invalid, stale, duplicate, over_limit, failed.",
		[]string{"campaign", "kind"}, nil)
	campaignSamplesDesc = prometheus.NewDesc("texgrid_campaign_samples_trained_total",
		"Training samples in the accepted results of each campaign's rounds.", []string{"campaign"}, nil)
	roundDurationDesc = prometheus.NewDesc("texgrid_round_duration_seconds",
		"Time from a round's (in asynchronous mode a version's) opening to its close, over every closed round of each campaign.",
		[]string{"campaign"}, nil)
	campaignRoundDesc = prometheus.NewDesc("texgrid_campaign_round",
		"Each campaign's current round (asynchronous mode: model version).", []string{"campaign", "state"}, nil)
)

// roundDurationBuckets spans a quick test round to a day-long one.
var roundDurationBuckets = []float64{1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600}

func (c *campaignCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- campaignWorkDesc
	ch <- campaignSamplesDesc
	ch <- roundDurationDesc
	ch <- campaignRoundDesc
}

func (c *campaignCollector) Collect(ch chan<- prometheus.Metric) {
	type sums struct {
		CampaignID                                                            int64
		Issued, Accepted, Late, Invalid, Stale, Duplicates, OverLimit, Failed int64
		Samples                                                               int64
	}
	var rows []sums
	err := c.db.R.Raw(`SELECT campaign_id, SUM(issued) AS issued, SUM(accepted) AS accepted, SUM(late) AS late,
		SUM(invalid) AS invalid, SUM(stale) AS stale, SUM(duplicates) AS duplicates, SUM(over_limit) AS over_limit,
		SUM(failed) AS failed, SUM(samples_trained) AS samples FROM rounds GROUP BY campaign_id`).Scan(&rows).Error
	if err != nil {
		ch <- prometheus.NewInvalidMetric(campaignWorkDesc, err)
	}
	for _, r := range rows {
		id := strconv.FormatInt(r.CampaignID, 10)
		for _, k := range []struct {
			kind string
			n    int64
		}{{"issued", r.Issued}, {"accepted", r.Accepted}, {"late", r.Late}, {"invalid", r.Invalid},
			{"stale", r.Stale}, {"duplicate", r.Duplicates}, {"over_limit", r.OverLimit}, {"failed", r.Failed}} {
			ch <- prometheus.MustNewConstMetric(campaignWorkDesc, prometheus.CounterValue, float64(k.n), id, k.kind)
		}
		ch <- prometheus.MustNewConstMetric(campaignSamplesDesc, prometheus.CounterValue, float64(r.Samples), id)
	}

	var camps []store.Campaign
	if err := c.db.R.Select("id", "round", "state").Find(&camps).Error; err != nil {
		ch <- prometheus.NewInvalidMetric(campaignRoundDesc, err)
	}
	for _, cp := range camps {
		ch <- prometheus.MustNewConstMetric(campaignRoundDesc, prometheus.GaugeValue, float64(cp.Round),
			strconv.FormatInt(cp.ID, 10), cp.State)
	}

	var closed []store.Round
	if err := c.db.R.Select("campaign_id", "opened_at", "closed_at").
		Where("closed_at IS NOT NULL").Find(&closed).Error; err != nil {
		ch <- prometheus.NewInvalidMetric(roundDurationDesc, err)
		return
	}
	type hist struct {
		n       uint64
		sum     float64
		buckets map[float64]uint64
	}
	byCampaign := map[int64]*hist{}
	for _, r := range closed {
		h := byCampaign[r.CampaignID]
		if h == nil {
			h = &hist{buckets: make(map[float64]uint64, len(roundDurationBuckets))}
			for _, b := range roundDurationBuckets {
				h.buckets[b] = 0
			}
			byCampaign[r.CampaignID] = h
		}
		d := max(r.ClosedAt.Sub(r.OpenedAt), time.Duration(0)).Seconds()
		h.n++
		h.sum += d
		for _, b := range roundDurationBuckets {
			if d <= b {
				h.buckets[b]++
			}
		}
	}
	for id, h := range byCampaign {
		ch <- prometheus.MustNewConstHistogram(roundDurationDesc, h.n, h.sum, h.buckets, strconv.FormatInt(id, 10))
	}
}

// registerPools adds the database/sql pool statistics (open, in use, idle connections,
// waits for a connection and their total time) as go_sql_* metrics, labelled db_name
// "write" for the main pool and "read" for SQLite's separate read pool.
func registerPools(reg *prometheus.Registry, db *store.DB) {
	w, err := db.DB.DB()
	if err != nil {
		return // a gorm.DB over no *sql.DB has no pool to report
	}
	reg.MustRegister(collectors.NewDBStatsCollector(w, "write"))
	if db.R == nil {
		return
	}
	if r, err := db.R.DB(); err == nil && r != w {
		reg.MustRegister(collectors.NewDBStatsCollector(r, "read"))
	}
}
