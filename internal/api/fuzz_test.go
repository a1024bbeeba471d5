package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Fuzz tests of the strict request decoder, one per request type the servers accept.
// Each checks, for any body: DecodeJSON and Decode never panic; they return nil or a
// *StatusError with a 4xx status, a code and a message; both agree on bodies within
// MaxBodyBytes; and a value they accept encodes to JSON that they accept again, as the
// same value.
//
// Run one for longer with, for example:
//
//	go test -run '^$' -fuzz '^FuzzDecodeCreateVMRequest$' -fuzztime 30s ./internal/api

// fuzzCommonBodies are bodies every decoder must refuse or accept gracefully: malformed
// JSON, wrong top-level types, unknown fields, huge numbers, deep nesting, trailing data.
var fuzzCommonBodies = []string{
	``,
	` `,
	`{}`,
	`null`,
	`[]`,
	`"x"`,
	`1`,
	`1e999`,
	`true`,
	`{`,
	`}`,
	`{"`,
	`{"name":`,
	`{"name":"a"`,
	`{"name":"a",}`,
	`{name:"a"}`,
	`{'name':'a'}`,
	`{"name":"a"}{"name":"b"}`,
	`{"name":"a"} x`,
	`{"name":"a"}   `,
	"{\"name\":\"a\"}\n\n",
	`{"name":"a"} {}`,
	`{"name":"a"} []`,
	`{"name":"a"}]`,
	`{"unknown":1}`,
	`{"Name":"a"}`,
	`{"NAME":"a"}`,
	`{"name":"a","name":"b"}`,
	`{"name":1}`,
	`{"name":null}`,
	`{"name":["a"]}`,
	`{"name":{"a":1}}`,
	`{"name":"\ud800"}`,
	`{"name":"\u0000"}`,
	"{\"name\":\"\xff\xfe\"}",
	"\xef\xbb\xbf{\"name\":\"a\"}",
	`{"name":"a\"b\\c"}`,
	`{"cpus":99999999999999999999999}`,
	`{"cpus":-9223372036854775809}`,
	`{"cpus":9223372036854775807}`,
	`{"cpus":1.5}`,
	`{"cpus":1e3}`,
	`{"cpus":-0}`,
	`{"cpus":"1"}`,
	`{"memory_mib":1e400}`,
	`{"load":1e400}`,
	`{"load":-1e-400}`,
	`{"boot":[]}`,
	`{"boot":null}`,
	`{"disks":{}}`,
	`{"disks":[null]}`,
	`{"disks":[1]}`,
	`{"nics":[{"network":"lab","extra":true}]}`,
	`{"spec":{"name":"a","x":1}}`,
	`{"boot_time":"yesterday"}`,
	`{"boot_time":"2025-13-01T00:00:00Z"}`,
	`{"boot_time":"0000-01-01T00:00:00+01:00"}`,
	`{"owned_disks":[-1,9223372036854775808]}`,
	strings.Repeat("[", 20000) + strings.Repeat("]", 20000),
	`{"a":` + strings.Repeat(`{"a":`, 11000) + `1` + strings.Repeat("}", 11001),
	`{"name":"` + strings.Repeat("x", 70000) + `"}`,
}

func FuzzDecodeCreateVMRequest(f *testing.F) {
	fuzzDecoder[CreateVMRequest](f,
		`{"name":"web-1"}`,
		`{"name":"web-1","host":"host-1","cpus":2,"memory_mib":1024,"cpu_model":"qemu64","data_disk_mib":128,"image":"godwit-test","start":true,"migration_policy":"balanced"}`,
		`{"name":"web-2","boot":{"kernel":"[shared] images/g/vmlinuz","initrd":"[shared] images/g/initrd.img","cmdline":"console=ttyS0"},"disks":[{"datastore":"shared","path":"vms/web-2/a.qcow2","format":"qcow2","size_mib":64}],"nics":[{"network":"lab","mac":"02:67:77:00:00:01","ip":"198.18.1.100/24"}]}`,
		`{"name":"web-3","boot":{"from_disk":true},"disks":[{"datastore":"shared","path":"d.raw","format":"raw"}]}`,
		`{"name":"web-1","cpus":null,"memory_mib":null,"data_disk_mib":0}`,
		`{"name":"web-1","cpus":-1,"memory_mib":9223372036854775807}`,
	)
}

