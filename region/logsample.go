package region

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// logSampler writes a recurring log line at most once per interval per key, counting
// the occurrences in between, so a line that may come with every call (break-glass)
// costs a map lookup rather than a write. Safe for concurrent use.
type logSampler struct {
	every time.Duration
	now   func() time.Time

	mu sync.Mutex
	m  map[string]*sampledLine
}

type sampledLine struct {
	last    time.Time
	skipped int
}

// maxSampledKeys bounds the sampler's memory; past it the map starts again (a few
// lines more, never fewer than one per key per interval).
const maxSampledKeys = 10_000

func newLogSampler(every time.Duration) *logSampler {
	return &logSampler{every: every, now: time.Now, m: map[string]*sampledLine{}}
}

// allow reports whether the line of key is due, and how many occurrences it skipped
// since the last one written.
func (s *logSampler) allow(key string) (bool, int) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.m[key]
	if l == nil {
		if len(s.m) >= maxSampledKeys {
			clear(s.m)
		}
		s.m[key] = &sampledLine{last: now}
		return true, 0
	}
	if now.Sub(l.last) < s.every {
		l.skipped++
		return false, 0
	}
	skipped := l.skipped
	l.last, l.skipped = now, 0
	return true, skipped
}

// breakGlassLine logs a tenant-scoped call made with the operator secret (the metric
// keyplane_break_glass_calls_total counts every one; the audit event of a change marks
// it too).
func (s *logSampler) breakGlassLine(ctx context.Context, log *slog.Logger, proc, tenantID string) {
	ok, skipped := s.allow(proc + "\x00" + tenantID)
	if !ok {
		return
	}
	log.LogAttrs(ctx, slog.LevelInfo, "break-glass: operator secret on a tenant-scoped call",
		slog.String("procedure", proc), slog.String("tenant", tenantID), slog.String("request_id", requestID(ctx)),
		slog.Int("calls_since_last_line", skipped))
}
