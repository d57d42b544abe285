package agent

import (
	"context"
	"errors"
	"fmt"

	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/spec"
)

// Trainer turns an accepted work unit into a Job. The production Trainer is
// volunteer-client/internal/wu (the real trainer and the dataset-ftp cache); the agent's
// unit tests drive the loop with a small deterministic one.
type Trainer interface {
	// Prepare loads the base model from basePath and the work unit's images (through a
	// cache bounded by maxCacheBytes) and returns a Job at the start of training, or,
	// when state is not nil, at the position the state was taken at. A work unit whose
	// images do not fit in maxCacheBytes is an error matching ErrDoesNotFit.
	Prepare(ctx context.Context, wu *protocol.WorkUnit, basePath string, threads int, maxCacheBytes int64, state []byte) (Job, error)
}

// Job is one work unit's training.
type Job interface {
	// Step trains one batch.
	Step(ctx context.Context) (StepInfo, error)
	// Checkpoint returns the complete training state (weights, optimizer state, RNG,
	// position) from which Prepare can resume bit-exactly.
	Checkpoint() ([]byte, error)
	// Progress is the trained share, 0..1.
	Progress() float64
	// Result encodes W_trained - W_base as safetensors in the work unit's DeltaDType,
	// with the samples trained and the mean loss of the last epoch. A delta that is
	// not finite in that dtype is an error matching ErrDiverged.
	Result() (delta []byte, samples int, loss float64, err error)
	// Close releases the job's memory.
	Close()
}

// StepInfo reports one trained batch.
type StepInfo struct {
	Epoch, Batch int
	Loss         float64
	Samples      int // samples trained so far in this work unit
	Done         bool
}

// ErrBadWorkUnit marks a work unit that cannot run here whatever the retries (a bad
// spec, a missing dataset, classes that disagree); the agent drops it.
var ErrBadWorkUnit = errors.New("work unit cannot be run")

// ErrBadCheckpoint marks a saved training state Prepare cannot resume from; the agent
// deletes it and starts the work unit again from the base model.
var ErrBadCheckpoint = errors.New("checkpoint cannot be resumed")

// ErrDiverged marks a work unit whose training cannot give a usable delta: the loss
// or the delta is NaN or infinite (the base model was pushed too far off, or the
// learning rate is too high). Training it again gives the same result, so the agent
// reports the unit to the server as failed and drops it.
var ErrDiverged = errors.New("training diverged")

// ErrDoesNotFit marks a work unit that needs more memory or disk than the volunteer
// allows; the agent drops it and says why.
var ErrDoesNotFit = errors.New("work unit does not fit the volunteer's limits")

// ImageCacheBytes bounds the decoded pixels a training job keeps in memory (the
// trainer reloads evicted images from the verified disk cache); Estimate counts it.
const ImageCacheBytes = 64 << 20

// Estimate returns the memory and work-directory disk a work unit needs: weights,
// gradients, momentum, the base copy and the delta (five model copies), plus the
// activations and their gradients for one batch, the input batch, the im2col buffers,
// the decoded-image cache and the Go runtime's headroom; on disk the base model, one
// checkpoint (weights and momentum) and the delta, each counted at float32.
func Estimate(wu *protocol.WorkUnit) (mem, disk int64, err error) {
	s, err := spec.Parse(wu.ModelSpec)
	if err != nil {
		return 0, 0, fmt.Errorf("work unit %d: %w", wu.ID, err)
	}
	r, err := s.Resolve(len(wu.Classes), wu.FragmentSize)
	if err != nil {
		return 0, 0, fmt.Errorf("work unit %d: %w", wu.ID, err)
	}
	params := int64(r.NumParams()) * 4
	var act int64
	for i := range r.Out {
		act += int64(r.Out[i].Size())
	}
	batch := int64(wu.Hyper.BatchSize)
	input := int64(r.In[0].Size()) * batch * 4
	// im2col buffers are about kernel^2 times a conv layer's input; count the largest.
	var cols int64
	for i, l := range s.Layers {
		if l.Type == spec.Conv {
			c := int64(r.Out[i].H*r.Out[i].W) * int64(r.In[i].C*l.Kernel*l.Kernel) * 4
			if c > cols {
				cols = c
			}
		}
	}
	mem = 5*params + 2*act*batch*4 + input + 2*cols + ImageCacheBytes + 32<<20
	disk = 4*params + 64<<10
	return mem, disk, nil
}

// checkWorkUnit rejects a work unit the client cannot run before anything is fetched.
func checkWorkUnit(wu *protocol.WorkUnit) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("work unit %d: "+format, append([]any{wu.ID}, a...)...)
	}
	switch {
	case wu.ID <= 0:
		return fmt.Errorf("work unit with id %d", wu.ID)
	case wu.Kind != "" && wu.Kind != protocol.KindTrain:
		return bad("kind %q is not one this client runs (it runs %q)", wu.Kind, protocol.KindTrain)
	case len(wu.BaseModel.SHA256) != 64:
		return bad("base model sha256 %q is not 64 hex digits", wu.BaseModel.SHA256)
	case wu.FragmentCount <= 0 || wu.FragmentSize <= 0:
		return bad("fragment count %d, size %d", wu.FragmentCount, wu.FragmentSize)
	case wu.Hyper.Epochs <= 0 || wu.Hyper.BatchSize <= 0:
		return bad("epochs %d, batch size %d", wu.Hyper.Epochs, wu.Hyper.BatchSize)
	case len(wu.Classes) < 2:
		return bad("%d classes", len(wu.Classes))
	case wu.DeltaDType != "" && wu.DeltaDType != "float32" && wu.DeltaDType != "float16":
		return bad("delta dtype %q is neither float32 nor float16", wu.DeltaDType)
	}
	return nil
}
