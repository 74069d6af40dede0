package region

import (
	"strconv"
	"strings"
	"testing"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
)

func TestJSONPathAt(t *testing.T) {
	t.Parallel()
	tests := []struct {
		json, at, want string // at: the text whose first occurrence is the offset
	}{
		{`{"device":{"managed":"yes"}}`, `"yes"`, "device.managed"},
		{`{"device":{"managed":true,"attestedTime":"yesterday"}}`, `"yesterday"`, "device.attestedTime"},
		{`{"a":1, "device" : "managed"}`, `"managed"`, "device"},
		{`{"items":[{"permission":"p"},{"resource":7}]}`, `7`, "items[1].resource"},
		{`{"items":[[1,2],[3,x]]}`, `x`, "items[1][1]"},
		{`{"device":{"id":"a"},"token":5}`, `5`, "token"},
		{"{\n  \"device\": {\n    \"jailbroken\": 1\n  }\n}", `1`, "device.jailbroken"},
		{`{"unknown":true}`, `"unknown"`, "unknown"},
		{`"device"`, `"device"`, ""},
		{`{"a":`, `:`, "a"},
	}
	for _, tt := range tests {
		t.Run(tt.json, func(t *testing.T) {
			t.Parallel()
			off := strings.Index(tt.json, tt.at)
			if got := jsonPathAt([]byte(tt.json), off); got != tt.want {
				t.Fatalf("jsonPathAt(%q, %d) = %q, want %q", tt.json, off, got, tt.want)
			}
		})
	}
}

func TestJSONCodecNamesTheField(t *testing.T) {
	t.Parallel()
	tests := []struct{ json, want string }{
		{`{"device":{"attestedTime":"yesterday"}}`, "device.attestedTime: "},
		{"{\"permission\":\"p\",\n\"device\":\n{\"ätt\":1,\"attested_time\":12}}", "device.attested_time: "},
		{`{"device":"managed"}`, "device: "},
		{`{"context":{"a":[1,{"b":}]}}`, "context.a[1].b: "},
	}
	for _, tt := range tests {
		err := jsonCodec{"json"}.Unmarshal([]byte(tt.json), &keyplanev1.CheckRequest{})
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("Unmarshal(%s) = %v, want an error starting %q", tt.json, err, tt.want)
		}
	}
	var m keyplanev1.CheckRequest
	if err := (jsonCodec{"json"}).Unmarshal([]byte(`{"device":{"managed":true},"future":1}`), &m); err != nil || !m.Device.Managed {
		t.Fatalf("a well-typed request with an unknown field: %v %v", &m, err)
	}
}

// FuzzJSONPathAt: for any text and offset, jsonPathAt and errorOffset neither panic
// nor return an offset outside the text, and the codec's errors keep protojson's.
func FuzzJSONPathAt(f *testing.F) {
	f.Add(`{"device":{"managed":"yes"}}`, 21)
	f.Add(`{"items":[{"permission":"p"},{"resource":7}]}`, 40)
	f.Add("{\n\"a\":[1,\n2,x]}", 12)
	f.Add(`{"ä":"ö","b":[[[`, 9)
	f.Add(`"\u00e9"`, 0)
	f.Fuzz(func(t *testing.T, text string, off int) {
		b := []byte(text)
		_ = jsonPathAt(b, off)
		for _, msg := range []string{"proto: (line 1:" + strconv.Itoa(off) + "): x", "proto: syntax error (line 2:3): y"} {
			if o, ok := errorOffset(b, msg); ok && (o < 0 || o > len(b)) {
				t.Fatalf("errorOffset(%q, %q) = %d outside the text", text, msg, o)
			}
		}
		var m keyplanev1.CheckRequest
		if err := (jsonCodec{"json"}).Unmarshal(b, &m); err != nil && !strings.Contains(err.Error(), "proto") && len(b) > 0 {
			t.Fatalf("Unmarshal(%q) = %v: protojson's error was lost", text, err)
		}
	})
}
