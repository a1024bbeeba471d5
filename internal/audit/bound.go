package audit

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/godwit/godwit/internal/api"
)

// Bounds of a record, so that no request — however long its path, query or body, and
// whoever sends it, signed in or not — makes a record larger than about 12 KiB. Append
// applies them to every record before hashing it, so the hash covers what is stored. A
// value cut short ends in "…(N bytes)", N being its length before the cut.
const (
	// MaxField bounds each short field: actor, actor kind, on behalf of, from, action
	// and outcome.
	MaxField = 256
	// MaxTarget bounds the target (a request's path, when no handler described it).
	MaxTarget = 512
	// MaxError bounds the error text.
	MaxError = 2048
	// MaxParamKey bounds a parameter's name.
	MaxParamKey = 128
	// MaxParamValue bounds a parameter's value as JSON text; a longer one becomes a
	// string holding its start.
	MaxParamValue = 1024
	// MaxParams bounds the whole params object as JSON text: the largest values are cut
	// to their marker first, then the parameters that do not fit are left out, counted
	// under the key "…".
	MaxParams = 8192
)

// valueLen is a parameter's length as its marker gives it: a string's own length, or
// the JSON text's.
func valueLen(v json.RawMessage) int {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return len(s)
	}
	return len(v)
}

// bound cuts the record's fields to their bounds (see MaxField and the others); params
// must be a JSON object, which it returns encoded as it is stored.
func bound(r *Record, params map[string]json.RawMessage) error {
	for _, f := range []*string{&r.Actor, &r.ActorKind, &r.OnBehalfOf, &r.From, &r.Action, &r.Outcome} {
		*f = api.Truncate(*f, MaxField)
	}
	r.Target = api.Truncate(r.Target, MaxTarget)
	r.Error = api.Truncate(r.Error, MaxError)
	p, err := boundParams(params)
	if err != nil {
		return err
	}
	r.Params = p
	return nil
}

// boundParams bounds each parameter's name and value, then the whole object.
func boundParams(in map[string]json.RawMessage) (json.RawMessage, error) {
	out := make(map[string]json.RawMessage, len(in))
	for k, v := range in {
		if len(v) > MaxParamValue {
			v = cutValue(v, MaxParamValue)
		}
		out[api.Truncate(k, MaxParamKey)] = v
	}
	b, err := json.Marshal(out)
	if err != nil || len(b) <= MaxParams {
		return b, err
	}
	// Too large as a whole: cut the largest values to their markers, largest first, until
	// the object fits.
	keys := make([]string, 0, len(out))
	for k := range out {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if len(out[keys[i]]) != len(out[keys[j]]) {
			return len(out[keys[i]]) > len(out[keys[j]])
		}
		return keys[i] < keys[j]
	})
	size := len(b)
	for _, k := range keys {
		if size <= MaxParams {
			break
		}
		m, _ := json.Marshal(api.TruncationNote(valueLen(out[k])))
		if len(m) >= len(out[k]) {
			break // the rest are no larger than their markers
		}
		size -= len(out[k]) - len(m)
		out[k] = m
	}
	if size <= MaxParams {
		return json.Marshal(out)
	}
	// Still too large: too many parameters. Keep those that fit, by name, and count the
	// rest.
	sort.Strings(keys)
	kept := map[string]json.RawMessage{}
	room := MaxParams - 64 // for the count of what is left out
	used := 2
	for i, k := range keys {
		kb, _ := json.Marshal(k)
		n := len(kb) + 1 + len(out[k]) + 1
		if used+n > room {
			left := 0
			for _, r := range keys[i:] {
				left += len(out[r])
			}
			kept["…"], _ = json.Marshal(fmt.Sprintf("(%d more parameters, %d bytes)", len(keys)-i, left))
			break
		}
		kept[k] = out[k]
		used += n
	}
	return json.Marshal(kept)
}

// cutValue returns the JSON text of a string holding the start of v's text (of a
// string's own text when v is one), marked as cut, in at most max bytes of JSON.
func cutValue(v json.RawMessage, max int) json.RawMessage {
	text := string(v)
	var s string
	if json.Unmarshal(v, &s) == nil {
		text = s
	}
	// Escaping can lengthen the text; cut shorter until the JSON fits.
	for limit := max - 2; ; limit = limit * 3 / 4 {
		b, _ := json.Marshal(api.Truncate(text, limit))
		if len(b) <= max || limit == 0 {
			return b
		}
	}
}
