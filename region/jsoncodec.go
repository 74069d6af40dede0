package region

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// jsonCodec is Connect's JSON codec (protojson; unknown fields discarded, so clients
// and servers need not share one schema version) with one difference: a request that
// does not unmarshal says which field it went wrong at. protojson names the field in
// some messages ("invalid value for bool field managed") but only a line and column in
// others ("invalid google.protobuf.Timestamp value", "unexpected token"), so the
// error is prefixed with the JSON path of the value at that position:
// "device.attestedTime: proto: (line 1:154): invalid google.protobuf.Timestamp value".
type jsonCodec struct{ name string }

var _ connect.Codec = jsonCodec{}

// jsonCodecs replace Connect's JSON codecs under both of their names.
func jsonCodecs() connect.Option {
	return connect.WithOptions(connect.WithCodec(jsonCodec{"json"}), connect.WithCodec(jsonCodec{"json; charset=utf-8"}))
}

func (c jsonCodec) Name() string { return c.name }

func (jsonCodec) IsBinary() bool { return false }

func (jsonCodec) Marshal(m any) ([]byte, error) {
	msg, ok := m.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a proto.Message", m)
	}
	return protojson.MarshalOptions{}.Marshal(msg)
}

func (jsonCodec) Unmarshal(b []byte, m any) error {
	msg, ok := m.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a proto.Message", m)
	}
	if len(b) == 0 {
		return errors.New("zero-length payload is not a valid JSON object")
	}
	err := protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(b, msg)
	if err == nil {
		return nil
	}
	if off, ok := errorOffset(b, err.Error()); ok {
		if path := jsonPathAt(b, off); path != "" {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return err
}

// protojsonPosition is how protojson's errors say where: "(line 1:154)".
var protojsonPosition = regexp.MustCompile(`\(line (\d+):(\d+)\)`)

// errorOffset is the byte offset in b of the line:column (1-based, columns in runes)
// that a protojson error message names.
func errorOffset(b []byte, msg string) (int, bool) {
	m := protojsonPosition.FindStringSubmatch(msg)
	if m == nil {
		return 0, false
	}
	line, err1 := strconv.Atoi(m[1])
	col, err2 := strconv.Atoi(m[2])
	if err1 != nil || err2 != nil || line < 1 || col < 1 {
		return 0, false
	}
	off := 0
	for ; line > 1; line-- {
		i := bytes.IndexByte(b[off:], '\n')
		if i < 0 {
			return 0, false
		}
		off += i + 1
	}
	for ; col > 1; col-- {
		if off >= len(b) || b[off] == '\n' {
			return 0, false
		}
		_, size := utf8.DecodeRune(b[off:])
		off += size
	}
	return off, true
}

// jsonPathAt returns the path of the value or key starting at or last before byte
// offset off of the JSON text b, such as "device.attestedTime" or "items[2].resource";
// "" for the top level, or when b is not well-formed JSON before off.
func jsonPathAt(b []byte, off int) string {
	type frame struct {
		array   bool
		key     string // objects: the member being read
		index   int    // arrays: the element being read
		wantKey bool   // objects: the next string is a key
	}
	var stack []frame
	path := func() string {
		var sb strings.Builder
		for _, f := range stack {
			if f.array {
				if f.index >= 0 {
					fmt.Fprintf(&sb, "[%d]", f.index)
				}
				continue
			}
			if f.key != "" {
				if sb.Len() > 0 {
					sb.WriteByte('.')
				}
				sb.WriteString(f.key)
			}
		}
		return sb.String()
	}
	// valueStarts updates the enclosing frame for a value starting.
	valueStarts := func() {
		if n := len(stack); n > 0 && stack[n-1].array {
			stack[n-1].index++
		}
	}
	// valueEnds updates the enclosing frame for a value ended.
	valueEnds := func() {
		if n := len(stack); n > 0 && !stack[n-1].array {
			stack[n-1].wantKey = true
		}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	last := ""
	for {
		start := int(dec.InputOffset())
		for start < len(b) && strings.IndexByte(" \t\r\n:,", b[start]) >= 0 {
			start++
		}
		if start > off {
			return last
		}
		tok, err := dec.Token()
		if err != nil {
			// Not JSON from start on: that is the value being read there.
			if n := len(stack); n > 0 && (stack[n-1].array || !stack[n-1].wantKey) {
				valueStarts()
				return path()
			}
			return last
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				valueStarts()
				last = path()
				stack = append(stack, frame{array: t == '[', index: -1, wantKey: t == '{'})
			default:
				if len(stack) > 0 {
					stack = stack[:len(stack)-1]
				}
				valueEnds()
			}
		case string:
			if n := len(stack); n > 0 && !stack[n-1].array && stack[n-1].wantKey {
				stack[n-1].key, stack[n-1].wantKey = t, false
				last = path()
				continue
			}
			valueStarts()
			last = path()
			valueEnds()
		default:
			valueStarts()
			last = path()
			valueEnds()
		}
	}
}
