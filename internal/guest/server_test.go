package guest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newTestServer(t *testing.T, diskPath string) (*httptest.Server, *Memory) {
	t.Helper()
	mem, err := NewMemory(quietLog(), 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pause := NewPauseMeter(time.Millisecond)
	done := make(chan struct{}, 2)
	go func() { mem.Run(ctx); done <- struct{}{} }()
	go func() { pause.Run(ctx); done <- struct{}{} }()
	cfg, err := ParseCmdline("godwit.ip=198.18.1.100/24")
	if err != nil {
		t.Fatal(err)
	}
	var disk *Disk
	if diskPath != "" {
		disk = &Disk{Path: diskPath}
	}
	srv := httptest.NewServer(NewServer(quietLog(), mem, pause, disk, "test-boot-id", cfg).Handler())
	t.Cleanup(func() {
		srv.Close()
		cancel()
		<-done
		<-done
	})
	return srv, mem
}

func do(t *testing.T, method, url string, body []byte) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func getStats(t *testing.T, base string) map[string]any {
	t.Helper()
	code, b := do(t, "GET", base+"/stats", nil)
	if code != 200 {
		t.Fatalf("GET /stats: %d %s", code, b)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("GET /stats: %v: %s", err, b)
	}
	return m
}

func TestServerHealthAndStats(t *testing.T) {
	srv, _ := newTestServer(t, "")
	if code, b := do(t, "GET", srv.URL+"/healthz", nil); code != 200 || string(b) != "ok" {
		t.Errorf("GET /healthz = %d %q", code, b)
	}
	time.Sleep(30 * time.Millisecond)
	s := getStats(t, srv.URL)
	for _, k := range []string{"memory_errors", "max_pause_ms", "uptime_ms", "boot_id", "checked_bytes",
		"clock_backwards", "dirty", "hostname", "ip"} {
		if _, ok := s[k]; !ok {
			t.Errorf("/stats lacks %q", k)
		}
	}
	dirty, _ := s["dirty"].(map[string]any)
	for _, k := range []string{"mib", "rate_mibps", "running", "bytes_written"} {
		if _, ok := dirty[k]; !ok {
			t.Errorf("/stats dirty lacks %q", k)
		}
	}
	if s["boot_id"] != "test-boot-id" || s["ip"] != "198.18.1.100" || s["memory_errors"] != 0.0 {
		t.Errorf("stats = %v", s)
	}
	if s["max_pause_ms"].(float64) <= 0 || s["disk_present"] != false {
		t.Errorf("max_pause_ms = %v, disk_present = %v", s["max_pause_ms"], s["disk_present"])
	}
	if code, b := do(t, "POST", srv.URL+"/stats/reset", nil); code != 200 || !strings.Contains(string(b), "max_pause_ms") {
		t.Errorf("POST /stats/reset = %d %s", code, b)
	}
	if s := getStats(t, srv.URL); s["max_pause_ms"].(float64) > 50 {
		t.Errorf("max_pause_ms right after reset = %v", s["max_pause_ms"])
	}
	if code, _ := do(t, "GET", srv.URL+"/stats/reset", nil); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /stats/reset = %d, want 405", code)
	}
}

func TestServerDirty(t *testing.T) {
	srv, _ := newTestServer(t, "")
	if code, b := do(t, "POST", srv.URL+"/dirty?mib=2&rate=0", nil); code != 200 {
		t.Fatalf("POST /dirty = %d %s", code, b)
	}
	waitFor(t, 5*time.Second, "bytes_written to grow", func() bool {
		d := getStats(t, srv.URL)["dirty"].(map[string]any)
		return d["bytes_written"].(float64) > 10*ChunkSize && d["running"] == true && d["mib"] == 2.0
	})
	if code, b := do(t, "POST", srv.URL+"/dirty?mib=0", nil); code != 200 || !strings.Contains(string(b), `"running": false`) {
		t.Errorf("POST /dirty?mib=0 = %d %s", code, b)
	}
	do(t, "POST", srv.URL+"/dirty?mib=1&rate=5", nil)
	if code, b := do(t, "DELETE", srv.URL+"/dirty", nil); code != 200 || !strings.Contains(string(b), `"rate_mibps": 5`) {
		t.Errorf("DELETE /dirty = %d %s", code, b)
	}
	if d := getStats(t, srv.URL)["dirty"].(map[string]any); d["running"] != false {
		t.Errorf("dirtier still running: %v", d)
	}
	for _, q := range []string{"", "mib=x", "mib=-3", "mib=1&rate=-1", "mib=1&rate=abc"} {
		if code, _ := do(t, "POST", srv.URL+"/dirty?"+q, nil); code != 400 {
			t.Errorf("POST /dirty?%s = %d, want 400", q, code)
		}
	}
	if s := getStats(t, srv.URL); s["memory_errors"] != 0.0 {
		t.Errorf("memory_errors = %v", s["memory_errors"])
	}
}

func TestServerDisk(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	srv, _ := newTestServer(t, path)
	body := bytes.Repeat([]byte("godwit"), 50000)
	if code, b := do(t, "PUT", srv.URL+"/disk/9", body); code != 200 {
		t.Fatalf("PUT /disk/9 = %d %s", code, b)
	}
	if code, b := do(t, "GET", srv.URL+"/disk/9", nil); code != 200 || !bytes.Equal(b, body) {
		t.Errorf("GET /disk/9 = %d, %d bytes", code, len(b))
	}
	if code, b := do(t, "GET", srv.URL+"/disk/10", nil); code != 409 || !strings.Contains(string(b), "no record") {
		t.Errorf("GET of an empty slot = %d %q, want 409", code, b)
	}
	// Corrupt the record on "disk".
	raw, _ := os.ReadFile(path)
	raw[9*DiskSlotSize+DiskHeaderSize] ^= 1
	os.WriteFile(path, raw, 0o600)
	if code, b := do(t, "GET", srv.URL+"/disk/9", nil); code != 409 || !strings.Contains(string(b), "corrupt") {
		t.Errorf("GET of a corrupted slot = %d %q, want 409", code, b)
	}
	for _, slot := range []string{"64", "-1", "x"} {
		if code, _ := do(t, "PUT", srv.URL+"/disk/"+slot, []byte("a")); code != 400 {
			t.Errorf("PUT /disk/%s = %d, want 400", slot, code)
		}
	}
	if code, _ := do(t, "PUT", srv.URL+"/disk/1", make([]byte, DiskMaxBody+1)); code != 413 {
		t.Errorf("oversized PUT = %d, want 413", code)
	}
	if s := getStats(t, srv.URL); s["disk_present"] != true {
		t.Errorf("disk_present = %v", s["disk_present"])
	}

	noDisk, _ := newTestServer(t, filepath.Join(t.TempDir(), "absent"))
	if code, _ := do(t, "GET", noDisk.URL+"/disk/1", nil); code != 503 {
		t.Errorf("GET /disk without a disk = %d, want 503", code)
	}
}
