package api

import (
	"fmt"

	"github.com/gin-gonic/gin"

	"github.com/texgrid/texgrid/project-server/internal/auth"
	"github.com/texgrid/texgrid/project-server/internal/scheduler"
	"github.com/texgrid/texgrid/project-server/protocol"
)

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
	owner, found, err := h.people.CampaignOwner(c.Request.Context(), id)
	if err != nil {
		h.fail(c, err)
		return
	}
	if found && !me.MayAct(owner) {
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
	owners, err := h.people.CampaignOwners(c.Request.Context())
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
