package guest

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func inputEvent(typ, code uint16, value int32) []byte {
	b := make([]byte, inputSize)
	binary.LittleEndian.PutUint64(b[0:], 12345) // tv_sec
	binary.LittleEndian.PutUint16(b[16:], typ)
	binary.LittleEndian.PutUint16(b[18:], code)
	binary.LittleEndian.PutUint32(b[20:], uint32(value))
	return b
}

func TestReadKeyPower(t *testing.T) {
	var stream bytes.Buffer
	stream.Write(inputEvent(evKey, 30, 1))       // 'a' pressed
	stream.Write(inputEvent(evKey, keyPower, 1)) // power pressed
	stream.Write(inputEvent(0, 0, 0))            // EV_SYN
	stream.Write(inputEvent(evKey, keyPower, 0)) // power released
	stream.Write(inputEvent(evKey, keyPower, 2)) // autorepeat
	stream.Write(inputEvent(evKey, keyPower, 1)) // pressed again
	presses := 0
	err := readKeyPower(&stream, func() { presses++ })
	if presses != 2 {
		t.Errorf("presses = %d, want 2", presses)
	}
	if err == nil {
		t.Error("readKeyPower returned nil at end of stream, want an error")
	}
}
