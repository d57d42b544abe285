package safetensors

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/texgrid/texgrid/trainer/tensor"
)

// Encode writes ts as a safetensors file with every tensor stored as dtype. Tensor order
// in ts does not matter: names are sorted, so the same tensors and metadata always give
// the same bytes. meta may be nil. Names must be unique and non-empty and every tensor's
// data must match its shape; F16 rejects finite values beyond its range (±65504) rather
// than silently writing infinities.
func Encode(w io.Writer, ts []tensor.Named, dtype DType, meta map[string]string) error {
	hdr, order, err := encodeHeader(ts, dtype, meta)
	if err != nil {
		return err
	}
	if err := checkF16Range(ts, dtype); err != nil {
		return err
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	if _, err := bw.Write(hdr); err != nil {
		return fmt.Errorf("safetensors: write header: %w", err)
	}
	var buf []byte
	for _, i := range order {
		data := ts[i].T.Data
		switch dtype {
		case F32:
			if littleEndian {
				if len(data) > 0 {
					_, err = bw.Write(f32Bytes(data))
				}
			} else {
				buf = slices.Grow(buf[:0], 4*len(data))[:4*len(data)]
				putF32(buf, data)
				_, err = bw.Write(buf)
			}
		case F16:
			// Convert in chunks so a large tensor does not need a second full copy.
			for off := 0; off < len(data) && err == nil; off += 1 << 15 {
				chunk := data[off:min(off+1<<15, len(data))]
				buf = slices.Grow(buf[:0], 2*len(chunk))[:2*len(chunk)]
				putF16(buf, chunk)
				_, err = bw.Write(buf)
			}
		}
		if err != nil {
			return fmt.Errorf("safetensors: write tensor %q: %w", ts[i].Name, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("safetensors: write: %w", err)
	}
	return nil
}

// Marshal returns the bytes Encode would write.
func Marshal(ts []tensor.Named, dtype DType, meta map[string]string) ([]byte, error) {
	var b bytes.Buffer
	n := 0
	for _, t := range ts {
		if t.T != nil {
			n += len(t.T.Data) * max(dtype.Size(), 0)
		}
	}
	b.Grow(n + 1024)
	if err := Encode(&b, ts, dtype, meta); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// WriteFile writes the file atomically: to a temporary file in the same directory,
// fsynced, then renamed over path, so a reader never sees a half-written file and a
// crash leaves either the old or the new contents.
func WriteFile(path string, ts []tensor.Named, dtype DType, meta map[string]string) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = Encode(f, ts, dtype, meta); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Chmod(0o644); err != nil {
		return fmt.Errorf("safetensors: write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("safetensors: sync %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("safetensors: close %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("safetensors: rename into %s: %w", path, err)
	}
	// Make the rename itself durable; a directory that cannot be synced (some network
	// file systems) does not make the write fail.
	if d, derr := os.Open(dir); derr == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// encodeHeader validates ts and returns the length prefix plus padded JSON header, and
// the order (indexes into ts, sorted by name) in which the data follows.
func encodeHeader(ts []tensor.Named, dtype DType, meta map[string]string) ([]byte, []int, error) {
	return buildHeader(ts, dtype, meta, false)
}

// buildHeader is encodeHeader; with shapesOnly the tensors have shapes but no data
// (EncodeHeader) and sizes come from the shapes.
func buildHeader(ts []tensor.Named, dtype DType, meta map[string]string, shapesOnly bool) ([]byte, []int, error) {
	esize := dtype.Size()
	if esize == 0 {
		return nil, nil, fmt.Errorf("safetensors: dtype %q: want F32 or F16: %w", dtype, ErrInvalid)
	}
	order := make([]int, len(ts))
	for i, t := range ts {
		order[i] = i
		switch {
		case t.Name == "":
			return nil, nil, fmt.Errorf("safetensors: tensor %d has an empty name: %w", i, ErrInvalid)
		case t.Name == metadataKey:
			return nil, nil, fmt.Errorf("safetensors: tensor name %q is reserved: %w", t.Name, ErrInvalid)
		case t.T == nil:
			return nil, nil, fmt.Errorf("safetensors: tensor %q is nil: %w", t.Name, ErrInvalid)
		}
		for _, d := range t.T.Shape {
			if d < 0 {
				return nil, nil, fmt.Errorf("safetensors: tensor %q has negative dimension in shape %v: %w", t.Name, t.T.Shape, ErrInvalid)
			}
		}
		if n := tensor.Numel(t.T.Shape); !shapesOnly && n != len(t.T.Data) {
			return nil, nil, fmt.Errorf("safetensors: tensor %q has shape %v (%d elements) but %d values: %w",
				t.Name, t.T.Shape, n, len(t.T.Data), ErrInvalid)
		}
	}
	slices.SortFunc(order, func(a, b int) int {
		switch {
		case ts[a].Name < ts[b].Name:
			return -1
		case ts[a].Name > ts[b].Name:
			return 1
		}
		return 0
	})
	for k := 1; k < len(order); k++ {
		if ts[order[k]].Name == ts[order[k-1]].Name {
			return nil, nil, fmt.Errorf("safetensors: duplicate tensor name %q: %w", ts[order[k]].Name, ErrInvalid)
		}
	}

	h := make([]byte, 8, 256+64*len(ts))
	h = append(h, '{')
	first := true
	if len(meta) > 0 {
		keys := make([]string, 0, len(meta))
		for k := range meta {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		h = appendJSONString(h, metadataKey)
		h = append(h, ":{"...)
		for i, k := range keys {
			if i > 0 {
				h = append(h, ',')
			}
			h = appendJSONString(h, k)
			h = append(h, ':')
			h = appendJSONString(h, meta[k])
		}
		h = append(h, '}')
		first = false
	}
	var off int64
	for _, i := range order {
		t := ts[i]
		if !first {
			h = append(h, ',')
		}
		first = false
		h = appendJSONString(h, t.Name)
		h = append(h, `:{"dtype":"`...)
		h = append(h, dtype...)
		h = append(h, `","shape":[`...)
		for k, d := range t.T.Shape {
			if k > 0 {
				h = append(h, ',')
			}
			h = strconv.AppendInt(h, int64(d), 10)
		}
		end := off + int64(tensor.Numel(t.T.Shape))*int64(esize)
		h = append(h, `],"data_offsets":[`...)
		h = strconv.AppendInt(h, off, 10)
		h = append(h, ',')
		h = strconv.AppendInt(h, end, 10)
		h = append(h, "]}"...)
		off = end
	}
	h = append(h, '}')
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	binary.LittleEndian.PutUint64(h[:8], uint64(len(h)-8))
	return h, order, nil
}

func appendJSONString(b []byte, s string) []byte {
	q, err := json.Marshal(s)
	if err != nil {
		panic(err) // a string always marshals
	}
	return append(b, q...)
}

// checkF16Range reports the first finite value that would overflow to an infinity.
func checkF16Range(ts []tensor.Named, dtype DType) error {
	if dtype != F16 {
		return nil
	}
	for _, t := range ts {
		for i, v := range t.T.Data {
			// 65520 is halfway between F16's largest finite value (65504) and the next
			// step: it and everything above round to infinity.
			if a := math.Abs(float64(v)); a >= 65520 && !math.IsInf(a, 0) {
				return fmt.Errorf("safetensors: tensor %q element %d = %g is beyond the F16 range: %w", t.Name, i, v, ErrInvalid)
			}
		}
	}
	return nil
}