func FuzzDecodeMigrateRequest(f *testing.F) {
	fuzzDecoder[MigrateRequest](f,
		`{"to":"host-2"}`,
		`{"to":"host-2","policy":"aggressive"}`,
		`{"to":"host-2","policy":""}`,
		`{"to":["host-2"]}`,
		`{"to":"host-2","from":"host-1"}`,
	)
}

func FuzzDecodeHostFacts(f *testing.F) {
	fuzzDecoder[HostFacts](f,
		`{"name":"host-1","agent_url":"http://198.18.1.11:7700"}`,
		`{"name":"host-1","agent_url":"http://198.18.1.11:7700","address":"198.18.1.11","version":"dev",
		  "cpu":{"model":"Test CPU","vendor":"GenuineIntel","cores":2,"flags":["sse2","avx"],"threads":4},
		  "memory_mib":4096,"free_memory_mib":2048,"load":0.52,"qemu_version":"8.2.2","accel":"tcg","accel_reason":"probe",
		  "datastores":[{"name":"shared","path":"/srv/ds","total_bytes":18446744073709551615,"free_bytes":1,
		     "images":[{"name":"godwit-test","kernel":"[shared] images/godwit-test/vmlinuz","initrd":"[shared] images/godwit-test/initrd.img","cmdline":"console=ttyS0"}]}],
		  "networks":[{"name":"lab","bridge":"br0","mtu":1500}],"health":"ok",
		  "vms":[{"name":"web-1","uuid":"0f8fad5b-d9cb-469f-a165-70867728950e","state":"running","pid":42,"accel":"tcg"}],
		  "boot_time":"2025-03-01T12:00:00.123456789+01:00"}`,
		`{"name":"host-1","datastores":[{"total_bytes":-1}]}`,
		`{"name":"host-1","datastores":[{"total_bytes":18446744073709551616}]}`,
		`{"name":"host-1","load":"high"}`,
		`{"name":"host-1","state":"connected"}`,
	)
}

func FuzzDecodeVMSpec(f *testing.F) {
	fuzzDecoder[VMSpec](f,
		`{"name":"web-1","uuid":"0f8fad5b-d9cb-469f-a165-70867728950e","cpus":1,"memory_mib":512,"cpu_model":"qemu64",
		  "boot":{"kernel":"[shared] images/g/vmlinuz","initrd":"[shared] images/g/initrd.img","cmdline":"console=ttyS0 godwit.ip=198.18.1.100/24"},
		  "disks":[{"datastore":"shared","path":"vms/web-1/data.qcow2","format":"qcow2","size_mib":64}],
		  "nics":[{"network":"lab","mac":"02:67:77:00:00:01","ip":"198.18.1.100/24"}],"migration_policy":"balanced"}`,
		`{"name":"web-1","uuid":"u","cpus":1,"memory_mib":512,"boot":{"from_disk":true},"disks":[{"datastore":"shared","path":"d.raw","format":"raw"}]}`,
		`{"name":"web-1","boot":{"from_disk":"yes"}}`,
		`{"name":"web-1","disks":[{"size_mib":1e10}]}`,
	)
}

func FuzzDecodeAgentMigrateRequest(f *testing.F) {
	fuzzDecoder[AgentMigrateRequest](f,
		`{"id":"1a2b3c4d","destination":"host-2","destination_url":"http://198.18.1.12:7700","destination_addr":"198.18.1.12","policy":"balanced"}`,
		`{"id":"1a2b3c4d","destination":"host-2"}`,
		`{"id":12345678}`,
	)
}

