package pki

import (
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// WriteFileAtomic replaces a file whole, with exactly the mode asked for whatever the
// umask, leaves no temporary file behind, keeps the old content when it fails, and
// lets concurrent writers of one file each leave a whole file.
func TestWriteFileAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state", "vm.json")
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	if err := WriteFileAtomic(path, []byte("first"), 0o644); err != nil {
		t.Fatal(err)
	}
	if m := modeOf(t, path); m != 0o644 {
		t.Fatalf("mode %v under umask 077; want 0644 as asked", m)
	}
	syscall.Umask(0)
	if err := WriteFileAtomic(path, []byte("second, longer"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "second, longer" {
		t.Fatalf("content %q, %v", b, err)
	}
	if m := modeOf(t, path); m != 0o600 {
		t.Fatalf("mode %v; want 0600", m)
	}

	// Concurrent writers: the file is always one of the contents, whole.
	var wg sync.WaitGroup
	contents := []string{"aaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbb", "cccccccccccccccccccccccccccccc"}
	for i := range 30 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := WriteFileAtomic(path, []byte(contents[i%3]), 0o644); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	b, _ := os.ReadFile(path)
	if s := string(b); s != contents[0] && s != contents[1] && s != contents[2] {
		t.Fatalf("after concurrent writes the file holds %q", s)
	}

	// A write that cannot land (the target is a directory) keeps what was there.
	blocked := filepath.Join(dir, "state", "blocked")
	if err := os.MkdirAll(filepath.Join(blocked, "inside"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(blocked, []byte("x"), 0o644); err == nil {
		t.Fatal("a write over a non-empty directory succeeded")
	}
	if st, err := os.Stat(filepath.Join(blocked, "inside")); err != nil || !st.IsDir() {
		t.Fatalf("the directory was harmed: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(dir, "state"))
	if len(entries) != 2 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("files beside the target: %v; want only vm.json and blocked (no temporary files)", names)
	}
}

func modeOf(t *testing.T, path string) os.FileMode {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Mode().Perm()
}
