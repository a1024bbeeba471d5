package qemu

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/godwit/godwit/internal/pki"
)

// writeJSONFile writes v as indented JSON to path crash-safely (pki.WriteFileAtomic).
// what names the file in errors.
func writeJSONFile(path, what string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("save %s: %w", what, err)
	}
	if err := pki.WriteFileAtomic(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("save %s: %w", what, err)
	}
	return nil
}

// readJSONFile decodes the JSON file at path into v; found is false when there is no
// such file. what names the file in errors.
func readJSONFile(path, what string, v any) (found bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", what, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("%s %s is corrupt: %w", what, path, err)
	}
	return true, nil
}