func FuzzDecodeIncomingRequest(f *testing.F) {
	fuzzDecoder[IncomingRequest](f,
		`{"id":"1a2b3c4d","source":"host-1","source_url":"http://198.18.1.11:7700",
		  "spec":{"name":"web-1","uuid":"0f8fad5b-d9cb-469f-a165-70867728950e","cpus":1,"memory_mib":512,"boot":{"kernel":"/k"}},
		  "owned_disks":[0,1],"qemu_version":"8.2.2","policy":"balanced","address":"198.18.1.12"}`,
		`{"id":"1a2b3c4d","spec":null}`,
		`{"id":"1a2b3c4d","spec":{"name":"web-1","bogus":1}}`,
		`{"id":"1a2b3c4d","owned_disks":[1.5]}`,
		`{"id":"1a2b3c4d","memory":{"dirtied":[{"period_ms":100,"bytes":3.5e6}],"nonzero_bytes":1e8,"measured":"2026-01-02T03:04:05Z","host":"host-1"}}`,
		`{"id":"1a2b3c4d","memory":{"dirtied":"many"}}`,
	)
}

// FuzzDecodeContentType checks Decode's handling of the Content-Type header next to the
// body: JSON media types are decoded, anything else is a 415, never a panic.
func FuzzDecodeContentType(f *testing.F) {
	for _, ct := range []string{"", "application/json", "application/json; charset=utf-8", "text/plain",
		"application/xml", "application/jsonx", "APPLICATION/JSON", "multipart/form-data; boundary=x", "\x00"} {
		f.Add(ct, []byte(`{"to":"host-2"}`))
	}
	f.Add("application/json", []byte(`{"to":"`+strings.Repeat("a", MaxBodyBytes)+`"}`))
	f.Add("application/json", []byte(`{"to":"host-2"}`+strings.Repeat(" ", MaxBodyBytes)))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		r.Header.Set("Content-Type", ct)
		var v MigrateRequest
		err := Decode(httptest.NewRecorder(), r, &v)
		checkDecodeError(t, body, err)
		if ct != "" && !strings.HasPrefix(ct, "application/json") {
			var se *StatusError
			if !errors.As(err, &se) || se.Status != http.StatusUnsupportedMediaType {
				t.Fatalf("Content-Type %q: got %v; want a 415", ct, err)
			}
			return
		}
		if len(body) > MaxBodyBytes && err == nil {
			t.Fatalf("a body of %d bytes (over MaxBodyBytes) was accepted", len(body))
		}
		if err == nil {
			checkRoundTrip(t, &v)
		}
	})
}

// fuzzDecoder fuzzes DecodeJSON and Decode into a T.
func fuzzDecoder[T any](f *testing.F, seeds ...string) {
	for _, s := range fuzzCommonBodies {
		f.Add([]byte(s))
	}
	for _, s := range seeds {
		f.Add([]byte(s))
		// The same valid body with trailing data, an unknown field and cut short.
		f.Add([]byte(s + ` {}`))
		if i := strings.LastIndexByte(s, '}'); i > 0 {
			f.Add([]byte(s[:i] + `,"zzz_unknown":1}`))
		}
		f.Add([]byte(s[:len(s)/2]))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var v T
		err := DecodeJSON(bytes.NewReader(body), &v)
		checkDecodeError(t, body, err)

		// Decode, as the servers call it, must agree with DecodeJSON on bodies within
		// the limit, and refuse bodies over it.
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		var hv T
		herr := Decode(httptest.NewRecorder(), r, &hv)
		checkDecodeError(t, body, herr)
		if len(body) <= MaxBodyBytes {
			if (err == nil) != (herr == nil) {
				t.Fatalf("DecodeJSON says %v but Decode says %v for %.200q", err, herr, body)
			}
			if err == nil && !bytes.Equal(mustJSON(t, &v), mustJSON(t, &hv)) {
				t.Fatalf("DecodeJSON and Decode decoded %.200q differently: %s vs %s", body, mustJSON(t, &v), mustJSON(t, &hv))
			}
		} else if herr == nil {
			t.Fatalf("Decode accepted a body of %d bytes (over MaxBodyBytes)", len(body))
		}
		if err == nil {
			checkRoundTrip(t, &v)
		}
	})
}

