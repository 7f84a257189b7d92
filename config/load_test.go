package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type inner struct {
	StoreDir string   `yaml:"store_dir" validate:"required"`
	Sync     string   `yaml:"sync" validate:"oneof=default always"`
	Wait     Duration `yaml:"wait" validate:"gt=0"`
	Size     ByteSize `yaml:"size"`
	Password Secret   `yaml:"password"`
}

type item struct {
	ID    string `yaml:"id" validate:"required"`
	Count int    `yaml:"count" validate:"gte=0"`
}

type testConfig struct {
	NATS    inner    `yaml:"nats"`
	Enabled bool     `yaml:"enabled"`
	Items   []item   `yaml:"items" validate:"dive"`
	Ports   []int    `yaml:"ports"`
	Ratio   float64  `yaml:"ratio"`
	Tags    []string `yaml:"tags"`
}

func (c *testConfig) Validate() error {
	var errs Errors
	seen := map[string]bool{}
	for i, it := range c.Items {
		if seen[it.ID] {
			errs.Add(fmt.Sprintf("items[%d].id", i), "duplicate id %q", it.ID)
		}
		seen[it.ID] = true
	}
	return errs.Err()
}

func defaults() testConfig {
	return testConfig{NATS: inner{StoreDir: "./data", Sync: "default", Wait: Duration(time.Second)}}
}

func TestDecodeKeepsDefaultsAndParses(t *testing.T) {
	t.Setenv("HUB_TEST_DIR", "/var/hub")
	t.Setenv("HUB_TEST_PW", "s3cret")
	c := defaults()
	err := Decode([]byte(`
nats:
  store_dir: ${HUB_TEST_DIR}/js
  size: 256KiB
  password_env: HUB_TEST_PW
enabled: yes
items: [{id: a, count: 2}]
ports: [4222, "${HUB_TEST_PORT:-8080}"]
ratio: 0.5
`), &c)
	if err != nil {
		t.Fatal(err)
	}
	if c.NATS.StoreDir != "/var/hub/js" || c.NATS.Sync != "default" || c.NATS.Wait.D() != time.Second ||
		c.NATS.Size != 256<<10 || c.NATS.Password.Value() != "s3cret" || !c.Enabled ||
		len(c.Items) != 1 || c.Items[0].Count != 2 || c.Ports[1] != 8080 || c.Ratio != 0.5 {
		t.Fatalf("decoded %+v", c)
	}
	if s := fmt.Sprintf("%v %+v %#v", c.NATS.Password, c.NATS, c.NATS.Password); strings.Contains(s, "s3cret") {
		t.Fatalf("secret printed: %s", s)
	}
}

func TestSecretFromFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(p, []byte("filepw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := defaults()
	if err := Decode([]byte("nats:\n  password_file: "+p+"\n"), &c); err != nil {
		t.Fatal(err)
	}
	if c.NATS.Password.Value() != "filepw" {
		t.Fatalf("password %q", c.NATS.Password.Value())
	}
}

func TestDecodeErrorsNameThePath(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown key", "nats:\n  stor_dir: x\n", []string{`nats.stor_dir: unknown key (did you mean "store_dir"?)`}},
		{"unknown top key", "bogus: 1\n", []string{"bogus: unknown key"}},
		{"bad duration", "nats:\n  wait: 5\n", []string{`nats.wait: invalid duration "5"`}},
		{"bad duration word", "nats:\n  wait: soon\n", []string{`nats.wait: invalid duration "soon"`}},
		{"negative duration", "nats:\n  wait: -1s\n", []string{"nats.wait: duration \"-1s\" must not be negative"}},
		{"bad size", "nats:\n  size: 12XB\n", []string{`nats.size: invalid size "12XB"`}},
		{"bad bool", "enabled: maybe\n", []string{`enabled: must be true or false, not "maybe"`}},
		{"bad int in list", "ports: [1, x]\n", []string{`ports[1]: must be an integer, not "x"`}},
		{"map for scalar", "ratio: {a: 1}\n", []string{"ratio: must be a single value, not a mapping"}},
		{"scalar for list", "tags: x\n", []string{"tags: must be a list"}},
		{"required", "nats:\n  store_dir: \"\"\n", []string{"nats.store_dir: required"}},
		{"oneof", "nats:\n  sync: sometimes\n", []string{"nats.sync: must be one of: default, always"}},
		{"gt zero", "nats:\n  wait: 0s\n", []string{"nats.wait: must be more than 0"}},
		{"list item", "items: [{count: -1}]\n", []string{"items[0].count: must be at least 0", "items[0].id: required"}},
		{"cross-field", "items: [{id: a}, {id: a}]\n", []string{`items[1].id: duplicate id "a"`}},
		{"missing env", "nats:\n  store_dir: ${HUB_TEST_NOPE}\n", []string{"nats.store_dir: environment variable HUB_TEST_NOPE is not set"}},
		{"missing secret env", "nats:\n  password_env: HUB_TEST_NOPE\n", []string{"nats.password_env: environment variable HUB_TEST_NOPE is not set"}},
		{"both secret forms", "nats:\n  password: a\n  password_env: X\n", []string{"nats.password_env: set either password or password_env, not both"}},
		{"duplicate key", "nats:\n  sync: default\n  sync: always\n", []string{"nats.sync: duplicate key"}},
		{"two errors", "nats:\n  wait: x\nbogus: 1\n", []string{"nats.wait: invalid duration", "bogus: unknown key"}},
		{"bad yaml", "nats: [\n", []string{"invalid YAML"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := defaults()
			err := Decode([]byte(c.yaml), &cfg)
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("want Errors, got %v", err)
			}
			msg := err.Error()
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not contain %q", msg, w)
				}
			}
		})
	}
}

func TestParseByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"1024": 1024, "256KiB": 256 << 10, "1MB": 1e6, "1 MiB": 1 << 20, "10GiB": 10 << 30, "5k": 5 << 10} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "abc", "-1", "1.5MB", "99999999999999999999GiB"} {
		if _, err := ParseByteSize(bad); err == nil {
			t.Errorf("ParseByteSize(%q) accepted", bad)
		}
	}
}

func TestRedactURLs(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":                      "nats://127.0.0.1:4222",
		"nats://user:pass@a:4222, nats://tok@b:4222": "nats://redacted@a:4222,nats://redacted@b:4222",
		"tls://x:4222,nats://u:p@y:4222":             "tls://x:4222,nats://redacted@y:4222",
		"nats://u:p%zz@host":                         "redacted",
	} {
		if got := RedactURLs(in); got != want || strings.Contains(got, "pass") || strings.Contains(got, "tok@") {
			t.Errorf("RedactURLs(%q) = %q, want %q", in, got, want)
		}
	}
}
