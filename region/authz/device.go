package authz

import (
	"fmt"
	"time"
	"unicode"
)

// Limits on a Device's strings (they bound the cost estimate of conditions too).
const (
	MaxDeviceIDLen    = 256
	MaxDeviceFieldLen = 64
)

// Device is the posture of the device a request comes from, exposed to conditions
// as the CEL variable device. The calling application asserts it: keyplane does not
// verify any of it, so it is only as trustworthy as the caller (AssertedBy names it).
type Device struct {
	ID        string // the application's or MDM's device id
	Platform  string // "ios", "android", "macos", "windows", "linux", ...
	OSVersion string
	// Managed: enrolled in device management; Compliant: meets the organization's
	// policy, as the management system judged it; the rest are single posture facts.
	Managed, Compliant, DiskEncrypted, ScreenLock, Jailbroken bool
	// AttestedTime is when the posture was last attested; zero means not given: a
	// condition reading device.attested_time then fails to evaluate.
	AttestedTime time.Time
	// AssertedBy is who passed the device: the calling identity's id, or "operator".
	AssertedBy string
}

// DeviceFieldError is an invalid Device field. Field is its name in the API
// (snake_case, as conditions see it).
type DeviceFieldError struct {
	Field, Reason string
}

func (e *DeviceFieldError) Error() string { return e.Field + ": " + e.Reason }

// ValidateDevice reports the first field of d that a check must refuse: strings
// longer than their limit or holding control characters. AssertedBy is keyplane's,
// not the caller's, and is not checked.
func ValidateDevice(d *Device) error {
	for _, f := range []struct {
		name, value string
		max         int
	}{
		{"id", d.ID, MaxDeviceIDLen},
		{"platform", d.Platform, MaxDeviceFieldLen},
		{"os_version", d.OSVersion, MaxDeviceFieldLen},
	} {
		if len(f.value) > f.max {
			return &DeviceFieldError{Field: f.name, Reason: fmt.Sprintf("at most %d bytes, got %d", f.max, len(f.value))}
		}
		for _, r := range f.value {
			if unicode.IsControl(r) {
				return &DeviceFieldError{Field: f.name, Reason: "must not contain control characters"}
			}
		}
	}
	return nil
}
