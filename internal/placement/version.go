package placement

import (
	"fmt"
	"strconv"
	"strings"
)

// version is a QEMU version, major.minor[.micro].
type version struct {
	major, minor, micro int
}

// String returns the version as major.minor.micro.
func (v version) String() string {
	return fmt.Sprintf("%d.%d.%d", v.major, v.minor, v.micro)
}

// sameMachines reports whether v and o provide the same versioned machine types: their
// major.minor are equal. Godwit starts VMs with the unversioned q35, which each QEMU
// release maps to its own machine version, so a stream only goes between equal
// major.minor.
func (v version) sameMachines(o version) bool { return v.major == o.major && v.minor == o.minor }

// olderStream reports whether a migration stream from src cannot be read by
// v: v's major.minor is below src's. The micro number does not matter.
func (v version) olderStream(src version) bool {
	if v.major != src.major {
		return v.major < src.major
	}
	return v.minor < src.minor
}

// parseVersion parses "10.0.2" or "10.1", as the agent reports QEMU versions.
func parseVersion(s string) (version, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) < 2 || len(parts) > 3 {
		return version{}, fmt.Errorf("parse QEMU version %q: want major.minor or major.minor.micro", s)
	}
	var nums [3]int
	for i, p := range parts {
		n, err := parseVersionNumber(p)
		if err != nil {
			return version{}, fmt.Errorf("parse QEMU version %q: %w", s, err)
		}
		nums[i] = n
	}
	return version{major: nums[0], minor: nums[1], micro: nums[2]}, nil
}

// parseVersionNumber parses one component of a version: decimal digits only.
func parseVersionNumber(p string) (int, error) {
	if p == "" || strings.TrimLeft(p, "0123456789") != "" {
		return 0, fmt.Errorf("component %q is not a number", p)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return 0, fmt.Errorf("component %q: %w", p, err)
	}
	return n, nil
}
