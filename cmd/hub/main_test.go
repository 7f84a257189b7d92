package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var hubBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hubbin")
	if err != nil {
		panic(err)
	}
	hubBin = filepath.Join(dir, "hub")
	args := []string{"build", "-o", hubBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	if out, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build hub: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// hubProc is a running `hub serve`.
type hubProc struct {
	cmd     *exec.Cmd
	natsURL string
	httpURL string
	logs    *syncBuffer
	done    chan error
}

// syncBuffer is a bytes.Buffer safe to write from the log reader while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hub.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func baseConfig(store string) string {
	return fmt.Sprintf(`
log: {level: info, format: json}
http: {listen: "127.0.0.1:0"}
nats:
  listen: "127.0.0.1:0"
  store_dir: %q
`, store)
}

// startHub runs `hub serve` and waits for its "hub is ready" log line.
func startHub(t *testing.T, cfgPath string) *hubProc {
	t.Helper()
	p, err := startHubErr(t, cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startHubErr is startHub for use from other goroutines: it reports
// instead of failing the test.
func startHubErr(t *testing.T, cfgPath string) (*hubProc, error) {
	cmd := exec.Command(hubBin, "serve", "-config", cfgPath)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &hubProc{cmd: cmd, logs: &syncBuffer{}, done: make(chan error, 1)}
	ready := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Bytes()
			p.logs.Write(append(line, '\n'))
			var m map[string]any
			if json.Unmarshal(line, &m) == nil && m["message"] == "hub is ready" {
				ready <- m
			}
		}
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-p.done
		}
	})
	select {
	case m := <-ready:
		p.natsURL, _ = m["nats"].(string)
		p.httpURL, _ = m["http"].(string)
	case err := <-p.done:
		return nil, fmt.Errorf("hub exited before ready: %v\n%s", err, p.logs)
	case <-time.After(3 * time.Minute):
		return nil, fmt.Errorf("hub not ready\n%s", p.logs)
	}
	return p, nil
}

func (p *hubProc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("hub exited with %v\n%s", err, p.logs)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("hub did not stop on SIGTERM")
	}
}

func runHub(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, hubBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

type ack struct {
	ID        string `json:"id"`
	Sequence  uint64 `json:"sequence"`
	Duplicate bool   `json:"duplicate"`
}

func TestServePublishAndShutdown(t *testing.T) {
	store := t.TempDir()
	p := startHub(t, writeConfig(t, baseConfig(store)))
	if !strings.HasPrefix(p.natsURL, "nats://127.0.0.1:") || !strings.HasPrefix(p.httpURL, "http://127.0.0.1:") {
		t.Fatalf("ready line lacks addresses: nats=%q http=%q", p.natsURL, p.httpURL)
	}
	// Door 1: the CLI over NATS, twice with one id.
	var acks [2]ack
	for i := range acks {
		out, errOut, code := runHub(t, "publish", "-server", p.natsURL, "-type", "order.created", "-id", "cli-1", "-data", `{"id":1}`)
		if code != 0 {
			t.Fatalf("publish exit %d: %s", code, errOut)
		}
		if err := json.Unmarshal([]byte(out), &acks[i]); err != nil {
			t.Fatalf("publish output %q", out)
		}
	}
	if acks[0].Duplicate || !acks[1].Duplicate || acks[0].Sequence != acks[1].Sequence {
		t.Fatalf("dedup over NATS: %+v", acks)
	}
	// Door 2: HTTP, twice with one id.
	for i, wantDup := range []bool{false, true} {
		resp, err := http.Post(p.httpURL+"/v1/events", "application/json", strings.NewReader(`{"type":"order.created","id":"http-1"}`))
		if err != nil {
			t.Fatal(err)
		}
		var a ack
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err := json.Unmarshal(b, &a); err != nil || resp.StatusCode != 202 || a.Duplicate != wantDup {
			t.Fatalf("http publish %d: %d %s", i, resp.StatusCode, b)
		}
	}
	// Bad input on the CLI is a usage error.
	if _, errOut, code := runHub(t, "publish", "-server", p.natsURL, "-type", "order..created"); code != 1 || !strings.Contains(errOut, "type") {
		t.Fatalf("bad type: exit %d %s", code, errOut)
	}
	if _, _, code := runHub(t, "publish", "-server", p.natsURL); code != 2 {
		t.Fatalf("missing -type: exit %d", code)
	}
	p.stop(t)
	if !strings.Contains(p.logs.String(), "hub stopped") {
		t.Fatalf("no clean stop in logs:\n%s", p.logs)
	}

	// Restart on the same store: the events are still there (sequence 3 next).
	p = startHub(t, writeConfig(t, baseConfig(store)))
	out, errOut, code := runHub(t, "publish", "-server", p.natsURL, "-type", "order.created", "-id", "after-restart")
	var a ack
	if code != 0 || json.Unmarshal([]byte(out), &a) != nil || a.Sequence != 3 {
		t.Fatalf("after restart: exit %d %s %s", code, out, errOut)
	}
	p.stop(t)
}

func TestValidate(t *testing.T) {
	out, errOut, code := runHub(t, "validate", "-config", "../../configs/hub.yaml")
	if code != 0 || strings.TrimSpace(out) != "configuration is valid" {
		t.Fatalf("shipped config: exit %d %q %q", code, out, errOut)
	}
	t.Setenv("SMTP_PASSWORD", "x")
	t.Setenv("TWILIO_TOKEN", "x")
	t.Setenv("CRM_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if out, errOut, code := runHub(t, "validate", "-config", "../../configs/production.yaml"); code != 0 {
		t.Fatalf("production config: exit %d %q %q", code, out, errOut)
	}
	bad := writeConfig(t, `
nats: {listen: "0.0.0.0:4222", store_dir: ./x, sync: sometimes, bogus: 1}
events: {duplicate_window: 5, max_event_size: 12XB}
`)
	_, errOut, code = runHub(t, "validate", "-config", bad)
	if code != 1 {
		t.Fatalf("bad config: exit %d", code)
	}
	for _, want := range []string{"nats.bogus: unknown key", `events.duplicate_window: invalid duration "5"`, `events.max_event_size: invalid size "12XB"`} {
		if !strings.Contains(errOut, want) {
			t.Errorf("validate output lacks %q:\n%s", want, errOut)
		}
	}
	bad2 := writeConfig(t, "nats: {listen: \"0.0.0.0:4222\", store_dir: ./x, sync: sometimes}\n")
	_, errOut, _ = runHub(t, "validate", "-config", bad2)
	for _, want := range []string{"nats.sync: must be one of: default, always", "nats.listen: \"0.0.0.0:4222\" is not a loopback address"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("validate output lacks %q:\n%s", want, errOut)
		}
	}
	if _, _, code := runHub(t, "nosuch"); code != 2 {
		t.Fatalf("unknown command exit %d", code)
	}
	if out, _, code := runHub(t, "version"); code != 0 || !strings.HasPrefix(out, "hub ") {
		t.Fatalf("version: %d %q", code, out)
	}
}
