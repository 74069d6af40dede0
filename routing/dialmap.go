package routing

import (
	"fmt"
	"strings"
)

// ParseDialMap parses Config.Dial from its flag form, "from=to,from=to" with host:port
// on both sides (as --peer-dial-map takes it). An empty string is an empty map.
func ParseDialMap(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		from, to, ok := strings.Cut(p, "=")
		if _, _, err := splitHostPort(from); !ok || err != nil {
			return nil, fmt.Errorf("%q is not from=to with host:port on both sides", p)
		}
		if _, _, err := splitHostPort(to); err != nil {
			return nil, fmt.Errorf("%q is not from=to with host:port on both sides", p)
		}
		out[from] = to
	}
	return out, nil
}
