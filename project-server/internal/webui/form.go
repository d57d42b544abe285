package webui

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/texgrid/texgrid/configs"
	"github.com/texgrid/texgrid/project-server/internal/api"
	"github.com/texgrid/texgrid/project-server/internal/auth"
	"github.com/texgrid/texgrid/project-server/internal/scheduler"
	"github.com/texgrid/texgrid/project-server/protocol"
)

// field is one input of the new-campaign form. Key is the protocol.CampaignSpec JSON
// name the scheduler's messages start with ("hyper.epochs"), so a refusal lands next
// to the field it is about.
type field struct {
	Name, Key, Label, Type, Step, Hint string
	Options                            []option
	Value                              string
	Error                              string
	set                                func(cs *protocol.CampaignSpec, v string) error
}

type option struct{ Value, Label string }

// intField reads a whole number of at least 1. The API takes 0 as "the default"; the
// form shows the default instead, so a 0 typed in is an error, not a silent default.
func intField(name, key, label, hint string, def int, p func(cs *protocol.CampaignSpec) *int) field {
	return field{Name: name, Key: key, Label: label, Type: "number", Step: "1", Hint: hint, Value: strconv.Itoa(def),
		set: func(cs *protocol.CampaignSpec, v string) error {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return fmt.Errorf("%q is not a whole number; use %s", v, hint)
			}
			if n < 1 {
				return fmt.Errorf("%d is too small; use %s", n, hint)
			}
			*p(cs) = n
			return nil
		}}
}

// floatField reads a number; when positive is set it must be above 0 (a 0 would
// silently become the default, as intField explains).
func floatField(name, key, label, hint string, def float64, positive bool, p func(cs *protocol.CampaignSpec) *float64) field {
	return field{Name: name, Key: key, Label: label, Type: "number", Step: "any", Hint: hint, Value: strconv.FormatFloat(def, 'g', -1, 64),
		set: func(cs *protocol.CampaignSpec, v string) error {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return fmt.Errorf("%q is not a number; use %s", v, hint)
			}
			if positive && !(f > 0) {
				return fmt.Errorf("%g is too small; use %s", f, hint)
			}
			*p(cs) = f
			return nil
		}}
}

// campaignFields is the form with its defaults (the scheduler's).
func campaignFields() []field {
	var models []option
	for _, n := range configs.ModelNames() {
		models = append(models, option{n, n})
	}
	return []field{
		{Name: "name", Key: "name", Label: "Name", Type: "text", Hint: "1 to 200 characters",
			set: func(cs *protocol.CampaignSpec, v string) error { cs.Name = strings.TrimSpace(v); return nil }},
		{Name: "dataset", Key: "dataset", Label: "Dataset", Type: "text", Hint: "a dataset indexed by the FTP store",
			set: func(cs *protocol.CampaignSpec, v string) error { cs.Dataset = strings.TrimSpace(v); return nil }},
		{Name: "model", Key: "model", Label: "Model", Hint: "a built-in model spec", Options: models, Value: "tcnn-small",
			set: func(cs *protocol.CampaignSpec, v string) error { cs.Model = v; return nil }},
		intField("fragment_size", "fragment_size", "Fragment size (px)", "8 to 4096", scheduler.DefaultFragmentSize,
			func(cs *protocol.CampaignSpec) *int { return &cs.FragmentSize }),
		intField("fragments_min", "fragments_min", "Fragments per work unit, min", "at least 1", scheduler.DefaultFragmentsMin,
			func(cs *protocol.CampaignSpec) *int { return &cs.FragmentsMin }),
		intField("fragments_max", "fragments_max", "Fragments per work unit, max", "min to 1000000", scheduler.DefaultFragmentsMax,
			func(cs *protocol.CampaignSpec) *int { return &cs.FragmentsMax }),
		intField("work_units_per_round", "work_units_per_round", "Work units per round", "1 to 100000", scheduler.DefaultWUsPerRound,
			func(cs *protocol.CampaignSpec) *int { return &cs.WorkUnitsPerRound }),
		floatField("quorum", "quorum", "Quorum", fmt.Sprintf("%g to %g of the work units", scheduler.MinQuorum, scheduler.MaxQuorum), scheduler.DefaultQuorum, true,
			func(cs *protocol.CampaignSpec) *float64 { return &cs.Quorum }),
		intField("rounds", "rounds", "Rounds", "1 to 100000", scheduler.DefaultRounds,
			func(cs *protocol.CampaignSpec) *int { return &cs.Rounds }),
		intField("epochs", "hyper.epochs", "Epochs per work unit", "1 to 1000", scheduler.DefaultEpochs,
			func(cs *protocol.CampaignSpec) *int { return &cs.Hyper.Epochs }),
		floatField("learning_rate", "hyper.learning_rate", "Learning rate", "above 0, below 100", scheduler.DefaultLR, true,
			func(cs *protocol.CampaignSpec) *float64 { return &cs.Hyper.LearningRate }),
		floatField("lr_decay", "hyper.lr_decay", "Learning-rate decay per round", "in (0, 1]; 1 keeps it constant", 1, true,
			func(cs *protocol.CampaignSpec) *float64 { return &cs.Hyper.LRDecay }),
		intField("batch_size", "hyper.batch_size", "Batch size", "1 to 65536", scheduler.DefaultBatchSize,
			func(cs *protocol.CampaignSpec) *int { return &cs.Hyper.BatchSize }),
		floatField("momentum", "hyper.momentum", "Momentum", "above 0, below 1", scheduler.DefaultMomentum, true,
			func(cs *protocol.CampaignSpec) *float64 { return &cs.Hyper.Momentum }),
		floatField("weight_decay", "hyper.weight_decay", "Weight decay", "0 or more, below 1", 0, false,
			func(cs *protocol.CampaignSpec) *float64 { return &cs.Hyper.WeightDecay }),
		{Name: "delta_dtype", Key: "delta_dtype", Label: "Delta encoding", Hint: "how volunteers send their updates",
			Options: []option{{"float32", "float32"}, {"float16", "float16 (half the upload)"}}, Value: "float32",
			set: func(cs *protocol.CampaignSpec, v string) error { cs.DeltaDType = v; return nil }},
		{Name: "mode", Key: "mode", Label: "Mode", Hint: "sync: rounds closed by a quorum; async: buffered, staleness-weighted updates (default buffer and staleness settings)",
			Options: []option{{protocol.ModeSync, "sync"}, {protocol.ModeAsync, "async"}}, Value: protocol.ModeSync,
			set: func(cs *protocol.CampaignSpec, v string) error { cs.Mode = v; return nil }},
		{Name: "start", Key: "start", Label: "Start at once", Type: "checkbox", Value: "1", Hint: "or start it from its page",
			set: func(cs *protocol.CampaignSpec, v string) error { cs.Start = v != ""; return nil }},
	}
}

