package server_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/texgrid/texgrid/project-server/client"
	"github.com/texgrid/texgrid/project-server/internal/auth"
	"github.com/texgrid/texgrid/project-server/protocol"
)

// TestOwnership: a researcher sees and acts only on their own campaigns (403 on
// another's, which is left as it was); an admin sees and acts on all; an unknown
// campaign is still 404.
func TestOwnership(t *testing.T) {
	backends(t, func(t *testing.T, dsn func(*testing.T, string) string) {
		e := newEnv(t, dsn)
		ctx := context.Background()
		mine := e.createCampaign(protocol.CampaignSpec{Name: "ada's", Rounds: 2})
		_, otherTok, err := e.srv.Sched.AddResearcher(ctx, "grace")
		if err != nil {
			t.Fatal(err)
		}
		adminID, adminTok, err := e.srv.Sched.AddResearcher(ctx, "root")
		if err != nil {
			t.Fatal(err)
		}
		if err := (&auth.People{DB: e.srv.DB}).SetRole(ctx, adminID, auth.RoleAdmin); err != nil {
			t.Fatal(err)
		}
		other := client.New(e.ts.URL, otherTok, nil)
		admin := client.New(e.ts.URL, adminTok, nil)
		theirs, err := other.CreateCampaign(ctx, protocol.CampaignSpec{Name: "grace's", Dataset: testDataset, Model: "tiny",
			FragmentSize: 16, FragmentsMin: 10, FragmentsMax: 20, Rounds: 2})
		if err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name   string
			call   func() error
			status int // 0 = success
		}{
			{"owner reads", func() error { _, err := e.api().Campaign(ctx, mine.ID); return err }, 0},
			{"other reads", func() error { _, err := other.Campaign(ctx, mine.ID); return err }, http.StatusForbidden},
			{"other reads rounds", func() error { _, err := other.Rounds(ctx, mine.ID); return err }, http.StatusForbidden},
			{"other starts", func() error { _, err := other.Act(ctx, mine.ID, protocol.ActionStart); return err }, http.StatusForbidden},
			{"other stops", func() error { _, err := other.Act(ctx, mine.ID, protocol.ActionStop); return err }, http.StatusForbidden},
			{"owner reads other's", func() error { _, err := e.api().Campaign(ctx, theirs.ID); return err }, http.StatusForbidden},
			{"unknown campaign", func() error { _, err := other.Campaign(ctx, 9999); return err }, http.StatusNotFound},
			{"admin reads", func() error { _, err := admin.Rounds(ctx, mine.ID); return err }, 0},
			{"admin starts", func() error { _, err := admin.Act(ctx, theirs.ID, protocol.ActionStart); return err }, 0},
		}
		for _, tc := range cases {
			err := tc.call()
			if tc.status == 0 && err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			if tc.status != 0 {
				var ce *client.Error
				if !errors.As(err, &ce) || ce.Status != tc.status {
					t.Errorf("%s: got %v, want HTTP %d", tc.name, err, tc.status)
				}
				if tc.status == http.StatusForbidden && ce != nil && ce.Code != protocol.CodeForbidden {
					t.Errorf("%s: code %q, want %q", tc.name, ce.Code, protocol.CodeForbidden)
				}
			}
		}
		if got := e.campaign(mine.ID); got.State != protocol.StateDraft {
			t.Errorf("another researcher's refused start and stop left the campaign %s, want draft", got.State)
		}
		lists := []struct {
			name string
			c    *client.Client
			want []int64
		}{
			{"owner", e.api(), []int64{mine.ID}},
			{"other", other, []int64{theirs.ID}},
			{"admin", admin, []int64{mine.ID, theirs.ID}},
		}
		for _, l := range lists {
			cs, err := l.c.Campaigns(ctx)
			if err != nil {
				t.Fatalf("%s lists: %v", l.name, err)
			}
			var got []int64
			for _, c := range cs {
				got = append(got, c.ID)
			}
			if len(got) != len(l.want) || (len(got) > 0 && (got[0] != l.want[0] || got[len(got)-1] != l.want[len(l.want)-1])) {
				t.Errorf("%s lists campaigns %v, want %v", l.name, got, l.want)
			}
		}
	})
}
