// Command receiver is an example webhook receiver: it verifies the hub's
// Standard Webhooks signature on every request, logs what arrived, and
// dedups on webhook-id. It also accepts the demo's SMS gateway calls.
//
//	WEBHOOK_SECRET=whsec_... go run ./examples/receiver -listen 127.0.0.1:9000
package main

import (
	"encoding/json"
	"flag"
	"io"
	"log"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hubproject/hub/subscribers/webhook/verify"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9000", "address to listen on")
	flag.Parse()
	secret := os.Getenv("WEBHOOK_SECRET")
	if secret == "" {
		log.Fatal("set WEBHOOK_SECRET to the subscription's whsec_ secret")
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	mux := http.NewServeMux()
	// Webhooks: the middleware rejects bad or stale signatures with 401.
	mux.Handle("POST /hooks", verify.Middleware(strings.Fields(secret), verify.DefaultTolerance, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("webhook-id")
		var ev struct {
			ID   string `json:"id"`
			Type string `json:"type"`
		}
		body, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(body, &ev)
		mu.Lock()
		dup := seen[id]
		seen[id] = true
		mu.Unlock()
		log.Printf("verified webhook webhook-id=%s event=%s type=%s duplicate=%v", id, ev.ID, ev.Type, dup)
		w.WriteHeader(http.StatusNoContent)
	})))
	// The demo's "generic" SMS provider posts here.
	mux.HandleFunc("POST /sms", func(w http.ResponseWriter, r *http.Request) {
		var m struct {
			To   string `json:"to"`
			Body string `json:"body"`
		}
		_ = json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&m)
		log.Printf("sms to=%s body=%q", m.To, m.Body)
		w.WriteHeader(http.StatusAccepted)
	})
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Printf("receiver listening on http://%s (POST /hooks, POST /sms)", *listen)
	log.Fatal(srv.ListenAndServe())
}
