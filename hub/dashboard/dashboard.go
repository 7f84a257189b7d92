// Package dashboard serves the hub's web dashboard: plain HTML, CSS and
// JavaScript embedded in the binary (no CDN, no build step) at / and /ui/,
// and the two JSON endpoints it polls besides the existing API:
// GET /v1/stats, a digest of the node's metrics, and GET /v1/events, the
// most recent events of the EVENTS stream. Everything else the page shows
// or changes goes through the ordinary API (/v1/dlq, /v1/subscriptions),
// with the API token the user pasted sent as "Authorization: Bearer".
package dashboard

import (
	"embed"
	"io/fs"
	"net/http"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

//go:embed ui
var files embed.FS

// Dashboard serves the page and its endpoints.
type Dashboard struct {
	js      jetstream.JetStream
	metrics prometheus.Gatherer
	log     zerolog.Logger
	ui      fs.FS
}

// Option configures a Dashboard.
type Option func(*Dashboard)

// WithLogger sets the logger.
func WithLogger(l zerolog.Logger) Option { return func(d *Dashboard) { d.log = l } }

// New returns a Dashboard reading events from js and numbers from metrics
// (the node's registry).
func New(js jetstream.JetStream, metrics prometheus.Gatherer, opts ...Option) *Dashboard {
	ui, err := fs.Sub(files, "ui")
	if err != nil { // the directory is embedded above: cannot happen
		panic(err)
	}
	d := &Dashboard{js: js, metrics: metrics, log: zerolog.Nop(), ui: ui}
	for _, o := range opts {
		o(d)
	}
	return d
}

// Mount adds GET / (the page), GET /ui/ (its assets), GET /v1/stats and
// GET /v1/events.
func (d *Dashboard) Mount(a interface {
	Handle(string, http.Handler)
}) {
	a.Handle("GET /{$}", page(http.HandlerFunc(d.index)))
	a.Handle("GET /ui/", page(http.StripPrefix("/ui/", http.FileServerFS(d.ui))))
	a.Handle("GET /v1/stats", http.HandlerFunc(d.httpStats))
	a.Handle("GET /v1/events", http.HandlerFunc(d.httpEvents))
}

func (d *Dashboard) index(w http.ResponseWriter, r *http.Request) {
	http.ServeFileFS(w, r, d.ui, "index.html")
}

// page sets the headers of the dashboard's own files: nothing but the
// hub's origin may be loaded or framed, and the browser revalidates the
// files (they change with the binary).
func page(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-cache")
		h.ServeHTTP(w, r)
	})
}
