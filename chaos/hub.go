package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BuildHub builds cmd/hub into dir and returns the binary's path. race
// builds it with the race detector (slower to run, and a detected race
// makes the hub exit with status 66).
func BuildHub(ctx context.Context, dir string, race bool) (string, error) {
	bin := filepath.Join(dir, "hub")
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "github.com/hubproject/hub/cmd/hub")
	out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build hub: %w\n%s", err, out)
	}
	return bin, nil
}

// FreePort returns a loopback port that was free a moment ago. The hub's
// NATS port must stay the same across restarts so that publishers
// reconnect to it; the hub binds it with SO_REUSEADDR (Go's default), so a
// restart after SIGKILL can bind it again at once.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// WriteConfig writes a hub config file into a fresh temporary dir.
func WriteConfig(t testing.TB, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hub.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// BaseConfig is the log, nats and http sections: JSON logs, NATS on the
// given loopback port (0: random) with the store in storeDir, HTTP on a
// random port.
func BaseConfig(storeDir string, natsPort int) string {
	return fmt.Sprintf(`
log: {level: info, format: json}
nats: {listen: "127.0.0.1:%d", store_dir: %q}
http: {listen: "127.0.0.1:0"}
`, natsPort, storeDir)
}

// Hub is a running `hub serve` subprocess.
type Hub struct {
	// Name labels the hub in ledgers ("hub", or a cluster node's name).
	Name    string
	cmd     *exec.Cmd
	NATSURL string
	HTTPURL string
	done    chan struct{} // closed when the process has exited
	err     error         // its exit status, once done is closed

	mu     sync.Mutex
	tail   []string          // the last log lines
	counts map[string]int    // warn and error log lines by level and message
	first  map[string]string // the first such line of each
}

const tailLines = 200

var digits = regexp.MustCompile(`[0-9]+`)

// StartHub runs `bin serve -config cfgPath` and waits for its "hub is
// ready" log line. The process is killed on t.Cleanup if still running.
func StartHub(t testing.TB, bin, cfgPath string) *Hub {
	t.Helper()
	h, err := StartHubErr(t, bin, cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// StartHubErr is StartHub for other goroutines (cluster nodes start
// together, each waiting for a quorum of the others): it returns errors.
func StartHubErr(t testing.TB, bin, cfgPath string) (*Hub, error) {
	cmd := exec.Command(bin, "serve", "-config", cfgPath)
	// If the test process dies (a -timeout panic skips t.Cleanup), the hub
	// dies with it instead of running on.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	h := &Hub{Name: "hub", cmd: cmd, done: make(chan struct{}), counts: map[string]int{}, first: map[string]string{}}
	ready := make(chan map[string]any, 1)
	var logs io.Reader = stderr
	var logFile *os.File
	if dir := os.Getenv("HUB_CHAOS_LOGS"); dir != "" {
		// Keep every log line: HUB_CHAOS_LOGS=dir writes <dir>/hub-<pid>.log.
		if f, err := os.Create(filepath.Join(dir, fmt.Sprintf("hub-%d.log", cmd.Process.Pid))); err == nil {
			logFile, logs = f, io.TeeReader(stderr, f)
		}
	}
	go func() {
		h.readLogs(logs, ready)
		if logFile != nil {
			_ = logFile.Close()
		}
		h.err = cmd.Wait()
		close(h.done)
	}()
	t.Cleanup(func() {
		select {
		case <-h.done:
		default:
			_ = cmd.Process.Kill()
			<-h.done
		}
	})
	select {
	case m := <-ready:
		h.NATSURL, _ = m["nats"].(string)
		h.HTTPURL, _ = m["http"].(string)
		return h, nil
	case <-h.done:
		return nil, fmt.Errorf("hub exited before ready: %v\n%s", h.err, h.Tail())
	case <-time.After(3 * time.Minute): // a cluster node waits for its peers
		return nil, fmt.Errorf("hub not ready after 3 minutes\n%s", h.Tail())
	}
}

// readLogs keeps the tail of the hub's JSON log and counts warnings and
// errors by message until stderr closes. It always reads to the end, so a
// chatty hub never blocks on a full pipe.
func (h *Hub) readLogs(r io.Reader, ready chan<- map[string]any) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			h.logLine(bytes.TrimRight(line, "\n"), ready)
		}
		if err != nil {
			return
		}
	}
}

func (h *Hub) logLine(line []byte, ready chan<- map[string]any) {
	var m map[string]any
	_ = json.Unmarshal(line, &m)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.tail) == tailLines {
		h.tail = h.tail[1:]
	}
	h.tail = append(h.tail, string(line))
	msg, _ := m["message"].(string)
	switch m["level"] {
	case "warn", "error", "fatal", "panic":
		// Counted by message with numbers masked, so that "attempt 7" and
		// "attempt 8" of one thing are one key.
		k := fmt.Sprintf("%s: %s", m["level"], digits.ReplaceAllString(msg, "N"))
		if h.counts[k]++; h.counts[k] == 1 {
			h.first[k] = string(line)
		}
	}
	if msg == "hub is ready" {
		select {
		case ready <- m:
		default:
		}
	}
}

// Tail is the end of the hub's log.
func (h *Hub) Tail() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.tail, "\n")
}

// LogCounts returns warn and error log lines counted by level and message.
func (h *Hub) LogCounts() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make(map[string]int, len(h.counts))
	for k, v := range h.counts {
		out[k] = v
	}
	return out
}

// FirstLine is the first log line counted under key (see LogCounts).
func (h *Hub) FirstLine(key string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.first[key]
}

// PID is the hub's process id.
func (h *Hub) PID() int { return h.cmd.Process.Pid }

// Done is closed when the process has exited.
func (h *Hub) Done() <-chan struct{} { return h.done }

// Kill sends SIGKILL and waits for the process to be gone.
func (h *Hub) Kill(t testing.TB) {
	t.Helper()
	if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.done:
	case <-time.After(30 * time.Second):
		t.Fatal("hub still running 30s after SIGKILL")
	}
}

// Stop sends SIGTERM and waits for a clean exit.
func (h *Hub) Stop(t testing.TB) {
	t.Helper()
	if err := StopAll(h); err != nil {
		t.Error(err)
	}
}

// StopAll sends SIGTERM to every hub at once, as an operator stopping a
// cluster would, and waits for each to exit. It returns an error for each
// that did not exit cleanly within 90s.
func StopAll(hubs ...*Hub) error {
	var errs []error
	for _, h := range hubs {
		if err := h.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", h.Name, err))
		}
	}
	deadline := time.After(90 * time.Second)
	for _, h := range hubs {
		select {
		case <-h.done:
			if h.err != nil {
				errs = append(errs, fmt.Errorf("%s exited with %v on SIGTERM\n%s", h.Name, h.err, h.Tail()))
			}
		case <-deadline:
			errs = append(errs, fmt.Errorf("%s did not stop within 90s of SIGTERM\n%s", h.Name, h.Tail()))
		}
	}
	return errors.Join(errs...)
}

// Memory is the hub's resident set size now and its peak (VmRSS and VmHWM
// from /proc/<pid>/status), in bytes.
func (h *Hub) Memory() (rss, peak int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.PID()))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		f := strings.Fields(v) // "12345 kB"
		if len(f) != 2 || f[1] != "kB" {
			return 0, 0, fmt.Errorf("%s: unexpected %q", k, v)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: %w", k, err)
		}
		if k == "VmRSS" {
			rss = n << 10
		} else {
			peak = n << 10
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("no VmRSS in /proc/%d/status", h.PID())
	}
	return rss, peak, nil
}
