package cli

import (
	"github.com/texgrid/texgrid/project-server/internal/eval"
	"github.com/texgrid/texgrid/project-server/internal/scheduler"
)

// DefaultInit makes W(0) for new campaigns.
var DefaultInit scheduler.InitFunc = scheduler.DefaultInit

// DefaultEngine evaluates closed rounds: with ONNX Runtime when its library loads, else
// with the Go engine.
var DefaultEngine eval.Engine = eval.Auto{}
