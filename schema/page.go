package schema

import (
	"encoding/base64"
	"encoding/json"
	"time"
)

// Page selects one page of a listing.
type Page struct {
	Size  int    // 1 to MaxPageSize; 0 means DefaultPageSize
	Token string // from the previous page's next token; "" for the first page
}

// Page sizes.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

func (p Page) limit() (int, error) {
	switch {
	case p.Size == 0:
		return DefaultPageSize, nil
	case p.Size < 0 || p.Size > MaxPageSize:
		return 0, fieldErr("page_size", "must be between 1 and %d, got %d", MaxPageSize, p.Size)
	}
	return p.Size, nil
}

// decode fills v from the page token; an empty token leaves v as it is.
func (p Page) decode(v any) error {
	if p.Token == "" {
		return nil
	}
	if len(p.Token) > 512 {
		return fieldErr("page_token", "too long")
	}
	b, err := base64.RawURLEncoding.DecodeString(p.Token)
	if err != nil || json.Unmarshal(b, v) != nil {
		return fieldErr("page_token", "not a token returned by this listing")
	}
	return nil
}

func encodeToken(v any) string {
	b, _ := json.Marshal(v) // v is always a small struct of strings and times
	return base64.RawURLEncoding.EncodeToString(b)
}

// timeKey is a position in a listing ordered by (created time, id), oldest first: its
// page token.
type timeKey struct {
	At time.Time `json:"a"`
	ID string    `json:"i"`
}

// timeKeyed decodes p's token as a timeKey; the first page starts before every row
// (the zero time and the zero UUID).
func (p Page) timeKeyed() (timeKey, error) {
	var k timeKey
	if err := p.decode(&k); err != nil {
		return k, err
	}
	if k.ID == "" {
		k.ID = "00000000-0000-0000-0000-000000000000"
		return k, nil
	}
	_, err := parseID("page_token", k.ID)
	return k, err
}

// pageOf cuts rows (read with limit+1) to limit and returns the next page's token, ""
// on the last page.
func pageOf[T any](rows []T, limit int, key func(T) timeKey) ([]T, string) {
	if len(rows) <= limit {
		return rows, ""
	}
	rows = rows[:limit]
	return rows, encodeToken(key(rows[limit-1]))
}
