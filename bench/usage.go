package bench

import (
	"sync"
	"time"

	"github.com/prometheus/procfs"

	"github.com/keyplane/keyplane/deploy"
)

// usage samples the node processes' CPU time and resident memory from /proc every
// second while a workload runs.
type usage struct {
	fs    *procfs.FS // nil without /proc: every reading is zero
	nodes []*deploy.Node
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
	u := &usage{fs: procFS(), nodes: cl.Nodes, stopc: make(chan struct{})}
	for _, n := range u.nodes {
		p := readProc(u.fs, n.Pid())
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
	for i, n := range u.nodes {
		p := readProc(u.fs, n.Pid())
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
		out[i] = NodeUsage{Node: n.ID, CPUs: end[i].cpu - u.start[i].cpu, RSSStartM: u.start[i].rss, RSSEndM: end[i].rss, RSSPeakM: u.peak[i],
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
