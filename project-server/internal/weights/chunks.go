package weights

import (
	"fmt"
	"io"

	"github.com/texgrid/texgrid/trainer/safetensors"
	"github.com/texgrid/texgrid/trainer/spec"
)

// ForEachChunk reads k deltas over params in lockstep and calls fn with the same run of
// coordinates of every delta: offset is where the run starts in the layout of
// Sum.Values, vals[j] the values of delta j (as float32, whatever the dtype). It is the
// pass a robust aggregator (a trimmed mean, a coordinate-wise median) makes: memory is
// k chunks, never k models. The deltas must list their tensors in the same order (one
// writer makes them all); fn must not keep vals after it returns.
func ForEachChunk(rs []io.Reader, params []spec.Param, dtype string, fn func(offset int, vals [][]float32) error) error {
	if len(rs) == 0 {
		return fmt.Errorf("chunks: no delta")
	}
	offset := make(map[string]int, len(params))
	n := 0
	for _, p := range params {
		offset[p.Name] = n
		n += p.Size()
	}
	srcs := make([]*safetensors.DataReader, len(rs))
	var first *safetensors.Header
	for k, r := range rs {
		h, err := readHeader(r, params, dtype)
		if err != nil {
			return deltaErr(len(rs), k, err)
		}
		if first == nil {
			first = h
		} else if !sameLayout(first, h) {
			return deltaErr(len(rs), k, invalidf("the delta lists its tensors in another order than the first"))
		}
		srcs[k] = safetensors.NewDataReader(r, h, safetensors.Options{})
	}
	size := chunkFor(params, foldChunk)
	vals := make([][]float32, len(rs))
	for k := range vals {
		vals[k] = make([]float32, size)
	}
	cut := make([][]float32, len(rs))
	for {
		var off0, n0 int
		for k, d := range srcs {
			t, at, n, err := d.Next(vals[k])
			switch {
			case err == io.EOF && k == 0:
				for j := 1; j < len(srcs); j++ {
					if _, _, _, err := srcs[j].Next(vals[j]); err != io.EOF {
						if err == nil {
							err = invalidf("the delta is longer than the first")
						}
						return deltaErr(len(srcs), j, classify(err))
					}
				}
				return nil
			case err == io.EOF:
				return deltaErr(len(srcs), k, invalidf("the delta ends before the first"))
			case err != nil:
				return deltaErr(len(srcs), k, classify(err))
			}
			off := offset[t.Name] + at
			if k == 0 {
				off0, n0 = off, n
			} else if off != off0 || n != n0 {
				return fmt.Errorf("chunks: chunk of tensor %q at %d does not line up with the first delta", t.Name, at)
			}
		}
		for k := range vals {
			cut[k] = vals[k][:n0]
		}
		if err := fn(off0, cut); err != nil {
			return err
		}
	}
}