// checkDecodeError checks that err is nil or a *StatusError that a server can send: a
// 4xx status, a code and a message.
func checkDecodeError(t *testing.T, body []byte, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var se *StatusError
	if !errors.As(err, &se) {
		t.Fatalf("decoding %.200q: error %T %v is not a *StatusError", body, err, err)
	}
	if se.Status < 400 || se.Status > 499 {
		t.Fatalf("decoding %.200q: status %d is not a 4xx (%s)", body, se.Status, se.Msg)
	}
	if strings.TrimSpace(se.Msg) == "" || se.Code == "" {
		t.Fatalf("decoding %.200q: status %d with an empty message or code: %+v", body, se.Status, se)
	}
	// The error answer itself must be JSON with the message in "error".
	w := httptest.NewRecorder()
	WriteError(w, err)
	var e Error
	if w.Code != se.Status || json.Unmarshal(w.Body.Bytes(), &e) != nil || e.Error != se.Msg {
		t.Fatalf("decoding %.200q: error answer %d %q does not carry the error", body, w.Code, w.Body.String())
	}
}

// checkRoundTrip encodes an accepted value and decodes it again: the decoder must accept
// its own encoding and get the same value (compared as JSON, which ignores nil versus
// empty slices and time zone pointers).
func checkRoundTrip[T any](t *testing.T, v *T) {
	t.Helper()
	b := mustJSON(t, v)
	var again T
	if err := DecodeJSON(bytes.NewReader(b), &again); err != nil {
		t.Fatalf("the decoder refuses its own encoding %.300s: %v", b, err)
	}
	if b2 := mustJSON(t, &again); !bytes.Equal(b, b2) {
		t.Fatalf("round trip changed the value:\n first: %.300s\nsecond: %.300s", b, b2)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("an accepted value does not encode to JSON: %v (%+v)", err, v)
	}
	return b
}

func FuzzDecodeBulkMigrateRequest(f *testing.F) {
	fuzzDecoder[BulkMigrateRequest](f,
		`{"vms":["a","b"],"to":"host-2"}`,
		`{"vms":["a"],"auto":true,"priority":"high","policy":"safe","encryption":"required"}`,
		`{"vms":[],"to":""}`,
		`{"vms":"a"}`,
		`{"vms":[1,null]}`,
	)
}

func FuzzDecodeMaintenanceRequest(f *testing.F) {
	fuzzDecoder[MaintenanceRequest](f, `{"enter":true,"reason":"disks"}`, `{"enter":"yes"}`, `{"enter":false}`)
}

func FuzzDecodePKIRequests(f *testing.F) {
	fuzzDecoder[JoinRequest](f, `{"name":"host-1","token":"gwjoin_0123456789abcdef_x","csr":"-----BEGIN CERTIFICATE REQUEST-----\n"}`)
}

func FuzzDecodeBandwidthRequest(f *testing.F) {
	fuzzDecoder[BandwidthRequest](f, `{"max_bandwidth":125000000}`, `{"max_bandwidth":-1}`, `{"max_bandwidth":1e30}`)
}

func FuzzDecodeCreateScheduleRequest(f *testing.F) {
	fuzzDecoder[CreateScheduleRequest](f,
		`{"name":"nightly","cron":"0 2 * * *","missed":"skip","migrate":{"vms":["a"],"to":"host-2"}}`,
		`{"name":"once","at":"+5s","migrate":{"vms":["a"],"auto":true}}`,
	)
}
