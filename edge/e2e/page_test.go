package e2e_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/natsrtc/signal/edge/stack"
)

// The demo page and the WebSocket share the edge's port: a request without
// an Upgrade header gets the page.
func TestPageServedBesideWebSocket(t *testing.T) {
	s := stack.Start(t, stack.Options{})
	base := "http" + strings.TrimPrefix(s.Edges[0].URL, "ws")
	base = strings.TrimSuffix(base, "/")

	do := func(method, path string, hdr ...string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}

	files := []struct{ path, ctype, contains string }{
		{"/", "text/html; charset=utf-8", `<script type="module" src="app.js"`},
		{"/index.html", "text/html; charset=utf-8", `data-testid="status"`},
		{"/app.js", "text/javascript; charset=utf-8", "window.signalDemo"},
		{"/signal.js", "text/javascript; charset=utf-8", "export class Signal"},
		{"/style.css", "text/css; charset=utf-8", ".videos"},
	}
	for _, f := range files {
		t.Run(f.path, func(t *testing.T) {
			resp, body := do("GET", f.path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			if got := resp.Header.Get("Content-Type"); got != f.ctype {
				t.Errorf("Content-Type %q, want %q", got, f.ctype)
			}
			if got := resp.Header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control %q, want no-cache", got)
			}
			if !strings.Contains(body, f.contains) {
				t.Errorf("body lacks %q", f.contains)
			}
			etag := resp.Header.Get("ETag")
			if etag == "" {
				t.Fatal("no ETag")
			}
			// A reload revalidates and gets 304 while the page is the same.
			resp, body = do("GET", f.path, "If-None-Match", etag)
			if resp.StatusCode != http.StatusNotModified || body != "" {
				t.Errorf("revalidation: status %d, %d bytes; want 304, none", resp.StatusCode, len(body))
			}
			resp, body = do("HEAD", f.path)
			if resp.StatusCode != http.StatusOK || body != "" || resp.Header.Get("Content-Type") != f.ctype {
				t.Errorf("HEAD: status %d, type %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
			}
		})
	}

	for _, p := range []string{"/nope", "/web/app.js", "/screenshot.png", "/../go.mod", "/app.js/", "/SIGNAL_JS.md", "/signal.js/"} {
		if resp, _ := do("GET", p); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", p, resp.StatusCode)
		}
	}
	for _, m := range []string{"POST", "PUT", "DELETE"} {
		resp, _ := do(m, "/")
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s /: status %d, Allow %q; want 405, GET, HEAD", m, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}

	// The same port still speaks WebSocket.
	c := login(t, s.Edges[0].URL, "alice")
	ctx, cancel := context.WithTimeout(context.Background(), step)
	defer cancel()
	if err := c.Leave("nobody"); err != nil {
		t.Fatal(err)
	}
	m, err := c.Recv(ctx)
	if err != nil || m.Type != "error" {
		t.Fatalf("after the page requests: %v %s; want an error frame", err, m.Raw)
	}
}
