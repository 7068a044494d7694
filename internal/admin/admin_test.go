package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/anyedge/anyedge/cluster"
)

// fakeAPI is a cluster.API that returns fixed views and records calls.
type fakeAPI struct {
	nodes    []cluster.NodeView
	topo     cluster.TopologyView
	caps     []cluster.CapView
	tags     []cluster.TagView
	err      error // returned by the state-changing calls
	removed  []uint32
	setCalls []SetTagActiveRequest
}

func (f *fakeAPI) Nodes() []cluster.NodeView      { return f.nodes }
func (f *fakeAPI) Topology() cluster.TopologyView { return f.topo }
func (f *fakeAPI) Caps() []cluster.CapView        { return f.caps }
func (f *fakeAPI) Tags() []cluster.TagView        { return f.tags }
func (f *fakeAPI) RemoveNode(id uint32) error     { f.removed = append(f.removed, id); return f.err }
func (f *fakeAPI) SetTagActive(tag string, node uint32) error {
	f.setCalls = append(f.setCalls, SetTagActiveRequest{Tag: tag, Node: node})
	return f.err
}

func sampleAPI() *fakeAPI {
	nodes := []cluster.NodeView{
		{ID: 1, Region: "lab", ClusterAddr: "127.0.0.1:56001", State: "self", Seed: true, Synced: []string{"location"}},
		{ID: 2, Region: "lab", ClusterAddr: "127.0.0.1:56002", State: "up", Direct: true, NextHop: 2, Hops: 1, RTT: 420 * time.Microsecond},
	}
	return &fakeAPI{
		nodes: nodes,
		topo: cluster.TopologyView{
			Self:   1,
			Nodes:  nodes,
			Links:  []cluster.LinkView{{A: 1, B: 2, State: "up", RTT: 420 * time.Microsecond}},
			Routes: []cluster.RouteView{{Dst: 2, NextHop: 2, Path: []uint32{2}}},
		},
		caps: []cluster.CapView{{Name: "location", State: "synced", Donor: 2, Records: 10, Attempts: 1}},
		tags: []cluster.TagView{{Name: "lab-vip", Owner: 1, Active: true, Eligible: []uint32{1, 2}, Quorum: true}},
	}
}

type call struct {
	method, path, body, token string
}

func do(t *testing.T, h http.Handler, c call) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestReads(t *testing.T) {
	api := sampleAPI()
	s := New(api, WithToken("t0ken"))
	for _, tt := range []struct {
		path string
		want any
	}{
		{"/v1/cluster/nodes", api.nodes},
		{"/v1/cluster/topology", api.topo},
		{"/v1/cluster/caps", api.caps},
		{"/v1/cluster/tags", api.tags},
	} {
		t.Run(tt.path, func(t *testing.T) {
			// Reads need no token even when one is configured.
			rec := do(t, s, call{method: "GET", path: tt.path})
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			want, _ := json.Marshal(tt.want)
			if !jsonEqual(t, rec.Body.Bytes(), want) {
				t.Errorf("body\n got: %s\nwant: %s", rec.Body, want)
			}
		})
	}
}

// TestEmptyViewsAreLists pins [] rather than null for an empty cluster, so
// that clients (edgectl, jq scripts) need no null checks.
func TestEmptyViewsAreLists(t *testing.T) {
	s := New(&fakeAPI{})
	for path, want := range map[string]string{
		"/v1/cluster/nodes":    `[]`,
		"/v1/cluster/caps":     `[]`,
		"/v1/cluster/tags":     `[]`,
		"/v1/cluster/topology": `{"self":0,"nodes":[],"links":[],"routes":[]}`,
	} {
		rec := do(t, s, call{method: "GET", path: path})
		if !jsonEqual(t, rec.Body.Bytes(), []byte(want)) {
			t.Errorf("%s = %s, want %s", path, rec.Body, want)
		}
	}
}

func TestHealthz(t *testing.T) {
	rec := do(t, New(&fakeAPI{}), call{method: "GET", path: "/healthz"})
	if rec.Code != http.StatusOK || strings.TrimSpace(rec.Body.String()) != "ok" {
		t.Errorf("healthz = %d %q", rec.Code, rec.Body)
	}
}

func TestMetricsServesInjectedRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "anyedge_test_gauge", Help: "A test gauge."})
	g.Set(42)
	reg.MustRegister(g)
	rec := do(t, New(&fakeAPI{}, WithGatherer(reg)), call{method: "GET", path: "/metrics"})
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "anyedge_test_gauge 42") {
		t.Errorf("metrics = %d\n%s", rec.Code, rec.Body)
	}
}

