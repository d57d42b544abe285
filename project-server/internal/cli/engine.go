package cli

import (
	"github.com/texgrid/texgrid/project-server/internal/eval"
	"github.com/texgrid/texgrid/project-server/internal/scheduler"
)

// DefaultInit makes W(0) for new campaigns.
var DefaultInit scheduler.InitFunc = scheduler.DefaultInit

// DefaultEngine evaluates closed rounds with the Go engine; ONNX Runtime can take its
// place behind the same eval.Engine interface.
var DefaultEngine eval.Engine = eval.Go{}
