package metrics

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"
)

// GatherPattern is the pattern the gather door is mounted on; requests to it
// also feed hub_gather_duration_seconds.
const GatherPattern = "/v1/gather/{route}"

// Middleware counts and times every request by method, route pattern and
// status code. The pattern is the ServeMux pattern that served the request
// (r.Pattern, set by the mux on the request it is given), never the raw
// path, so ids in paths cannot create series; a request no pattern matched
// is "unmatched". Wrap the handler that holds the mux, and pass the same
// *http.Request down (a middleware in between that replaces r with
// r.WithContext hides the pattern from this one).
func (m *Metrics) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			// Count a panicking handler as a 500, then let net/http see
			// the panic as before.
			p := recover()
			took := time.Since(start).Seconds()
			code := sw.status
			switch {
			case p != nil && code == 0:
				code = http.StatusInternalServerError
			case code == 0:
				code = http.StatusOK
			}
			pattern := r.Pattern
			if pattern == "" {
				pattern = "unmatched"
			}
			method := methodLabel(r.Method)
			codeLabel := strconv.Itoa(code)
			m.httpRequests.WithLabelValues(method, pattern, codeLabel).Inc()
			m.httpDuration.WithLabelValues(method, pattern).Observe(took)
			if r.Pattern == GatherPattern {
				m.gatherLatency.WithLabelValues(m.routes.value(r.PathValue("route")), codeLabel).Observe(took)
			}
			if p != nil {
				panic(p)
			}
		}()
		next.ServeHTTP(sw, r)
	})
}

// methodLabel bounds the method label to the standard methods.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "OTHER"
}

// statusWriter remembers the status code. It passes Flush and Hijack on
// and lets http.ResponseController find the writer underneath.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if h, ok := w.ResponseWriter.(http.Hijacker); ok {
		return h.Hijack()
	}
	return nil, nil, errors.New("metrics: the response writer cannot be hijacked")
}

// Unwrap is for http.ResponseController.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
