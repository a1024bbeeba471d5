package guest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The data disk holds DiskSlots records, one per DiskSlotSize slot. Slot s starts at
// byte offset s*DiskSlotSize. A record is
//
//	offset  size  content
//	0       8     magic "GODWITD1"
//	8       4     body length n, uint32 little endian, n <= DiskMaxBody
//	12      32    SHA-256 of the body
//	44      n     body
//
// The rest of the slot is undefined (the guest zero-pads the record to a 4 KiB multiple
// when writing). A slot without the magic holds no record; a record whose length is out
// of range or whose hash does not match is corrupt. [DecodeDiskRecord] reads a record
// from anything that is an io.ReaderAt, e.g. a raw disk image opened on the host (a
// qcow2 image must be converted to raw first, e.g. with qemu-img convert).
const (
	DiskMagic      = "GODWITD1"
	DiskSlotSize   = 1 << 20
	DiskSlots      = 64
	DiskHeaderSize = 8 + 4 + sha256.Size
	DiskMaxBody    = DiskSlotSize - DiskHeaderSize
	// DefaultDiskPath is the guest's virtio-blk data disk.
	DefaultDiskPath = "/dev/vda"
	// diskAlign is the buffer, offset and length alignment used for O_DIRECT.
	diskAlign = 4096
)

// Errors returned by [DecodeDiskRecord] (wrapped with details).
var (
	ErrNoRecord      = errors.New("no record in slot")
	ErrCorruptRecord = errors.New("corrupt record")
	ErrBadSlot       = fmt.Errorf("slot out of range 0..%d", DiskSlots-1)
	ErrBodyTooLarge  = fmt.Errorf("body larger than %d bytes", DiskMaxBody)
)

// EncodeDiskRecord returns the record (header and body) for body; see DiskMagic.
func EncodeDiskRecord(body []byte) ([]byte, error) {
	if len(body) > DiskMaxBody {
		return nil, fmt.Errorf("encode disk record: %d bytes: %w", len(body), ErrBodyTooLarge)
	}
	rec := make([]byte, DiskHeaderSize+len(body))
	putDiskRecord(rec, body)
	return rec, nil
}

// putDiskRecord writes the record for body into rec, which must be large enough.
func putDiskRecord(rec, body []byte) {
	copy(rec, DiskMagic)
	binary.LittleEndian.PutUint32(rec[8:12], uint32(len(body)))
	sum := sha256.Sum256(body)
	copy(rec[12:DiskHeaderSize], sum[:])
	copy(rec[DiskHeaderSize:], body)
}

// DecodeDiskRecord reads the record in slot from r (a disk or a raw disk image), checks
// it and returns its body. Errors wrap ErrBadSlot, ErrNoRecord (no magic, or the disk
// ends before the slot), ErrCorruptRecord (bad length, truncated, or hash mismatch) or
// the reader's error.
func DecodeDiskRecord(r io.ReaderAt, slot int) ([]byte, error) {
	if slot < 0 || slot >= DiskSlots {
		return nil, fmt.Errorf("disk slot %d: %w", slot, ErrBadSlot)
	}
	off := int64(slot) * DiskSlotSize
	var hdr [DiskHeaderSize]byte
	if n, err := r.ReadAt(hdr[:], off); n < len(hdr) {
		if err == io.EOF || err == nil {
			return nil, fmt.Errorf("disk slot %d: disk ends at byte %d, before the header: %w", slot, off+int64(n), ErrNoRecord)
		}
		return nil, fmt.Errorf("disk slot %d: reading header: %w", slot, err)
	}
	if string(hdr[:8]) != DiskMagic {
		if bytes.Count(hdr[:], []byte{0}) == len(hdr) {
			return nil, fmt.Errorf("disk slot %d: slot is empty (zeros): %w", slot, ErrNoRecord)
		}
		return nil, fmt.Errorf("disk slot %d: magic is %q, not %q: %w", slot, hdr[:8], DiskMagic, ErrNoRecord)
	}
	n := binary.LittleEndian.Uint32(hdr[8:12])
	if n > DiskMaxBody {
		return nil, fmt.Errorf("disk slot %d: body length %d exceeds %d: %w", slot, n, DiskMaxBody, ErrCorruptRecord)
	}
	body := make([]byte, n)
	if got, err := r.ReadAt(body, off+DiskHeaderSize); got < len(body) {
		if err == io.EOF || err == nil {
			return nil, fmt.Errorf("disk slot %d: body truncated: %d of %d bytes: %w", slot, got, n, ErrCorruptRecord)
		}
		return nil, fmt.Errorf("disk slot %d: reading body: %w", slot, err)
	}
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], hdr[12:DiskHeaderSize]) {
		return nil, fmt.Errorf("disk slot %d: SHA-256 of the %d-byte body is %x, header says %x: %w",
			slot, n, sum[:8], hdr[12:20], ErrCorruptRecord)
	}
	return body, nil
}

