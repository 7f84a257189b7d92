package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/hubproject/hub/config"
	"github.com/hubproject/hub/hub/node"
)

// FuzzDecodeConfig feeds arbitrary YAML to the strict loader with the
// hub's whole configuration (node.Config) as the target, so every section's
// types, validate tags and Validate methods run. Decode must not panic; it
// either fails with config.Errors naming each problem, or succeeds with a
// config that passes Check again and decodes the same way twice. Seeds: the
// shipped configs and testdata/fuzz.
func FuzzDecodeConfig(f *testing.F) {
	paths, _ := filepath.Glob("../configs/*.yaml")
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("nats:\n  listen: 0.0.0.0:4222\n  auth:\n    users:\n      - {name: a, role: publisher, password: x, publish_prefix: events.a}\n"))
	f.Add([]byte("http:\n  tokens:\n    - {name: a, token: 0123456789abcdef0, scopes: [admin], rate_limit: {rps: 1.5}}\n"))
	f.Add([]byte("a: &x {b: *x}\nlog: *x\n"))
	f.Add([]byte("delivery:\n  backoff: &b [1s, 2s]\n  concurrency: {webhook: *b}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// x_file secrets and TLS files are read from the paths given; keep
		// the fuzzer away from devices that never end.
		for _, dev := range []string{"/dev/", "/proc/", "/sys/"} {
			if strings.Contains(string(data), dev) {
				return
			}
		}
		cfg := node.DefaultConfig()
		err := config.Decode(data, &cfg)
		if err != nil {
			var es config.Errors
			if !errors.As(err, &es) {
				t.Fatalf("error is not config.Errors: %T %v", err, err)
			}
			for _, e := range es {
				if e.Reason == "" {
					t.Fatalf("an error without a reason at %q", e.Path)
				}
			}
			return
		}
		if err := config.Check(&cfg); err != nil {
			t.Fatalf("decoded config fails Check: %v", err)
		}
		_ = cfg.Warnings()
		again := node.DefaultConfig()
		if err := config.Decode(data, &again); err != nil {
			t.Fatalf("second decode failed: %v", err)
		}
		a, errA := yaml.Marshal(cfg)
		b, errB := yaml.Marshal(again)
		if errA != nil || errB != nil {
			t.Fatalf("decoded config does not marshal: %v %v", errA, errB)
		}
		if string(a) != string(b) {
			t.Fatalf("two decodes differ:\n%s\n%s", a, b)
		}
	})
}
