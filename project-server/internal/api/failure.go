package api

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/texgrid/texgrid/project-server/protocol"
)

// failure is POST /api/v1/work/{id}/failure: the host gives up a work unit it cannot
// finish (protocol version 2).
func (h *Handler) failure(c *gin.Context) {
	id, ok := pathID(c, h, "work unit")
	if !ok {
		return
	}
	var req protocol.FailureRequest
	if !h.bind(c, &req, false) {
		return
	}
	resp, err := h.s.ReportFailure(c.Request.Context(), c.GetInt64("host"), id, &req)
	if err != nil {
		h.fail(c, err)
		return
	}
	c.JSON(http.StatusOK, resp)
}
