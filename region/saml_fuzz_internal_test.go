package region

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/crewjam/saml"

	"github.com/keyplane/keyplane/schema"
)

// FuzzParseIdPMetadata: checking an IdP's metadata never panics, and whatever it
// accepts is an md:EntityDescriptor with an entity id, one IDPSSODescriptor and an
// HTTP-Redirect sign-on URL that is https (or http on a loopback host).
func FuzzParseIdPMetadata(f *testing.F) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<33, 0)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		f.Fatal(err)
	}
	fuzzCert := base64.StdEncoding.EncodeToString(der)
	md := func(entity, location, cert string) string {
		return `<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="` + entity + `">` +
			`<md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data>` +
			`<ds:X509Certificate>` + cert + `</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>` +
			`<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="` + location + `"/></md:IDPSSODescriptor></md:EntityDescriptor>`
	}
	for _, s := range []string{
		md("https://idp.test/metadata", "https://idp.test/sso", fuzzCert),
		md("https://idp.test/metadata", "http://127.0.0.1:8080/sso", fuzzCert),
		md("https://idp.test/metadata", "http://evil.test/sso", fuzzCert),
		md("", "https://idp.test/sso", fuzzCert),
		md("x", "https://idp.test/sso", "not base64!"),
		`<EntityDescriptor entityID="x"/>`, `<md:EntitiesDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"/>`,
		`<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>`, "", "<", "not xml",
	} {
		f.Add(s)
	}
	if _, err := parseIdPMetadata(md("https://idp.test/metadata", "https://idp.test/sso", fuzzCert)); err != nil {
		f.Fatalf("the valid seed is refused: %v", err)
	}
	f.Fuzz(func(t *testing.T, text string) {
		ed, err := parseIdPMetadata(text)
		if err != nil {
			return
		}
		if ed.EntityID == "" || len(ed.IDPSSODescriptors) != 1 {
			t.Fatalf("accepted metadata without an entity id or with %d IDPSSODescriptors", len(ed.IDPSSODescriptors))
		}
		ok := false
		for _, s := range ed.IDPSSODescriptors[0].SingleSignOnServices {
			u, err := url.Parse(s.Location)
			if s.Binding == saml.HTTPRedirectBinding && err == nil && (u.Scheme == "https" || schema.LoopbackHost(u.Hostname())) {
				ok = true
			}
		}
		if !ok {
			t.Fatal("accepted metadata without an acceptable HTTP-Redirect sign-on URL")
		}
	})
}

// FuzzSAMLSignIn: mapping any assertion's subject and attributes never panics, keeps
// the id for at least the margin and at most a day (and the margin), and takes values only from the assertion.
func FuzzSAMLSignIn(f *testing.F) {
	f.Add("id-1", "alice@corp.test", "mail", "alice@corp.test", "uid", "E-1", int64(60))
	f.Add("", "", "", "", "", "", int64(-60))
	f.Add("x", " spaced ", "urn:oid:0.9.2342.19200300.100.1.3", "", "mail", "\x00", int64(1<<40))
	f.Fuzz(func(t *testing.T, id, nameID, attr1, val1, attr2, val2 string, expiresIn int64) {
		now := time.Unix(1_700_000_000, 0)
		as := &saml.Assertion{ID: id, IssueInstant: now.Add(time.Duration(expiresIn) * time.Second), Subject: &saml.Subject{NameID: &saml.NameID{Value: nameID}},
			Conditions:          &saml.Conditions{NotOnOrAfter: now.Add(time.Duration(expiresIn) * time.Second)},
			AttributeStatements: []saml.AttributeStatement{{Attributes: []saml.Attribute{{Name: attr1, Values: []saml.AttributeValue{{Value: val1}}}, {FriendlyName: attr2, Values: []saml.AttributeValue{{Value: val2}}}}}}}
		p := schema.SAMLIdP{EmailAttribute: attr1, ExternalIDAttribute: attr2}
		in := samlSignIn(p, as, now)
		if in.AssertionID != id || in.KeepFor < samlReplayMargin || in.KeepFor > samlMaxReplayWindow+samlReplayMargin {
			t.Fatalf("id %q kept for %v", in.AssertionID, in.KeepFor)
		}
		for _, v := range []string{in.Email, in.ExternalID} {
			if v != "" && v != strings.TrimSpace(val1) && v != strings.TrimSpace(val2) && v != strings.TrimSpace(nameID) {
				t.Fatalf("mapped value %q comes from nowhere", v)
			}
		}
	})
}
