package cli

import (
	"github.com/texgrid/texgrid/project-server/internal/eval"
	"github.com/texgrid/texgrid/project-server/internal/scheduler"
)

// DefaultInit makes W(0) for new campaigns.
var DefaultInit scheduler.InitFunc = scheduler.DefaultInit

// DefaultEngine evaluates closed rounds; nil disables evaluation.
var DefaultEngine eval.Engine
