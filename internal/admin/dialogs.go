package admin

import (
	"net/http"
	"strconv"

	"github.com/anyedge/anyedge/edge/dialog"
)

// Dialogs is what GET /v1/dialogs needs from the call-state service
// (*dialog.Service is one).
type Dialogs interface {
	Summary(top int) dialog.Summary
}

// WithDialogs serves GET /v1/dialogs[?top=N]: calls held by state and
// role (home, replica), the table's bound, and the N (default 10) users
// with the most active calls. Without it (no dialog section) the path is
// not found.
func WithDialogs(d Dialogs) Option {
	return func(s *Server) {
		s.handle("GET", "/v1/dialogs", func(w http.ResponseWriter, r *http.Request) {
			n := defaultTopN
			if q := r.URL.Query().Get("top"); q != "" {
				v, err := strconv.Atoi(q)
				if err != nil || v < 0 || v > maxTopN {
					writeError(w, http.StatusBadRequest, "top must be 0.."+strconv.Itoa(maxTopN))
					return
				}
				n = v
			}
			sum := d.Summary(n)
			if sum.TopUsers == nil {
				sum.TopUsers = []dialog.UserCount{}
			}
			writeJSON(w, http.StatusOK, sum)
		})
	}
}