// ErrDiskTooSmall is returned by [Disk.Write] when the slot lies beyond the disk's end.
var ErrDiskTooSmall = errors.New("disk too small for slot")

// Disk reads and writes records on a block device (or a file, for tests), bypassing
// the guest's page cache with O_DIRECT. If the file system refuses O_DIRECT (tmpfs),
// it falls back to O_DSYNC writes and evicts the file's cached pages before reading.
type Disk struct {
	Path string
	mu   sync.Mutex // one operation at a time
}

// Present reports whether the disk exists.
func (d *Disk) Present() bool {
	_, err := os.Stat(d.Path)
	return err == nil
}

// open opens the disk with O_DIRECT if possible; direct says whether it did.
func (d *Disk) open(flag int) (f *os.File, direct bool, err error) {
	f, err = os.OpenFile(d.Path, flag|unix.O_DIRECT, 0)
	if err == nil {
		return f, true, nil
	}
	if !errors.Is(err, unix.EINVAL) {
		return nil, false, fmt.Errorf("open disk %s: %w", d.Path, err)
	}
	f, err = os.OpenFile(d.Path, flag, 0)
	if err != nil {
		return nil, false, fmt.Errorf("open disk %s: %w", d.Path, err)
	}
	return f, false, nil
}

// Write stores body in slot and returns once it is on the disk (fdatasync).
func (d *Disk) Write(slot int, body []byte) error {
	if slot < 0 || slot >= DiskSlots {
		return fmt.Errorf("disk slot %d: %w", slot, ErrBadSlot)
	}
	if len(body) > DiskMaxBody {
		return fmt.Errorf("disk slot %d: %d bytes: %w", slot, len(body), ErrBodyTooLarge)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	f, _, err := d.open(os.O_WRONLY | unix.O_DSYNC)
	if err != nil {
		return err
	}
	defer f.Close()
	off := int64(slot) * DiskSlotSize
	buf := alignedBuffer(roundUp(DiskHeaderSize+len(body), diskAlign))
	putDiskRecord(buf, body)
	if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeDevice != 0 {
		size, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			return fmt.Errorf("disk %s: size: %w", d.Path, err)
		}
		if off+int64(len(buf)) > size {
			return fmt.Errorf("disk %s: slot %d needs %d bytes, disk has %d: %w", d.Path, slot, off+int64(len(buf)), size, ErrDiskTooSmall)
		}
	}
	if _, err := f.WriteAt(buf, off); err != nil {
		return fmt.Errorf("disk %s: write slot %d: %w", d.Path, slot, err)
	}
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		return fmt.Errorf("disk %s: fdatasync: %w", d.Path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("disk %s: close: %w", d.Path, err)
	}
	return nil
}

// Read reads and verifies the record in slot from the disk itself (not the page cache).
func (d *Disk) Read(slot int) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f, direct, err := d.open(os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if !direct {
		// Without O_DIRECT, drop the file's cached pages so the read goes to the disk.
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
			return nil, fmt.Errorf("disk %s: evicting cache: %w", d.Path, err)
		}
	}
	body, err := DecodeDiskRecord(&alignedReaderAt{f: f}, slot)
	if err != nil {
		return nil, fmt.Errorf("disk %s: %w", d.Path, err)
	}
	return body, nil
}

// alignedReaderAt turns arbitrary reads into reads of diskAlign-aligned blocks into an
// aligned buffer, as O_DIRECT requires.
type alignedReaderAt struct{ f *os.File }

func (a *alignedReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	start := off &^ (diskAlign - 1)
	end := roundUp64(off+int64(len(p)), diskAlign)
	buf := alignedBuffer(int(end - start))
	n, err := a.f.ReadAt(buf, start)
	// Bytes of p that the read covered.
	got := int64(n) - (off - start)
	if got < 0 {
		got = 0
	}
	if got > int64(len(p)) {
		got = int64(len(p))
	}
	copy(p, buf[off-start:off-start+got])
	if int(got) == len(p) {
		return len(p), nil
	}
	if err == nil {
		err = io.EOF
	}
	return int(got), err
}

// alignedBuffer returns a zeroed buffer of n bytes whose address is diskAlign-aligned.
func alignedBuffer(n int) []byte {
	b := make([]byte, n+diskAlign)
	skip := 0
	if rem := int(uintptr(unsafe.Pointer(&b[0])) & (diskAlign - 1)); rem != 0 {
		skip = diskAlign - rem
	}
	return b[skip : skip+n : skip+n]
}

func roundUp(n, align int) int       { return (n + align - 1) &^ (align - 1) }
func roundUp64(n, align int64) int64 { return (n + align - 1) &^ (align - 1) }
