package lab

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// TestCPULimits checks the CPU limits of lab hosts: refused for hosts the lab does not
// have and for names that are no model, and passed to the named host's agent only.
func TestCPULimits(t *testing.T) {
	root := t.TempDir()
	for _, c := range []struct {
		limits map[string]string
		want   string
	}{
		{map[string]string{"host-3": "Nehalem"}, `no host "host-3"; its hosts are host-1 to host-2`},
		{map[string]string{"host-0": "Nehalem"}, `no host "host-0"`},
		{map[string]string{"host-02": "Nehalem"}, `no host "host-02"`},
		{map[string]string{"center": "Nehalem"}, `no host "center"`},
		{map[string]string{"host-1": ""}, "not a QEMU CPU model name"},
		{map[string]string{"host-1": "--accel=kvm"}, "not a QEMU CPU model name"},
		{map[string]string{"host-1": "Nehalem Westmere"}, "not a QEMU CPU model name"},
	} {
		_, err := Up(context.Background(), Options{Name: "x", Root: root, Hosts: 2, Binary: "/bin/true", CPULimits: c.limits})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Up with CPU limits %v: err = %v; want %q", c.limits, err, c.want)
		}
	}

	o, err := Options{Name: "x", Root: root, Hosts: 3, Binary: "/bin/true", CPULimits: map[string]string{"host-2": "Nehalem"}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	l := plan(o, 7)
	for _, d := range l.Daemons {
		i := slices.Index(d.Argv, "--cpu-limit")
		switch {
		case d.Target == "host-2" && (i < 0 || i+1 >= len(d.Argv) || d.Argv[i+1] != "Nehalem"):
			t.Errorf("host-2's agent runs %q; want --cpu-limit Nehalem", d.Argv)
		case d.Target != "host-2" && i >= 0:
			t.Errorf("%s runs %q; only host-2 is limited", d.Target, d.Argv)
		}
	}
}
