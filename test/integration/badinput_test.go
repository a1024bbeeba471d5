package integration

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/godwit/godwit/internal/api"
	"github.com/godwit/godwit/internal/netdev"
)

// TestBadInput sends invalid requests through the API and the CLI and checks that each
// gets a clear 4xx (or a non-zero exit) and that nothing is left half-created.
func TestBadInput(t *testing.T) {
	l := newLab(t, 1)

	var ok api.VM
	l.RunJSON(&ok, "vm", "create", "dup", "--start=false")
	if ok.State != api.VMStopped {
		t.Fatalf("vm create --start=false gave state %s", ok.State)
	}

	cases := []struct {
		name, body string
		status     int
		want       string
	}{
		{"malformed JSON", `{"name": "x", `, 400, "malformed JSON"},
		{"unknown field", `{"name": "x", "memroy_mib": 512}`, 400, "memroy_mib"},
		{"wrong type", `{"name": "x", "memory_mib": "lots"}`, 400, "memory_mib"},
		{"two objects", `{"name": "x"} {"name": "y"}`, 400, "more than one"},
		{"zero memory", `{"name": "x", "memory_mib": 0}`, 422, "memory"},
		{"zero cpus", `{"name": "x", "cpus": 0}`, 422, "cpus"},
		{"bad name", `{"name": "no/slash"}`, 400, "name"},
		{"unknown host", `{"name": "x", "host": "host-9"}`, 422, "host-9"},
		{"missing kernel", `{"name": "x", "boot": {"kernel": "[shared] images/nosuch/vmlinuz"}}`, 422, "does not exist"},
		{"kernel outside the datastores", `{"name": "x", "boot": {"kernel": "/nonexistent/vmlinuz"}}`, 422, "not inside a datastore"},
		{"unknown datastore", `{"name": "x", "image": "godwit-test", "disks": [{"datastore": "nosuch", "path": "a.qcow2", "format": "qcow2", "size_mib": 8}]}`, 422, "nosuch"},
		{"unknown image", `{"name": "x", "image": "nosuch"}`, 422, "nosuch"},
		{"duplicate name", `{"name": "dup"}`, 409, "already exists"},
		{"duplicate MAC", `{"name": "x", "nics": [{"network": "lab", "mac": "` + ok.MAC + `"}]}`, 409, "dup"},
		{"unknown network", `{"name": "x", "nics": [{"network": "nosuch"}]}`, 422, "nosuch"},
		{"IP outside subnet", `{"name": "x", "nics": [{"network": "lab", "ip": "198.19.250.1"}]}`, 422, "outside"},
		{"duplicate IP", `{"name": "x", "nics": [{"network": "lab", "ip": "` + ok.IP + `"}]}`, 409, "dup"},
	}
	for _, c := range cases {
		status, body := l.RawAPI(http.MethodPost, "/api/v1/vms", c.body)
		if status != c.status || !strings.Contains(body, c.want) {
			t.Errorf("%s: got %d %s; want %d mentioning %q", c.name, status, strings.TrimSpace(body), c.status, c.want)
		}
	}
	if status, body := l.RawAPI(http.MethodPost, "/api/v1/hosts/heartbeat", `{"name": "h", "bogus": 1}`); status != 400 {
		t.Errorf("heartbeat with an unknown field: got %d %s, want 400", status, body)
	}
	if status, _ := l.RawAPI(http.MethodGet, "/api/v1/vms/nosuch", ""); status != 404 {
		t.Errorf("GET an unknown VM: got %d, want 404", status)
	}

	// The CLI says what is wrong and exits non-zero.
	for _, args := range [][]string{
		{"vm", "create", "x", "--memory", "0"},
		{"vm", "create", "x", "--host", "host-9"},
		{"vm", "create", "x", "--kernel", "/nonexistent/vmlinuz"},
		{"vm", "show", "nosuch"},
		{"vm", "delete", "nosuch"},
		{"host", "show", "nosuch"},
		{"vm", "list", "-o", "yaml"},
	} {
		_, errOut, err := l.Run(args...)
		if err == nil || !strings.HasPrefix(errOut, "error: ") {
			t.Errorf("godwit %s: want a non-zero exit and an error line, got err=%v stderr=%q", strings.Join(args, " "), err, errOut)
		}
	}

	// Nothing was half-created: only "dup" exists, in the center and on the host.
	var vms []api.VM
	l.RunJSON(&vms, "vm", "list")
	if len(vms) != 1 || vms[0].Name != "dup" {
		t.Fatalf("after the bad requests vm list is %+v; want only dup", vms)
	}
	dirs, _ := filepath.Glob(filepath.Join(l.Dir(), "host-1", "vms", "*"))
	if len(dirs) != 1 {
		t.Fatalf("host-1 keeps state for %d VMs, want 1: %v", len(dirs), dirs)
	}
	if _, err := os.Stat(filepath.Join(l.Dir(), "datastore", "vms", "x")); !os.IsNotExist(err) {
		t.Fatal("a disk folder for the refused VM x was left on the datastore")
	}

	// A QEMU that fails to start leaves the VM in the error state with QEMU's message,
	// and releases what it had.
	_, errOut, err := l.Run("vm", "create", "badcpu", "--cpu-model", "no-such-cpu")
	if err == nil || !strings.Contains(errOut, "no-such-cpu") {
		t.Fatalf("vm create with an unknown CPU model: err=%v stderr=%q; want a failure quoting QEMU", err, errOut)
	}
	var bad api.VM
	if err := l.API().Do(context.Background(), http.MethodGet, "/api/v1/vms/badcpu", nil, &bad); err != nil {
		t.Fatal(err)
	}
	if bad.State != api.VMError || !strings.Contains(bad.Error, "no-such-cpu") || bad.PID != 0 {
		t.Fatalf("badcpu is %s (%q, pid %d); want state error carrying QEMU's message and no process", bad.State, bad.Error, bad.PID)
	}
	out, _, _ := l.Run("lab", "exec", "--name", l.Name, "host-1", "--", "ip", "-o", "link", "show")
	if strings.Contains(out, netdev.TapName(bad.UUID, 0)) {
		t.Fatalf("the failed VM's TAP is left on host-1:\n%s", out)
	}
	l.MustRun("vm", "delete", "badcpu")
	l.MustRun("vm", "delete", "dup")
}

// TestTwoLabs runs two labs side by side and removes one without disturbing the other.
func TestTwoLabs(t *testing.T) {
	a := newLab(t, 1)
	b := newLab(t, 1)
	var ha, hb []api.Host
	a.RunJSON(&ha, "host", "list")
	b.RunJSON(&hb, "host", "list")
	if len(ha) != 1 || len(hb) != 1 || ha[0].Address == hb[0].Address {
		t.Fatalf("two labs: hosts %+v and %+v; want one host each, on different addresses", ha, hb)
	}
	for _, h := range append(ha, hb...) {
		if !strings.HasPrefix(h.Address, "198.18.") {
			t.Fatalf("host address %s is outside 198.18.0.0/15", h.Address)
		}
	}
	a.MustRun("lab", "down", "--name", a.Name)
	if _, err := os.Stat(a.Dir()); !os.IsNotExist(err) {
		t.Fatalf("lab down left %s", a.Dir())
	}
	if _, err := os.Stat("/run/netns/" + a.NS("client")); !os.IsNotExist(err) {
		t.Fatal("lab down left the client namespace")
	}
	b.RunJSON(&hb, "host", "list")
	if len(hb) != 1 || hb[0].State != api.HostConnected {
		t.Fatalf("the second lab suffered from the first one's removal: %+v", hb)
	}
}
