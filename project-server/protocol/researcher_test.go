package protocol

import "testing"

func TestResearcherPaths(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, got, want string }{
		{"campaign", CampaignPath(7, ""), "/api/v1/campaigns/7"},
		{"campaign action", CampaignPath(7, ActionPause), "/api/v1/campaigns/7/pause"},
		{"work units", WorkUnitsPath(7, 2), "/api/v1/campaigns/7/rounds/2/work-units"},
		{"newest model", ModelPath(7, -1, FormatONNX), "/api/v1/campaigns/7/model?format=onnx"},
		{"round model", ModelPath(7, 0, FormatSafetensors), "/api/v1/campaigns/7/model?format=safetensors&round=0"},
		{"classify", ClassifyPath(7), "/api/v1/campaigns/7/classify"},
	}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, tc.got, tc.want)
		}
	}
}
