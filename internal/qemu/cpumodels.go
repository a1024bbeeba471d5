package qemu

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
)

// CPUModels lists the CPU models a QEMU binary provides (`-cpu help`), for preflight
// checks before a VM is sent to a host.
func CPUModels(ctx context.Context, binary string) ([]string, error) {
	out, err := exec.CommandContext(ctx, binary, "-cpu", "help").Output()
	if err != nil {
		return nil, fmt.Errorf("list the CPU models of %s: %w", binary, err)
	}
	return parseCPUHelp(string(out)), nil
}

// parseCPUHelp reads the model names from `-cpu help`: the indented lines after
// "Available CPUs:" (QEMU 10), or lines "x86 NAME ..." (older QEMU), up to the flags.
func parseCPUHelp(out string) []string {
	var models []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "Recognized CPUID flags"):
			return models
		case len(f) >= 2 && f[0] == "x86":
			models = append(models, f[1])
		case len(f) >= 1 && strings.HasPrefix(line, "  "):
			models = append(models, f[0])
		}
	}
	return models
}