func TestWrites(t *testing.T) {
	refused := errors.New("node 2 is up: only a down node can be removed")
	tests := []struct {
		name       string
		token      string // configured on the server
		apiErr     error
		call       call
		wantStatus int
		wantBody   string // JSON
		wantRemove []uint32
		wantSet    []SetTagActiveRequest
	}{
		{name: "remove, no token configured",
			call:       call{method: "POST", path: "/v1/cluster/remove", body: `{"node": 3}`},
			wantStatus: 200, wantBody: `{"status":"ok"}`, wantRemove: []uint32{3}},
		{name: "remove with the right token", token: "t0ken",
			call:       call{method: "POST", path: "/v1/cluster/remove", body: `{"node": 3}`, token: "t0ken"},
			wantStatus: 200, wantBody: `{"status":"ok"}`, wantRemove: []uint32{3}},
		{name: "remove without a token", token: "t0ken",
			call:       call{method: "POST", path: "/v1/cluster/remove", body: `{"node": 3}`},
			wantStatus: 401, wantBody: `{"error":"missing or wrong bearer token"}`},
		{name: "remove with a wrong token", token: "t0ken",
			call:       call{method: "POST", path: "/v1/cluster/remove", body: `{"node": 3}`, token: "t0ke"},
			wantStatus: 401, wantBody: `{"error":"missing or wrong bearer token"}`},
		{name: "remove node 0",
			call:       call{method: "POST", path: "/v1/cluster/remove", body: `{"node": 0}`},
			wantStatus: 400, wantBody: `{"error":"\"node\" is required (1..4294967295)"}`},
		{name: "remove with a bad body",
			call:       call{method: "POST", path: "/v1/cluster/remove", body: `{"node": "three"}`},
			wantStatus: 400, wantBody: `{"error":"bad request body: json: cannot unmarshal string into Go struct field RemoveRequest.node of type uint32"}`},
		{name: "remove with an unknown field",
			call:       call{method: "POST", path: "/v1/cluster/remove", body: `{"nod": 3}`},
			wantStatus: 400, wantBody: `{"error":"bad request body: json: unknown field \"nod\""}`},
		{name: "remove refused by the cluster", apiErr: refused,
			call:       call{method: "POST", path: "/v1/cluster/remove", body: `{"node": 2}`},
			wantStatus: 409, wantBody: `{"error":"node 2 is up: only a down node can be removed"}`, wantRemove: []uint32{2}},
		{name: "remove an unknown node", apiErr: fmt.Errorf("%w 9", cluster.ErrUnknownNode),
			call:       call{method: "POST", path: "/v1/cluster/remove", body: `{"node": 9}`},
			wantStatus: 404, wantBody: `{"error":"unknown node 9"}`, wantRemove: []uint32{9}},
		{name: "remove while not running", apiErr: cluster.ErrNotRunning,
			call:       call{method: "POST", path: "/v1/cluster/remove", body: `{"node": 9}`},
			wantStatus: 503, wantBody: `{"error":"cluster: node not running"}`, wantRemove: []uint32{9}},
		{name: "set active", token: "t0ken",
			call:       call{method: "POST", path: "/v1/cluster/tags/active", body: `{"tag": "lab-vip", "node": 2}`, token: "t0ken"},
			wantStatus: 200, wantBody: `{"status":"ok"}`, wantSet: []SetTagActiveRequest{{"lab-vip", 2}}},
		{name: "clear override with node 0",
			call:       call{method: "POST", path: "/v1/cluster/tags/active", body: `{"tag": "lab-vip"}`},
			wantStatus: 200, wantBody: `{"status":"ok"}`, wantSet: []SetTagActiveRequest{{"lab-vip", 0}}},
		{name: "set active without a tag",
			call:       call{method: "POST", path: "/v1/cluster/tags/active", body: `{"node": 2}`},
			wantStatus: 400, wantBody: `{"error":"\"tag\" is required"}`},
		{name: "set active without a token", token: "t0ken",
			call:       call{method: "POST", path: "/v1/cluster/tags/active", body: `{"tag": "lab-vip", "node": 2}`},
			wantStatus: 401, wantBody: `{"error":"missing or wrong bearer token"}`},
		{name: "wrong method",
			call:       call{method: "GET", path: "/v1/cluster/remove"},
			wantStatus: 405, wantBody: `{"error":"method GET not allowed, use POST"}`},
		{name: "unknown path",
			call:       call{method: "GET", path: "/v1/nope"},
			wantStatus: 404, wantBody: `{"error":"no such endpoint: /v1/nope"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := sampleAPI()
			api.err = tt.apiErr
			var logs bytes.Buffer
			s := New(api, WithToken(tt.token), WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
			rec := do(t, s, tt.call)
			if rec.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d", rec.Code, tt.wantStatus)
			}
			if !jsonEqual(t, rec.Body.Bytes(), []byte(tt.wantBody)) {
				t.Errorf("body = %s, want %s", rec.Body, tt.wantBody)
			}
			if !equal(api.removed, tt.wantRemove) {
				t.Errorf("RemoveNode calls = %v, want %v", api.removed, tt.wantRemove)
			}
			if !equal(api.setCalls, tt.wantSet) {
				t.Errorf("SetTagActive calls = %v, want %v", api.setCalls, tt.wantSet)
			}
			if rec.Code == 401 && rec.Header().Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate")
			}
			if rec.Code == 200 && !strings.Contains(logs.String(), "by operator") {
				t.Errorf("operator action not logged; logs:\n%s", logs.String())
			}
		})
	}
}

func TestBodyTooLarge(t *testing.T) {
	body := `{"tag": "` + strings.Repeat("x", maxBody) + `"}`
	rec := do(t, New(&fakeAPI{}), call{method: "POST", path: "/v1/cluster/tags/active", body: body})
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("status = %d, want 413", rec.Code)
	}
}

// TestOverHTTP runs the server on a real listener, as the daemon does.
func TestOverHTTP(t *testing.T) {
	defer goleak.VerifyNone(t)
	srv := httptest.NewServer(New(sampleAPI()))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/v1/cluster/tags")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"lab-vip"`) {
		t.Errorf("GET tags = %d %s", resp.StatusCode, b)
	}
	srv.Client().CloseIdleConnections()
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Errorf("not JSON: %s", a)
		return false
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatalf("bad want JSON %s: %v", b, err)
	}
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return bytes.Equal(ja, jb)
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
