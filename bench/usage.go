package bench

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keyplane/keyplane/deploy"
)

// usage samples the node processes' CPU time and resident memory from /proc every
// second while a workload runs.
type usage struct {
	nodes []*deploy.Node
	start []proc
	peak  []float64
	stopc chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
}

type proc struct {
	cpu float64 // seconds
	rss float64 // MiB
}

func startUsage(cl *deploy.Cluster) *usage {
	u := &usage{nodes: cl.Nodes, stopc: make(chan struct{})}
	for _, n := range u.nodes {
		p := readProc(n.Pid())
		u.start = append(u.start, p)
		u.peak = append(u.peak, p.rss)
	}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-u.stopc:
				return
			case <-t.C:
				u.sample()
			}
		}
	}()
	return u
}

func (u *usage) sample() []proc {
	u.mu.Lock()
	defer u.mu.Unlock()
	var now []proc
	for i, n := range u.nodes {
		p := readProc(n.Pid())
		u.peak[i] = max(u.peak[i], p.rss)
		now = append(now, p)
	}
	return now
}

func (u *usage) stop() []NodeUsage {
	close(u.stopc)
	u.wg.Wait()
	end := u.sample()
	out := make([]NodeUsage, len(u.nodes))
	for i, n := range u.nodes {
		out[i] = NodeUsage{Node: n.ID, CPUs: end[i].cpu - u.start[i].cpu, RSSStartM: u.start[i].rss, RSSEndM: end[i].rss, RSSPeakM: u.peak[i]}
	}
	return out
}

// readProc reads a process's CPU seconds (utime + stime) and RSS; zero when gone.
func readProc(pid int) proc {
	if pid <= 0 {
		return proc{}
	}
	var p proc
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
		// Fields after the command name (which may hold spaces) start after ')'.
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			f := strings.Fields(s[i+1:])
			if len(f) > 12 {
				ut, _ := strconv.ParseFloat(f[11], 64)
				st, _ := strconv.ParseFloat(f[12], 64)
				p.cpu = (ut + st) / 100 // USER_HZ is 100 on Linux
			}
		}
	}
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				p.rss = kb / 1024
			}
		}
	}
	return p
}
