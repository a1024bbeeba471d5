package qemu

import (
	"context"
	"slices"
	"testing"
)

func TestParseCPUHelp(t *testing.T) {
	qemu10 := "Available CPUs:\n  486                   (alias configured by machine type)\n  qemu64                (alias configured by machine type)\n  qemu64-v1             QEMU Virtual CPU version 2.5+\n\nRecognized CPUID flags:\n  3dnow 3dnowext\n"
	if got := parseCPUHelp(qemu10); !slices.Equal(got, []string{"486", "qemu64", "qemu64-v1"}) {
		t.Errorf("QEMU 10 format: %v", got)
	}
	old := "x86 qemu64  QEMU Virtual CPU version 2.5+\nx86 Nehalem Intel Core i7 9xx\n\nRecognized CPUID flags:\n  fpu\n"
	if got := parseCPUHelp(old); !slices.Equal(got, []string{"qemu64", "Nehalem"}) {
		t.Errorf("old format: %v", got)
	}
}

func TestCPUModelsOfRealQEMU(t *testing.T) {
	models, err := CPUModels(context.Background(), "qemu-system-x86_64")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(models, "qemu64") || !slices.Contains(models, "Nehalem") || slices.Contains(models, "fpu") {
		t.Fatalf("CPU models of the installed QEMU: %v", models)
	}
}
