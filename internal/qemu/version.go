package qemu

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
)

var versionRE = regexp.MustCompile(`^QEMU emulator version (\d+\.\d+(?:\.\d+)?)`)

// Version returns the version of the QEMU binary, e.g. "10.0.2", from
// `binary --version`.
func Version(ctx context.Context, binary string) (string, error) {
	line, err := versionLine(ctx, binary)
	if err != nil {
		return "", err
	}
	m := versionRE.FindStringSubmatch(line)
	if m == nil {
		return "", fmt.Errorf("qemu version of %s: unexpected output %q", binary, line)
	}
	return m[1], nil
}

// versionLine returns the first line of `binary --version`, e.g.
// "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)".
func versionLine(ctx context.Context, binary string) (string, error) {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, binary, "--version")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("qemu version of %s: %w: %s", binary, err, strings.TrimSpace(stderr.String()))
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	if !sc.Scan() {
		return "", fmt.Errorf("qemu version of %s: no output", binary)
	}
	return strings.TrimSpace(sc.Text()), nil
}
