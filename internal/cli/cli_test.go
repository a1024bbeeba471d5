package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNewPart(t *testing.T) {
	cases := []struct{ prev, cur, want string }{
		{"", "abc", "abc"},
		{"abc", "abc", ""},
		{"abc", "abcdef", "def"},
		{"abcdef", "cdefgh", "gh"},
		{"xyz", "abc", "abc"},
	}
	for _, c := range cases {
		if got := string(newPart([]byte(c.prev), []byte(c.cur))); got != c.want {
			t.Errorf("newPart(%q, %q) = %q, want %q", c.prev, c.cur, got, c.want)
		}
	}
}

func TestDiskArg(t *testing.T) {
	d, err := diskArg("[shared] images/a.qcow2", "")
	if err != nil || d.Datastore != "shared" || d.Path != "images/a.qcow2" || d.Format != "qcow2" {
		t.Fatalf("%+v %v", d, err)
	}
	d, err = diskArg("/srv/ds/a.img", "")
	if err != nil || d.Datastore != "" || d.Format != "raw" {
		t.Fatalf("%+v %v", d, err)
	}
	if _, err := diskArg("relative.img", ""); err == nil {
		t.Fatal("relative path accepted")
	}
}

func TestContexts(t *testing.T) {
	var out, errOut bytes.Buffer
	e := &env{out: &out, errOut: &errOut, configPath: filepath.Join(t.TempDir(), "c.json")}
	if _, err := e.client(); err == nil || !strings.Contains(err.Error(), "lab up") {
		t.Fatalf("client with no config: %v", err)
	}
	if err := e.setContext("lab-a", "unix:///tmp/a.sock", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client(); err != nil {
		t.Fatalf("client with a context: %v", err)
	}
	if err := e.dropContext("lab-a"); err != nil {
		t.Fatal(err)
	}
	cfg, _ := loadConfig(e.configPath)
	if cfg.Current != "" || len(cfg.Contexts) != 0 {
		t.Fatalf("after drop: %+v", cfg)
	}
}

func TestUnknownCommandFails(t *testing.T) {
	if code := Main([]string{"vm", "create"}); code == 0 {
		t.Fatal("vm create without a name exited 0")
	}
	if code := Main([]string{"nosuch"}); code == 0 {
		t.Fatal("an unknown command exited 0")
	}
}

// The agent's join token comes from exactly one place: a file, the environment, or the
// command line.
func TestJoinTokenSources(t *testing.T) {
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte("gwjoin_0123456789abcdef_secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		flag, file, env, want, err string
	}{
		{file: file, want: "gwjoin_0123456789abcdef_secret"},
		{env: "gwjoin_env_secret", want: "gwjoin_env_secret"},
		{flag: "gwjoin_flag_secret", want: "gwjoin_flag_secret"},
		{},
		{file: file, env: "gwjoin_env_secret", err: "give it one way only"},
		{flag: "x", env: "y", err: "give it one way only"},
		{file: empty, err: "is empty"},
		{file: filepath.Join(t.TempDir(), "missing"), err: "no such file"},
	} {
		got, err := joinToken(c.flag, c.file, c.env)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("joinToken(%+v) = %q, %v; want an error saying %q", c, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("joinToken(%+v) = %q, %v; want %q", c, got, err, c.want)
		}
	}
}
