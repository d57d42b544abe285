package api

import (
	"context"
	"errors"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/texgrid/texgrid/project-server/internal/datasets"
	"github.com/texgrid/texgrid/project-server/internal/scheduler"
	"github.com/texgrid/texgrid/project-server/protocol"
)

// Option configures the API handler.
type Option func(*Handler)

// WithDatasets gives GET /api/v1/datasets its source; without one the route answers
// 409 "conflict" saying no dataset source is configured.
func WithDatasets(src datasets.Source) Option { return func(h *Handler) { h.datasets = src } }

// Datasets describes every dataset src lists: its classes with their image counts and
// its quarantined files with their reasons. A dataset whose manifest cannot be read is
// listed with the reason in Error.
func Datasets(ctx context.Context, src datasets.Source) ([]protocol.DatasetInfo, error) {
	l, ok := src.(datasets.Lister)
	if !ok || src == nil {
		return nil, &scheduler.Error{Code: protocol.CodeConflict, Message: "the server has no dataset source that can list datasets (set --ftp-addr or --dataset-dir)"}
	}
	names, err := l.Datasets(ctx)
	if err != nil {
		return nil, err
	}
	out := []protocol.DatasetInfo{}
	for _, n := range names {
		d := protocol.DatasetInfo{Name: n, Classes: []protocol.ClassCount{}}
		m, err := src.Manifest(ctx, n, "")
		switch {
		case errors.Is(err, datasets.ErrNotFound):
			d.Error = "not indexed yet: no manifest"
		case err != nil:
			d.Error = err.Error()
		default:
			d.ManifestVersion, d.Images = m.Version, len(m.Images)
			count := map[string]int{}
			for _, im := range m.Images {
				count[im.Class]++
			}
			for _, c := range m.Classes {
				d.Classes = append(d.Classes, protocol.ClassCount{Name: c, Images: count[c]})
			}
			for _, q := range m.Quarantined {
				d.Quarantined = append(d.Quarantined, protocol.QuarantinedFile{Path: q.Path, Reason: q.Reason})
			}
		}
		out = append(out, d)
	}
	return out, nil
}

func (h *Handler) listDatasets(c *gin.Context) {
	ds, err := Datasets(c.Request.Context(), h.datasets)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, ds)
}
