package guest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// memDisk is an in-memory io.ReaderAt disk image.
type memDisk []byte

func (d memDisk) ReadAt(p []byte, off int64) (int, error) { return bytes.NewReader(d).ReadAt(p, off) }

func TestDiskRecordRoundTrip(t *testing.T) {
	body := []byte("hello, migrated disk")
	rec, err := EncodeDiskRecord(body)
	if err != nil {
		t.Fatal(err)
	}
	// The documented layout.
	sum := sha256.Sum256(body)
	if string(rec[:8]) != "GODWITD1" || binary.LittleEndian.Uint32(rec[8:12]) != uint32(len(body)) ||
		!bytes.Equal(rec[12:44], sum[:]) || !bytes.Equal(rec[44:], body) || DiskHeaderSize != 44 {
		t.Fatalf("record layout wrong: % x", rec)
	}
	img := make(memDisk, 8*DiskSlotSize)
	copy(img[3*DiskSlotSize:], rec)
	got, err := DecodeDiskRecord(img, 3)
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("DecodeDiskRecord = %q, %v", got, err)
	}

	// Empty and maximal bodies.
	big := make([]byte, DiskMaxBody)
	rand.Read(big)
	for slot, b := range map[int][]byte{0: {}, 7: big} {
		rec, err := EncodeDiskRecord(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(rec) > DiskSlotSize {
			t.Fatalf("record of %d bytes overflows the slot", len(rec))
		}
		copy(img[slot*DiskSlotSize:], rec)
		if got, err := DecodeDiskRecord(img, slot); err != nil || !bytes.Equal(got, b) {
			t.Errorf("slot %d: %d bytes, %v; want %d bytes", slot, len(got), err, len(b))
		}
	}
	if _, err := EncodeDiskRecord(make([]byte, DiskMaxBody+1)); !errors.Is(err, ErrBodyTooLarge) {
		t.Errorf("oversized body: err = %v", err)
	}
}

func TestDiskRecordRejectsCorruption(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 1000)
	rec, _ := EncodeDiskRecord(body)
	fresh := func() memDisk {
		img := make(memDisk, 4*DiskSlotSize)
		copy(img[DiskSlotSize:], rec)
		return img
	}
	cases := []struct {
		name    string
		mutate  func(memDisk)
		slot    int
		wantErr error
	}{
		{"flipped body byte", func(d memDisk) { d[DiskSlotSize+DiskHeaderSize+5000] ^= 1 }, 1, ErrCorruptRecord},
		{"flipped hash byte", func(d memDisk) { d[DiskSlotSize+20] ^= 1 }, 1, ErrCorruptRecord},
		{"length too large", func(d memDisk) { binary.LittleEndian.PutUint32(d[DiskSlotSize+8:], DiskMaxBody+1) }, 1, ErrCorruptRecord},
		{"length changed", func(d memDisk) { binary.LittleEndian.PutUint32(d[DiskSlotSize+8:], uint32(len(body)-1)) }, 1, ErrCorruptRecord},
		{"bad magic", func(d memDisk) { d[DiskSlotSize] = 'X' }, 1, ErrNoRecord},
		{"empty slot", func(memDisk) {}, 2, ErrNoRecord},
		{"slot out of range", func(memDisk) {}, DiskSlots, ErrBadSlot},
		{"negative slot", func(memDisk) {}, -1, ErrBadSlot},
	}
	for _, c := range cases {
		img := fresh()
		if _, err := DecodeDiskRecord(img, 1); err != nil {
			t.Fatalf("%s: intact record rejected: %v", c.name, err)
		}
		c.mutate(img)
		got, err := DecodeDiskRecord(img, c.slot)
		if !errors.Is(err, c.wantErr) || got != nil {
			t.Errorf("%s: got %d bytes, err %v; want %v", c.name, len(got), err, c.wantErr)
		}
	}
	// The image ends before the slot, or in the middle of the body.
	if _, err := DecodeDiskRecord(make(memDisk, DiskSlotSize), 1); !errors.Is(err, ErrNoRecord) {
		t.Errorf("short image: err = %v, want ErrNoRecord", err)
	}
	if _, err := DecodeDiskRecord(fresh()[:DiskSlotSize+100], 1); !errors.Is(err, ErrCorruptRecord) {
		t.Errorf("truncated body: err = %v, want ErrCorruptRecord", err)
	}
}

func TestDiskWriteReadFile(t *testing.T) {
	// A file on the test's temp dir; O_DIRECT is used if the file system allows it.
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	d := &Disk{Path: path}
	if !d.Present() {
		t.Fatal("disk not present")
	}
	bodies := map[int][]byte{0: []byte("first"), 5: bytes.Repeat([]byte{0xab}, 300000), 63: {}}
	for slot, b := range bodies {
		if err := d.Write(slot, b); err != nil {
			t.Fatalf("Write(%d): %v", slot, err)
		}
	}
	for slot, b := range bodies {
		got, err := d.Read(slot)
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("Read(%d) = %d bytes, %v; want %d bytes", slot, len(got), err, len(b))
		}
	}
	if _, err := d.Read(6); !errors.Is(err, ErrNoRecord) {
		t.Errorf("Read of an empty slot: err = %v, want ErrNoRecord", err)
	}
	// The host-side decoder reads the same image.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, err := DecodeDiskRecord(f, 5); err != nil || !bytes.Equal(got, bodies[5]) {
		t.Errorf("DecodeDiskRecord on the image file: %d bytes, %v", len(got), err)
	}
	// Corrupt the file behind the Disk's back: Read must notice.
	raw, _ := os.ReadFile(path)
	raw[5*DiskSlotSize+DiskHeaderSize+10] ^= 0x80
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Read(5); !errors.Is(err, ErrCorruptRecord) {
		t.Errorf("Read of a corrupted record: err = %v, want ErrCorruptRecord", err)
	}
	if err := d.Write(64, nil); !errors.Is(err, ErrBadSlot) {
		t.Errorf("Write(64): err = %v, want ErrBadSlot", err)
	}
	if err := d.Write(1, make([]byte, DiskMaxBody+1)); !errors.Is(err, ErrBodyTooLarge) {
		t.Errorf("oversized Write: err = %v, want ErrBodyTooLarge", err)
	}
}

func TestAlignedReaderAt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	data := make([]byte, 3*diskAlign+100)
	rand.Read(data)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a := &alignedReaderAt{f: f}
	for _, c := range []struct{ off, n int }{{0, 10}, {4090, 20}, {diskAlign, diskAlign}, {3 * diskAlign, 100}, {5, 3*diskAlign + 95}} {
		p := make([]byte, c.n)
		n, err := a.ReadAt(p, int64(c.off))
		if err != nil || n != c.n || !bytes.Equal(p, data[c.off:c.off+c.n]) {
			t.Errorf("ReadAt(off %d, %d bytes) = %d, %v", c.off, c.n, n, err)
		}
	}
	p := make([]byte, 200)
	n, err := a.ReadAt(p, int64(len(data)-50))
	if n != 50 || err == nil || !bytes.Equal(p[:50], data[len(data)-50:]) {
		t.Errorf("read across EOF = %d, %v; want 50 and an error", n, err)
	}
	if b := alignedBuffer(100); uintptrOf(b)%diskAlign != 0 || len(b) != 100 {
		t.Errorf("alignedBuffer not aligned")
	}
}
