package webhook

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/hubproject/hub/hub"
	"github.com/hubproject/hub/hub/hubtest"
)

// TestConformance runs the suite every channel must pass.
func TestConformance(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("/permanent", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusUnprocessableEntity) })
	mux.HandleFunc("/retry", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	mux.HandleFunc("/slow", func(_ http.ResponseWriter, r *http.Request) {
		// The server notices a client hang-up only after the body is read.
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	at := func(path string) func(*testing.T) *hub.Delivery {
		return func(t *testing.T) *hub.Delivery { return newDelivery(t, srv.URL+path) }
	}
	hubtest.Run(t, hubtest.Suite{
		New: func(t *testing.T) hub.Channel {
			// The breaker is off so failures in one case do not defer the next.
			return newSender(t, func(c *Config) { c.Breaker.Enabled = false })
		},
		OK:        at("/ok"),
		Permanent: at("/permanent"),
		Retryable: at("/retry"),
		Slow:      at("/slow"),
	})
}
