package edge

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"net/http"
	"strings"
	"time"
)

// The demo page: plain HTML, CSS and JavaScript, no build step. It speaks
// to the WebSocket on the host and port it was loaded from, through
// signal.js, the browser client module that apps may import from any edge
// (/signal.js). Only the files listed here are served (edge/web also holds
// the screenshot of the browser test and signal.js's notes, which the
// binary does not need).
//
//go:embed web/index.html web/app.js web/signal.js web/style.css
var webFS embed.FS

// pageFile is one embedded file, ready to serve.
type pageFile struct {
	name  string // for http.ServeContent (not used for sniffing: the type is set)
	ctype string
	etag  string
	data  []byte
}

// pageFiles maps a request path to its file. Built once, at init, from
// webFS; a file missing from the embed is a build error, not a 404.
var pageFiles = func() map[string]*pageFile {
	files := []struct{ path, file, ctype string }{
		{"/", "index.html", "text/html; charset=utf-8"},
		{"/index.html", "index.html", "text/html; charset=utf-8"},
		{"/app.js", "app.js", "text/javascript; charset=utf-8"},
		{"/signal.js", "signal.js", "text/javascript; charset=utf-8"},
		{"/style.css", "style.css", "text/css; charset=utf-8"},
	}
	m := make(map[string]*pageFile, len(files))
	for _, f := range files {
		data, err := webFS.ReadFile("web/" + f.file)
		if err != nil {
			panic("edge: embedded page: " + err.Error())
		}
		sum := sha256.Sum256(data)
		m[f.path] = &pageFile{
			name:  f.file,
			ctype: f.ctype,
			etag:  `"` + hex.EncodeToString(sum[:8]) + `"`,
			data:  data,
		}
	}
	return m
}()

// pageCSP keeps the page to its own files: scripts and styles from this
// origin only (no inline code), and WebSocket connections (ws: or wss:, for
// browsers whose 'self' does not cover them).
const pageCSP = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; " +
	"media-src 'self' blob: mediastream:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"

// servePage answers every request that is not a WebSocket upgrade: the demo
// page and its files for GET and HEAD, 404 for any other path, 405 for any
// other method. Responses carry "Cache-Control: no-cache" (a browser
// revalidates, and gets 304 through the ETag when nothing changed), so a new
// edge version is picked up on reload.
func (e *Edge) servePage(w http.ResponseWriter, r *http.Request) {
	f, ok := pageFiles[r.URL.Path]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.ctype)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", f.etag)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if strings.HasPrefix(f.ctype, "text/html") {
		h.Set("Content-Security-Policy", pageCSP)
	}
	// ServeContent handles HEAD, If-None-Match (304) and ranges. The zero
	// time leaves Last-Modified out: the ETag identifies the version.
	http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(f.data))
}
