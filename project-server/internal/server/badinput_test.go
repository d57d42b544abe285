package server_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/texgrid/texgrid/project-server/internal/weights"
	"github.com/texgrid/texgrid/project-server/protocol"
	"github.com/texgrid/texgrid/trainer/spec"
	"github.com/texgrid/texgrid/trainer/tensor"
)

// snapshot is everything a refused request must leave alone.
type snapshot struct {
	Rounds    string
	Campaigns string
	Hosts     string
	Results   int64
	WUs       string
}

func (e *env) snapshot(campaignID int64) snapshot {
	e.t.Helper()
	rs, _ := json.Marshal(e.rounds(campaignID))
	cs, _ := json.Marshal(e.campaign(campaignID))
	var s snapshot
	s.Rounds, s.Campaigns = string(rs), string(cs)
	var hosts []struct {
		ID             int64
		ResultsValid   int
		ResultsInvalid int
		Credit         float64
		Detached       bool
	}
	db := e.srv.DB
	if err := db.Raw("SELECT id, results_valid, results_invalid, credit, detached FROM hosts ORDER BY id").Scan(&hosts).Error; err != nil {
		e.t.Fatal(err)
	}
	hb, _ := json.Marshal(hosts)
	s.Hosts = string(hb)
	if err := db.Raw("SELECT COUNT(*) FROM results").Scan(&s.Results).Error; err != nil {
		e.t.Fatal(err)
	}
	var wus []struct {
		ID    int64
		State string
	}
	if err := db.Raw("SELECT id, state FROM work_units ORDER BY id").Scan(&wus).Error; err != nil {
		e.t.Fatal(err)
	}
	wb, _ := json.Marshal(wus)
	s.WUs = string(wb)
	return s
}

