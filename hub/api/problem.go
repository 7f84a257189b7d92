package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/hubproject/hub/hub"
)

// Problem is an RFC 9457 problem details body.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Errors names each invalid field and why.
	Errors []hub.FieldError `json:"errors,omitempty"`
	// Extra members (e.g. "branch" for gather failures).
	Extra map[string]any `json:"-"`
}

// MarshalJSON flattens Extra into the top level.
func (p Problem) MarshalJSON() ([]byte, error) {
	type plain Problem
	b, err := json.Marshal(plain(p))
	if err != nil || len(p.Extra) == 0 {
		return b, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for k, v := range p.Extra {
		if _, taken := m[k]; !taken {
			m[k] = v
		}
	}
	return json.Marshal(m)
}

// ProblemContentType is the media type of problem responses.
const ProblemContentType = "application/problem+json"

// problemTypes gives each status a stable type URI and title.
var problemTypes = map[int][2]string{
	http.StatusBadRequest:            {"invalid-request", "Invalid request"},
	http.StatusUnauthorized:          {"unauthorized", "Unauthorized"},
	http.StatusForbidden:             {"forbidden", "Forbidden"},
	http.StatusNotFound:              {"not-found", "Not found"},
	http.StatusMethodNotAllowed:      {"method-not-allowed", "Method not allowed"},
	http.StatusConflict:              {"conflict", "Conflict"},
	http.StatusRequestEntityTooLarge: {"too-large", "Request too large"},
	http.StatusUnsupportedMediaType:  {"unsupported-media-type", "Unsupported media type"},
	http.StatusTooManyRequests:       {"rate-limited", "Too many requests"},
	http.StatusInternalServerError:   {"internal", "Internal error"},
	http.StatusBadGateway:            {"bad-gateway", "Bad gateway"},
	http.StatusServiceUnavailable:    {"unavailable", "Service unavailable"},
	http.StatusGatewayTimeout:        {"gateway-timeout", "Gateway timeout"},
}

// NewProblem builds a problem for status with a detail line.
func NewProblem(status int, detail string, errs ...hub.FieldError) Problem {
	t, ok := problemTypes[status]
	if !ok {
		t = [2]string{"error", http.StatusText(status)}
	}
	return Problem{Type: "urn:hub:problem:" + t[0], Title: t[1], Status: status, Detail: detail, Errors: errs}
}

// WriteProblem writes p as application/problem+json.
func WriteProblem(w http.ResponseWriter, p Problem) {
	w.Header().Set("Content-Type", ProblemContentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}

// Error writes a problem with only a status and detail.
func Error(w http.ResponseWriter, status int, detail string, errs ...hub.FieldError) {
	WriteProblem(w, NewProblem(status, detail, errs...))
}

// RetryLater writes a 503 or 429 with Retry-After.
func RetryLater(w http.ResponseWriter, status int, after time.Duration, detail string) {
	secs := int(after.Round(time.Second) / time.Second)
	if secs < 1 {
		secs = 1
	}
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	Error(w, status, detail)
}

// WriteJSON writes v with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
