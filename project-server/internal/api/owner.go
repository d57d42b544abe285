package api

import (
	"database/sql"
	"errors"
	"fmt"

	"github.com/gin-gonic/gin"

	"github.com/texgrid/texgrid/project-server/internal/auth"
	"github.com/texgrid/texgrid/project-server/internal/scheduler"
	"github.com/texgrid/texgrid/project-server/protocol"
)

// CampaignOwner returns the id of the researcher who created a campaign, or
// found=false when there is no such campaign.
func CampaignOwner(c *gin.Context, s *scheduler.Scheduler, id int64) (owner int64, found bool, err error) {
	err = s.DB().R.WithContext(c.Request.Context()).Raw("SELECT researcher_id FROM campaigns WHERE id = ?", id).Row().Scan(&owner)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("owner of campaign %d: %w", id, err)
	}
	return owner, true, nil
}

// caller returns the researcher the request's token acts as.
func (h *Handler) caller(c *gin.Context) (auth.Researcher, error) {
	return h.people.ResearcherByID(c.Request.Context(), c.GetInt64("researcher"))
}

// owner lets a researcher reach only their own campaigns; an admin reaches every one.
// Another researcher's campaign answers 403 "forbidden"; an unknown one goes on to the
// handler, which answers 404.
func (h *Handler) owner(c *gin.Context) {
	id, ok := pathID(c, h, "campaign")
	if !ok {
		return
	}
	me, err := h.caller(c)
	if err != nil {
		h.fail(c, &scheduler.Error{Code: protocol.CodeUnauthorized, Message: err.Error()})
		return
	}
	if me.Admin() {
		c.Next()
		return
	}
	owner, found, err := CampaignOwner(c, h.s, id)
	if err != nil {
		h.fail(c, err)
		return
	}
	if found && owner != me.ID {
		h.fail(c, &scheduler.Error{Code: protocol.CodeForbidden,
			Message: fmt.Sprintf("campaign %d belongs to another researcher; only its owner or an admin may see or change it", id)})
		return
	}
	c.Next()
}

// visible keeps the campaigns the caller may see: their own, or all for an admin.
func (h *Handler) visible(c *gin.Context, cs []protocol.Campaign) ([]protocol.Campaign, error) {
	me, err := h.caller(c)
	if err != nil {
		return nil, &scheduler.Error{Code: protocol.CodeUnauthorized, Message: err.Error()}
	}
	if me.Admin() {
		return cs, nil
	}
	owners, err := CampaignOwners(c, h.s)
	if err != nil {
		return nil, err
	}
	out := make([]protocol.Campaign, 0, len(cs))
	for _, camp := range cs {
		if owners[camp.ID] == me.ID {
			out = append(out, camp)
		}
	}
	return out, nil
}

// CampaignOwners maps every campaign id to its researcher's id.
func CampaignOwners(c *gin.Context, s *scheduler.Scheduler) (map[int64]int64, error) {
	rows, err := s.DB().R.WithContext(c.Request.Context()).Raw("SELECT id, researcher_id FROM campaigns").Rows()
	if err != nil {
		return nil, fmt.Errorf("campaign owners: %w", err)
	}
	defer rows.Close()
	m := map[int64]int64{}
	for rows.Next() {
		var id, owner int64
		if err := rows.Scan(&id, &owner); err != nil {
			return nil, fmt.Errorf("campaign owners: %w", err)
		}
		m[id] = owner
	}
	return m, rows.Err()
}
