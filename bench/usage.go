package bench

import (
	"sync"
	"time"

	"github.com/prometheus/procfs"

	"github.com/keyplane/keyplane/deploy"
)

// usage samples processes' CPU time and resident memory from /proc every second while
// a workload runs.
type usage struct {
	fs    *procfs.FS // nil without /proc: every reading is zero
	names []string
	pids  []func() int // a node's pid may change if it restarts
	start []proc
	peak  []float64
	// minutes holds each node's RSS at the start and every 60 samples after.
	minutes [][]float64
	samples int
	stopc   chan struct{}
	wg      sync.WaitGroup
	mu      sync.Mutex
}

type proc struct {
	cpu float64 // seconds
	rss float64 // MiB
}

func startUsage(cl *deploy.Cluster) *usage {
	names, pids := make([]string, len(cl.Nodes)), make([]func() int, len(cl.Nodes))
	for i, n := range cl.Nodes {
		names[i], pids[i] = n.ID, n.Pid
	}
	return sampleProcs(names, pids)
}

// StartUsage samples the process pid (named name in the result) every second until
// Stop: the load bench's sampler, for package bench/peers.
func StartUsage(name string, pid int) *Usage {
	return &Usage{u: sampleProcs([]string{name}, []func() int{func() int { return pid }})}
}

// Usage is a running sampler of one process (StartUsage).
type Usage struct{ u *usage }

// Stop ends the sampling and returns the process's CPU seconds and RSS.
func (u *Usage) Stop() NodeUsage { return u.u.stop()[0] }

func sampleProcs(names []string, pids []func() int) *usage {
	u := &usage{fs: procFS(), names: names, pids: pids, stopc: make(chan struct{})}
	for _, pid := range u.pids {
		p := readProc(u.fs, pid())
		u.start = append(u.start, p)
		u.peak = append(u.peak, p.rss)
		u.minutes = append(u.minutes, []float64{p.rss})
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
				u.tick()
			}
		}
	}()
	return u
}

// tick is the once-a-second sample; every 60th also goes into the per-minute series.
func (u *usage) tick() {
	now := u.sample()
	u.mu.Lock()
	defer u.mu.Unlock()
	u.samples++
	if u.samples%60 == 0 {
		for i, p := range now {
			u.minutes[i] = append(u.minutes[i], p.rss)
		}
	}
}

func (u *usage) sample() []proc {
	u.mu.Lock()
	defer u.mu.Unlock()
	var now []proc
	for i, pid := range u.pids {
		p := readProc(u.fs, pid())
		u.peak[i] = max(u.peak[i], p.rss)
		now = append(now, p)
	}
	return now
}

func (u *usage) stop() []NodeUsage {
	close(u.stopc)
	u.wg.Wait()
	end := u.sample()
	out := make([]NodeUsage, len(u.pids))
	for i, name := range u.names {
		out[i] = NodeUsage{Node: name, CPUs: end[i].cpu - u.start[i].cpu, RSSStartM: u.start[i].rss, RSSEndM: end[i].rss, RSSPeakM: u.peak[i],
			RSSPerMinute: u.minutes[i]}
	}
	return out
}

// readProc reads a process's CPU seconds (user + system) and RSS in MiB from fs; zero
// when the process is gone.
func readProc(fs *procfs.FS, pid int) proc {
	if fs == nil || pid <= 0 {
		return proc{}
	}
	p, err := fs.Proc(pid)
	if err != nil {
		return proc{}
	}
	st, err := p.Stat()
	if err != nil {
		return proc{}
	}
	return proc{cpu: st.CPUTime(), rss: float64(st.ResidentMemory()) / (1 << 20)}
}
