package api

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/gin-gonic/gin"

	"github.com/texgrid/texgrid/project-server/internal/scheduler"
	"github.com/texgrid/texgrid/project-server/protocol"
)

// roundResults is GET /api/v1/campaigns/{id}/rounds/{round}/results (protocol version 3).
func (h *Handler) roundResults(c *gin.Context) {
	id, ok := pathID(c, h, "campaign")
	if !ok {
		return
	}
	round, err := strconv.Atoi(c.Param("round"))
	if err != nil || round < 0 {
		h.fail(c, &scheduler.Error{Code: protocol.CodeBadRequest, Message: fmt.Sprintf("round %q is not a non-negative integer", c.Param("round"))})
		return
	}
	rs, err := h.s.RoundResults(c.Request.Context(), id, round)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, rs)
}
