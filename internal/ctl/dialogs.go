package ctl

import (
	"context"
	"fmt"
	"io"

	"github.com/anyedge/anyedge/edge/dialog"
)

// dialogs prints the node's call state: counts by state and role, and the
// users with the most active calls.
func (c *cli) dialogs(ctx context.Context, _ []string) error {
	return show(ctx, c, "/v1/dialogs", dialogsTable)
}

func dialogsTable(w io.Writer, s dialog.Summary) {
	synced := "synced"
	if !s.Synced {
		synced = "not synced"
	}
	limit := "off"
	if s.PerUser > 0 {
		limit = fmt.Sprint(s.PerUser)
	}
	fmt.Fprintf(w, "node %d (region %s, %s): %d calls held of max %d; per-user limit %s\n\n", s.Node, s.Region, synced, s.Total, s.Max, limit)
	fmt.Fprintln(w, "STATE\tHOME\tREPLICA")
	for _, st := range []string{"early", "confirmed", "terminated"} {
		fmt.Fprintf(w, "%s\t%d\t%d\n", st, s.Home[st], s.Replica[st])
	}
	if len(s.TopUsers) == 0 {
		return
	}
	fmt.Fprintln(w, "\nUSER\tACTIVE CALLS")
	for _, u := range s.TopUsers {
		fmt.Fprintf(w, "%s\t%d\n", u.User, u.Calls)
	}
}