type formData struct {
	Fields   []field
	Errors   map[string]string
	Datasets []protocol.DatasetInfo
}

// datasets lists the store's datasets for the picker; nil when the source cannot list
// them (the dataset field is then typed in).
func (h *Handler) datasets(r *http.Request) []protocol.DatasetInfo {
	if h.cfg.Datasets == nil {
		return nil
	}
	ds, err := api.Datasets(r.Context(), h.cfg.Datasets)
	if err != nil {
		h.cfg.Log.Warn("list datasets for the campaign form", "err", err)
		return nil
	}
	return ds
}

// withDatasets turns the dataset field into a picker of the indexed datasets.
func withDatasets(fields []field, ds []protocol.DatasetInfo) {
	for i := range fields {
		if fields[i].Name != "dataset" {
			continue
		}
		for _, d := range ds {
			if d.Error == "" {
				fields[i].Options = append(fields[i].Options, option{d.Name, fmt.Sprintf("%s (%d classes, %d images)", d.Name, len(d.Classes), d.Images)})
			}
		}
		if len(fields[i].Options) > 0 && fields[i].Value == "" {
			fields[i].Value = fields[i].Options[0].Value
		}
	}
}

func (h *Handler) newCampaign(w http.ResponseWriter, r *http.Request, me *auth.Researcher) {
	d := formData{Fields: campaignFields(), Errors: map[string]string{}, Datasets: h.datasets(r)}
	withDatasets(d.Fields, d.Datasets)
	h.render(w, r, http.StatusOK, "new", "New campaign", me, d)
}

// parseCampaign reads the form into a spec and checks it with the scheduler's own
// rules, field by field: a refused field is reset to its default and the check runs
// again, so every bad field gets its sentence, not only the first.
func parseCampaign(r *http.Request) (protocol.CampaignSpec, []field, map[string]string) {
	fields := campaignFields()
	errs := map[string]string{}
	var cs protocol.CampaignSpec
	for i := range fields {
		f := &fields[i]
		v := r.PostFormValue(f.Name)
		f.Value = v
		if err := f.set(&cs, v); err != nil {
			f.Error = err.Error()
		}
	}
	byKey := map[string]*field{}
	for i := range fields {
		byKey[fields[i].Key] = &fields[i]
	}
	for range fields {
		probe := cs
		err := scheduler.Defaults(&probe)
		if err == nil {
			break
		}
		msg := scheduler.AsError(err).Message
		f := fieldOf(msg, byKey)
		if f == nil {
			errs["form"] = msg
			break
		}
		if f.Error == "" {
			f.Error = msg
		}
		// Reset the refused field so the next pass finds the next bad one.
		_ = f.set(&cs, fieldDefault(f.Key))
		if f.Key == "fragments_min" { // the min/max rule names both
			_ = byKey["fragments_max"].set(&cs, fieldDefault("fragments_max"))
		}
	}
	for _, f := range fields {
		if f.Error != "" {
			errs[f.Name] = f.Error
		}
	}
	return cs, fields, errs
}

// fieldDefault is a value that passes a field's check, to look past it.
func fieldDefault(key string) string {
	for _, f := range campaignFields() {
		if f.Key == key {
			if f.Value == "" {
				return "x"
			}
			return f.Value
		}
	}
	return ""
}

// fieldOf finds the field a scheduler message is about by its leading JSON name.
func fieldOf(msg string, byKey map[string]*field) *field {
	word, _, _ := strings.Cut(msg, " ")
	word = strings.TrimSuffix(word, ":")
	return byKey[word]
}

func (h *Handler) createCampaign(w http.ResponseWriter, r *http.Request, me *auth.Researcher) {
	cs, fields, errs := parseCampaign(r)
	if len(errs) == 0 {
		c, err := h.cfg.Sched.CreateCampaign(r.Context(), me.ID, cs)
		if err == nil {
			http.Redirect(w, r, fmt.Sprintf("/campaigns/%d", c.ID), http.StatusSeeOther)
			return
		}
		e := scheduler.AsError(err)
		if e.Code == protocol.CodeInternal {
			h.internal(w, r, err)
			return
		}
		byKey := map[string]*field{}
		for i := range fields {
			byKey[fields[i].Key] = &fields[i]
		}
		if f := fieldOf(e.Message, byKey); f != nil {
			f.Error = e.Message
		} else {
			errs["form"] = e.Message
		}
	}
	d := formData{Fields: fields, Errors: errs, Datasets: h.datasets(r)}
	withDatasets(d.Fields, d.Datasets)
	h.render(w, r, http.StatusUnprocessableEntity, "new", "New campaign", me, d)
}
