package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// client calls edged's admin API.
type client struct {
	base  *url.URL
	token string
	http  *http.Client
}

func newClient(admin, token string, timeout time.Duration) (*client, error) {
	if !strings.Contains(admin, "://") {
		admin = "http://" + admin // "127.0.0.1:9090" is what admin.listen says
	}
	u, err := url.Parse(admin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("bad -admin URL %q: want http://HOST:PORT", admin)
	}
	return &client{base: u, token: token, http: &http.Client{Timeout: timeout}}, nil
}

// get fetches path and returns the response body, which is JSON.
func (c *client) get(ctx context.Context, path string) ([]byte, error) {
	return c.do(ctx, http.MethodGet, path, nil)
}

// post sends body as JSON to path and returns the response body.
func (c *client) post(ctx context.Context, path string, body any) ([]byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	return c.do(ctx, http.MethodPost, path, b)
}

func (c *client) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	resp, b, err := c.roundTrip(ctx, method, path, body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, apiError(method, path, resp, b)
	}
	return b, nil
}

// getAny fetches path and returns the status and body whatever the status
// (for /readyz, whose 503 is an answer, not a failure).
func (c *client) getAny(ctx context.Context, path string) (int, []byte, error) {
	resp, b, err := c.roundTrip(ctx, http.MethodGet, path, nil)
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, b, nil
}

// roundTrip does one call and reads the whole reply; the response's body
// is closed.
func (c *client) roundTrip(ctx context.Context, method, path string, body []byte) (*http.Response, []byte, error) {
	// The path may carry a query ("/v1/cps/top?limit=x"), which JoinPath
	// would escape.
	p, q, _ := strings.Cut(path, "?")
	u := c.base.JoinPath(p)
	u.RawQuery = q
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, c.unreachable(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: reading the reply: %w", method, path, err)
	}
	return resp, b, nil
}

// unreachable explains a transport error in terms of what to check.
func (c *client) unreachable(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // the URL is in our message already
	}
	hint := "is edged running? -admin (or EDGECTL_ADMIN) must match its admin.listen"
	if ue != nil && ue.Timeout() {
		hint = "edged did not answer in time; try a longer -timeout"
	}
	return fmt.Errorf("cannot reach edged at %s: %v\n  (%s)", c.base, err, hint)
}

// apiError turns an error reply into "POST /v1/cluster/remove: 409 Conflict:
// reason", using the {"error": "..."} body when there is one.
func apiError(method, path string, resp *http.Response, body []byte) error {
	var e struct {
		Error string `json:"error"`
	}
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	err := fmt.Sprintf("%s %s: %s", method, path, resp.Status)
	if msg != "" {
		err += ": " + msg
	}
	if resp.StatusCode == http.StatusUnauthorized {
		err += "\n  (pass the admin token with -token or EDGECTL_TOKEN)"
	}
	return errors.New(err)
}