// TestBadInput: every kind of bad request is answered with its 4xx code and a message,
// and changes nothing; invalid deltas are the one refusal that is recorded (against the
// host, as an invalid result) and even they leave accepted work and the WU alone.
func TestBadInput(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(*testing.T, string) string) {
		e := newEnv(t, dsn)
		c := e.createCampaign(protocol.CampaignSpec{Quorum: 0.75, WorkUnitsPerRound: 4, Rounds: 2, MaxDeltaNorm: 100, Start: true})
		a, b, h3 := e.host(1), e.host(1), e.host(1)
		wa, wb := e.work(a), e.work(b)
		e.work(h3)
		ps := params(t, wa)
		good := encode(t, delta(ps, 7, 0.01), weights.F32)
		e.must(e.upload(a, wa.ID, good, nil), http.StatusOK, nil)
		goodB := encode(t, delta(ps, 8, 0.01), weights.F32)

		nan := delta(ps, 9, 0.01)
		nan[1].T.Data[0] = float32(math.NaN())
		wrongShape := delta(append([]spec.Param{{Name: ps[0].Name, Shape: []int{3, 1, 3, 3}}}, ps[1:]...), 10, 0.01)
		extra := append(delta(ps, 11, 0.01), tensor.Named{Name: "fc9.bias", T: tensor.New(2)})
		huge := delta(ps, 12, 1000)
		f16 := encode(t, delta(ps, 13, 0.01), weights.F16)
		badHeader := make([]byte, 16)
		binary.LittleEndian.PutUint64(badHeader, 8)
		copy(badHeader[8:], "not json")
		path := protocol.APIPrefix
		wuPath := protocol.WorkPath(wb.ID, "result")
		_ = wuPath

		cases := []struct {
			name     string
			do       func() reply
			status   int
			code     string
			recorded bool // an invalid result counted against the host
		}{
			{"malformed JSON", func() reply { return e.do("POST", path+"/work", b, `{"threads": 2`, nil) }, 400, protocol.CodeBadRequest, false},
			{"JSON with trailing data", func() reply { return e.do("POST", path+"/work", b, `{"threads": 2} {}`, nil) }, 400, protocol.CodeBadRequest, false},
			{"JSON of the wrong type", func() reply { return e.do("POST", path+"/work", b, `{"threads": "two"}`, nil) }, 400, protocol.CodeBadRequest, false},
			{"negative threads", func() reply { return e.do("POST", path+"/work", b, `{"threads": -1}`, nil) }, 400, protocol.CodeBadRequest, false},
			{"oversized JSON", func() reply {
				return e.do("POST", path+"/work", b, `{"threads": 2, "x": "`+strings.Repeat("a", 2<<20)+`"}`, nil)
			}, 413, protocol.CodeTooLarge, false},
			{"unknown campaign", func() reply { return e.do("GET", path+"/campaigns/9999", e.researcher, nil, nil) }, 404, protocol.CodeNotFound, false},
			{"campaign id not a number", func() reply { return e.do("GET", path+"/campaigns/abc", e.researcher, nil, nil) }, 400, protocol.CodeBadRequest, false},
			{"unknown campaign action", func() reply {
				return e.do("POST", fmt.Sprintf("%s/campaigns/%d/explode", path, c.ID), e.researcher, nil, nil)
			}, 404, protocol.CodeNotFound, false},
			{"start a running campaign", func() reply {
				return e.do("POST", fmt.Sprintf("%s/campaigns/%d/start", path, c.ID), e.researcher, nil, nil)
			}, 409, protocol.CodeConflict, false},
			{"action on unknown campaign", func() reply { return e.do("POST", path+"/campaigns/9999/pause", e.researcher, nil, nil) }, 404, protocol.CodeNotFound, false},
			{"create: unknown dataset", func() reply {
				return e.do("POST", path+"/campaigns", e.researcher, protocol.CampaignSpec{Name: "x", Dataset: "nope", Model: "tiny"}, nil)
			}, 404, protocol.CodeNotFound, false},
			{"create: unknown model", func() reply {
				return e.do("POST", path+"/campaigns", e.researcher, protocol.CampaignSpec{Name: "x", Dataset: testDataset, Model: "nope", FragmentSize: 16}, nil)
			}, 404, protocol.CodeNotFound, false},
			{"create: quorum out of range", func() reply {
				return e.do("POST", path+"/campaigns", e.researcher, protocol.CampaignSpec{Name: "x", Dataset: testDataset, Model: "tiny", FragmentSize: 16, Quorum: 0.5}, nil)
			}, 400, protocol.CodeBadRequest, false},
			{"create: fragments bigger than every image", func() reply {
				return e.do("POST", path+"/campaigns", e.researcher, protocol.CampaignSpec{Name: "x", Dataset: testDataset, Model: "tiny", FragmentSize: 128}, nil)
			}, 400, protocol.CodeBadRequest, false},
			{"create: unknown field", func() reply {
				return e.do("POST", path+"/campaigns", e.researcher, `{"name":"x","dataset":"tex","model":"tiny","quorom":0.8}`, nil)
			}, 400, protocol.CodeBadRequest, false},
			{"create: model name with a path", func() reply {
				return e.do("POST", path+"/campaigns", e.researcher, protocol.CampaignSpec{Name: "x", Dataset: testDataset, Model: "../tiny"}, nil)
			}, 400, protocol.CodeBadRequest, false},
			{"no token", func() reply { return e.do("POST", path+"/work", "", protocol.WorkRequest{}, nil) }, 401, protocol.CodeUnauthorized, false},
			{"unknown host token", func() reply { return e.do("POST", path+"/work", "tgh_nope", protocol.WorkRequest{}, nil) }, 401, protocol.CodeUnauthorized, false},
			{"unknown account key", func() reply {
				return e.do("POST", path+"/hosts", "", protocol.RegisterHostRequest{AccountKey: "tga_nope"}, nil)
			}, 401, protocol.CodeUnauthorized, false},
			{"host token on a researcher route", func() reply { return e.do("GET", path+"/campaigns", a, nil, nil) }, 403, protocol.CodeForbidden, false},
			{"researcher token on a host route", func() reply { return e.do("POST", path+"/work", e.researcher, protocol.WorkRequest{}, nil) }, 403, protocol.CodeForbidden, false},
			{"old protocol version", func() reply {
				return e.do("POST", path+"/work", b, protocol.WorkRequest{}, map[string]string{protocol.HeaderVersion: "0"})
			}, 426, protocol.CodeUpgradeRequired, false},
			{"protocol version newer than the server's", func() reply {
				return e.do("POST", path+"/work", b, protocol.WorkRequest{}, map[string]string{protocol.HeaderVersion: "99"})
			}, 400, protocol.CodeProtocolTooNew, false},
			{"wrong method", func() reply { return e.do("DELETE", path+"/work", b, nil, nil) }, 405, protocol.CodeMethodNotAllowed, false},
			{"create: async options on a sync campaign", func() reply {
				return e.do("POST", path+"/campaigns", e.researcher, protocol.CampaignSpec{Name: "x", Dataset: testDataset, Model: "tiny", FragmentSize: 16, BufferSize: 3}, nil)
			}, 400, protocol.CodeBadRequest, false},
			{"create: async with a negative max_staleness", func() reply {
				return e.do("POST", path+"/campaigns", e.researcher, protocol.CampaignSpec{Name: "x", Dataset: testDataset, Model: "tiny", FragmentSize: 16,
					Mode: protocol.ModeAsync, MaxStaleness: -1}, nil)
			}, 400, protocol.CodeBadRequest, false},
			{"create: unknown server optimizer", func() reply {
				return e.do("POST", path+"/campaigns", e.researcher, protocol.CampaignSpec{Name: "x", Dataset: testDataset, Model: "tiny", FragmentSize: 16,
					ServerOptimizer: "lion"}, nil)
			}, 400, protocol.CodeBadRequest, false},
			{"create: server momentum with plain averaging", func() reply {
				return e.do("POST", path+"/campaigns", e.researcher, protocol.CampaignSpec{Name: "x", Dataset: testDataset, Model: "tiny", FragmentSize: 16,
					ServerMomentum: 0.9}, nil)
			}, 400, protocol.CodeBadRequest, false},
			{"create: unknown mode", func() reply {
				return e.do("POST", path+"/campaigns", e.researcher, protocol.CampaignSpec{Name: "x", Dataset: testDataset, Model: "tiny", FragmentSize: 16, Mode: "gossip"}, nil)
			}, 400, protocol.CodeBadRequest, false},
			{"no protocol version", func() reply {
				return e.do("POST", path+"/work", b, protocol.WorkRequest{}, map[string]string{protocol.HeaderVersion: ""})
			}, 400, protocol.CodeBadRequest, false},
			{"unknown work unit", func() reply { return e.upload(b, 999999, goodB, nil) }, 404, protocol.CodeNotFound, false},
			{"another host's work unit", func() reply { return e.upload(h3, wb.ID, goodB, nil) }, 403, protocol.CodeForbidden, false},
			{"heartbeat on another host's work unit", func() reply {
				return e.do("POST", protocol.WorkPath(wb.ID, "heartbeat"), a, protocol.HeartbeatRequest{Progress: 0.5}, nil)
			}, 403, protocol.CodeForbidden, false},
			{"heartbeat progress out of range", func() reply {
				return e.do("POST", protocol.WorkPath(wb.ID, "heartbeat"), b, protocol.HeartbeatRequest{Progress: 2}, nil)
			}, 400, protocol.CodeBadRequest, false},
			{"truncated delta", func() reply { return e.upload(b, wb.ID, goodB[:len(goodB)/2], nil) }, 400, protocol.CodeBadRequest, false},
			{"truncated header", func() reply { return e.upload(b, wb.ID, goodB[:5], nil) }, 400, protocol.CodeBadRequest, false},
			{"oversized delta", func() reply { return e.upload(b, wb.ID, append(bytes.Clone(goodB), make([]byte, 2<<20)...), nil) }, 413, protocol.CodeTooLarge, false},
			{"body does not match its sha256", func() reply {
				return e.upload(b, wb.ID, goodB, map[string]string{protocol.HeaderSHA256: shaHex(good)})
			}, 400, protocol.CodeBadRequest, false},
			{"sha256 header malformed", func() reply {
				return e.upload(b, wb.ID, goodB, map[string]string{protocol.HeaderSHA256: "xyz"})
			}, 400, protocol.CodeBadRequest, false},
			{"samples header missing", func() reply {
				return e.upload(b, wb.ID, goodB, map[string]string{protocol.HeaderSamples: ""})
			}, 400, protocol.CodeBadRequest, false},
			{"samples header negative", func() reply {
				return e.upload(b, wb.ID, goodB, map[string]string{protocol.HeaderSamples: "-5"})
			}, 400, protocol.CodeBadRequest, false},
			{"NaN in the delta", func() reply { return e.upload(b, wb.ID, encode(t, nan, weights.F32), nil) }, 422, protocol.CodeInvalidDelta, true},
			{"wrong tensor shape", func() reply { return e.upload(b, wb.ID, encode(t, wrongShape, weights.F32), nil) }, 422, protocol.CodeInvalidDelta, true},
			{"extra tensor", func() reply { return e.upload(b, wb.ID, encode(t, extra, weights.F32), nil) }, 422, protocol.CodeInvalidDelta, true},
			{"norm over the bound", func() reply { return e.upload(b, wb.ID, encode(t, huge, weights.F32), nil) }, 422, protocol.CodeInvalidDelta, true},
			{"float16 when the campaign wants float32", func() reply { return e.upload(b, wb.ID, f16, nil) }, 422, protocol.CodeInvalidDelta, true},
			{"header not JSON", func() reply { return e.upload(b, wb.ID, badHeader, nil) }, 422, protocol.CodeInvalidDelta, true},
			{"trailing bytes after the data", func() reply { return e.upload(b, wb.ID, append(bytes.Clone(goodB), 1, 2, 3), nil) }, 422, protocol.CodeInvalidDelta, true},
			{"a different result for an accepted unit", func() reply { return e.upload(a, wa.ID, goodB, nil) }, 409, protocol.CodeConflict, false},
			{"unknown blob", func() reply { return e.do("GET", protocol.BlobPath(strings.Repeat("ab", 32)), a, nil, nil) }, 404, protocol.CodeNotFound, false},
			{"blob name not a sha256", func() reply { return e.do("GET", protocol.BlobPath("not-a-sha256"), a, nil, nil) }, 400, protocol.CodeBadRequest, false},
			{"blob without a token", func() reply { return e.do("GET", protocol.BlobPath(c.ModelSHA256), "", nil, nil) }, 401, protocol.CodeUnauthorized, false},
			{"unknown endpoint", func() reply { return e.do("GET", path+"/nothing", a, nil, nil) }, 404, protocol.CodeNotFound, false},
		}
		for _, tc := range cases {
			before := e.snapshot(c.ID)
			r := tc.do()
			if r.status != tc.status || r.code() != tc.code {
				t.Fatalf("%s: HTTP %d %s, want %d %s", tc.name, r.status, r.body, tc.status, tc.code)
			}
			var eb protocol.ErrorBody
			if json.Unmarshal(r.body, &eb); eb.Error == nil || eb.Error.Message == "" {
				t.Fatalf("%s: no error message in %s", tc.name, r.body)
			}
			after := e.snapshot(c.ID)
			if tc.recorded {
				var rb, ra []protocol.RoundInfo
				json.Unmarshal([]byte(before.Rounds), &rb)
				json.Unmarshal([]byte(after.Rounds), &ra)
				if ra[0].Invalid != rb[0].Invalid+1 || after.Results != before.Results+1 {
					t.Fatalf("%s: the invalid result was not recorded: before %+v after %+v", tc.name, rb[0], ra[0])
				}
				ra[0].Invalid = rb[0].Invalid
				fixed, _ := json.Marshal(ra)
				after.Rounds, after.Results, after.Hosts = string(fixed), before.Results, before.Hosts
				after.Campaigns = before.Campaigns
			}
			if after != before {
				t.Fatalf("%s changed state:\nbefore %+v\nafter  %+v", tc.name, before, after)
			}
		}
		// The replay of an accepted result changes nothing and says so.
		before := e.snapshot(c.ID)
		var res protocol.ResultResponse
		e.must(e.upload(a, wa.ID, good, nil), http.StatusOK, &res)
		if !res.Replayed || e.snapshot(c.ID) != before {
			t.Fatalf("replay: %+v, state changed: %v", res, e.snapshot(c.ID) != before)
		}
		// Nothing above spoiled host B's unit: its good result is accepted.
		e.must(e.upload(b, wb.ID, goodB, nil), http.StatusOK, &res)
		rs := e.rounds(c.ID)
		if res.Outcome != protocol.OutcomeAccepted || rs[0].Accepted != 2 || rs[0].Invalid != 7 {
			t.Fatalf("after the bad inputs: %+v, round %+v", res, rs[0])
		}
		var info protocol.HostInfo
		e.must(e.do("GET", protocol.HostSelfPath, b, nil, nil), http.StatusOK, &info)
		if info.ResultsInvalid != 7 || info.ResultsValid != 1 || info.ErrorRate != 7.0/8 || info.Credit <= 0 {
			t.Fatalf("host B's record: %+v, want 7 invalid, 1 valid, error rate 7/8 and some credit", info)
		}
	})
}
