package protocol

import (
	"fmt"
	"time"
)

// Researcher API added in version 5 (2026-12-02). Every call needs "Authorization:
// Bearer <researcher token>". A researcher sees and acts only on the campaigns they
// created; a campaign of another researcher answers 403 "forbidden" on every
// /campaigns/{id} route, and GET /campaigns lists only the caller's own. A researcher
// with the admin role sees and acts on every campaign.

// HostsPath is GET /api/v1/hosts: every attached host as []HostSummary, newest contact
// first.
const HostsPath = APIPrefix + "/hosts"

// HostSummary is one host as researchers see it.
type HostSummary struct {
	HostID         int64     `json:"host_id"`
	Name           string    `json:"name"`
	OS             string    `json:"os"`
	Arch           string    `json:"arch"`
	Cores          int       `json:"cores"`
	GFLOPS         float64   `json:"gflops"`
	Credit         float64   `json:"credit"`
	ResultsValid   int       `json:"results_valid"`
	ResultsInvalid int       `json:"results_invalid"`
	LastContact    time.Time `json:"last_contact"`
	Working        int       `json:"working"` // work units it holds now
}

// WorkUnitsPath returns GET /api/v1/campaigns/{id}/rounds/{round}/work-units: every
// issue of the round's slots as []WorkUnitInfo, in issue order.
func WorkUnitsPath(campaign int64, round int) string {
	return fmt.Sprintf("%s/rounds/%d/work-units", CampaignPath(campaign, ""), round)
}

// WorkUnitInfo is one issued work unit and how far its host has got.
type WorkUnitInfo struct {
	ID            int64      `json:"id"`
	Round         int        `json:"round"`
	Slot          int        `json:"slot"`
	Attempt       int        `json:"attempt"`
	HostID        int64      `json:"host_id"`
	HostName      string     `json:"host_name"`
	State         string     `json:"state"` // issued, expired, accepted, late, closed, aborted
	FragmentCount int        `json:"fragment_count"`
	Progress      float64    `json:"progress"` // 0..1, from the host's heartbeats
	IssuedAt      time.Time  `json:"issued_at"`
	Deadline      time.Time  `json:"deadline"`
	FinishedAt    *time.Time `json:"finished_at,omitempty"`
}

// ModelsPath is GET /api/v1/models: the model specs a campaign may name, as
// []ModelInfo.
const ModelsPath = APIPrefix + "/models"

// ModelInfo is one named model spec.
type ModelInfo struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Layers      int    `json:"layers"`
}

// Model download formats.
const (
	FormatSafetensors = "safetensors" // the weights as the grid stores them
	FormatONNX        = "onnx"        // exported by the server with the campaign's class names
)

// ModelPath returns GET /api/v1/campaigns/{id}/model?format=F[&round=R]: the result
// model of round R (default: the campaign's newest model) as safetensors or ONNX. A
// round without a result model yet answers 404.
func ModelPath(campaign int64, round int, format string) string {
	p := CampaignPath(campaign, "model") + "?format=" + format
	if round >= 0 {
		p += fmt.Sprintf("&round=%d", round)
	}
	return p
}

// ClassifyPath returns POST /api/v1/campaigns/{id}/classify: a multipart form with one
// image in the field "image" (PNG or JPEG, at most MaxClassifyBytes), classified by the
// campaign's newest model. Answers a ClassifyResponse; an image smaller than the
// campaign's fragment size or not an image answers 400.
func ClassifyPath(campaign int64) string { return CampaignPath(campaign, "classify") }

// MaxClassifyBytes bounds the image a classify call uploads.
const MaxClassifyBytes = 16 << 20

// ClassifyResponse gives the class probabilities of one image: the mean of its
// fragments' softmax outputs, as the evaluation computes image accuracy.
type ClassifyResponse struct {
	ModelSHA256   string    `json:"model_sha256"`
	Classes       []string  `json:"classes"`
	Probabilities []float64 `json:"probabilities"` // in Classes order, summing to 1
	Top           string    `json:"top"`
	Fragments     int       `json:"fragments"`
	Engine        string    `json:"engine"` // "go" or "onnxruntime"
	Millis        float64   `json:"millis"` // inference time on the server
}

// DatasetsPath is GET /api/v1/datasets: the datasets on the dataset store as
// []DatasetInfo, sorted by name.
const DatasetsPath = APIPrefix + "/datasets"

// DatasetInfo is one dataset as indexed by the dataset store.
type DatasetInfo struct {
	Name            string            `json:"name"`
	ManifestVersion string            `json:"manifest_version,omitempty"`
	Images          int               `json:"images"`
	Classes         []ClassCount      `json:"classes"`
	Quarantined     []QuarantinedFile `json:"quarantined,omitempty"`
	// Error says why the dataset cannot be used yet (no manifest: an upload not
	// indexed yet); empty when it can.
	Error string `json:"error,omitempty"`
}

// ClassCount is one class of a dataset and its number of images.
type ClassCount struct {
	Name   string `json:"name"`
	Images int    `json:"images"`
}

// QuarantinedFile is an uploaded file the store refused, and why.
type QuarantinedFile struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}
