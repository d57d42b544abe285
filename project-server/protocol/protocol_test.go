package protocol

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestDurationJSON(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, in string
		want     time.Duration
		err      string
	}{
		{"go string", `"30m"`, 30 * time.Minute, ""},
		{"compound", `"1h30m10s"`, 90*time.Minute + 10*time.Second, ""},
		{"seconds", `90`, 90 * time.Second, ""},
		{"bad string", `"soon"`, 0, "soon"},
		{"fractional seconds", `1.5`, 0, "whole seconds"},
		{"boolean", `true`, 0, "whole seconds"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var d Duration
			err := json.Unmarshal([]byte(c.in), &d)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("Unmarshal(%s) error = %v, want one mentioning %q", c.in, err, c.err)
				}
				return
			}
			if err != nil || time.Duration(d) != c.want {
				t.Fatalf("Unmarshal(%s) = %v, %v; want %v", c.in, time.Duration(d), err, c.want)
			}
			b, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			var back Duration
			if err := json.Unmarshal(b, &back); err != nil || back != d {
				t.Fatalf("round trip through %s gave %v, %v", b, time.Duration(back), err)
			}
		})
	}
}

func TestPaths(t *testing.T) {
	t.Parallel()
	cases := []struct{ got, want string }{
		{WorkPath(42, "result"), "/api/v1/work/42/result"},
		{WorkPath(7, "heartbeat"), "/api/v1/work/7/heartbeat"},
		{BlobPath("ab12"), "/api/v1/blobs/ab12"},
		{DetachPath, "/api/v1/hosts/self"},
		{WorkPath(9, "failure"), "/api/v1/work/9/failure"},
		{ResultsPath(3, 0), "/api/v1/campaigns/3/rounds/0/results"},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("path %q, want %q", c.got, c.want)
		}
	}
}

func TestErrorBody(t *testing.T) {
	t.Parallel()
	var body ErrorBody
	if err := json.Unmarshal([]byte(`{"error":{"code":"late","message":"round 3 closed"}}`), &body); err != nil {
		t.Fatal(err)
	}
	if body.Error == nil || body.Error.Code != CodeLate || body.Error.Error() != "late: round 3 closed" {
		t.Fatalf("decoded %+v", body.Error)
	}
}

// TestHyperLRDecayJSON: lr_decay is optional on the wire; a Hyper without it encodes as
// before, so old clients and stored specs see no change.
func TestHyperLRDecayJSON(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		h    Hyper
		want string
	}{
		{"absent", Hyper{Epochs: 1, BatchSize: 8, LearningRate: 0.01}, `{"epochs":1,"batch_size":8,"learning_rate":0.01,"momentum":0,"weight_decay":0}`},
		{"set", Hyper{Epochs: 1, BatchSize: 8, LearningRate: 0.01, LRDecay: 0.5}, `{"epochs":1,"batch_size":8,"learning_rate":0.01,"momentum":0,"weight_decay":0,"lr_decay":0.5}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := json.Marshal(c.h)
			if err != nil || string(b) != c.want {
				t.Fatalf("Marshal(%+v) = %s, %v; want %s", c.h, b, err, c.want)
			}
			var back Hyper
			if err := json.Unmarshal(b, &back); err != nil || back != c.h {
				t.Fatalf("round trip gave %+v, %v", back, err)
			}
		})
	}
}
