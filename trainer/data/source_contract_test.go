package data_test

import (
	"github.com/texgrid/texgrid/trainer/data"
	"github.com/texgrid/texgrid/trainer/train"
)

// FragmentSource is what the engine trains on: keep it a train.Source.
var _ train.Source = (*data.FragmentSource)(nil)
