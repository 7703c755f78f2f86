package monitor

// Health checks (ceph-mon-spec.md 7.4): the Health RPC and the health block of Status.
//
// Checks: MON_DOWN (members out of the quorum, and since when; also a quorum member that has
// not answered our probes for healthStale: a dead peon does not end the quorum here, design.md
// 4 difference 2, so the quorum alone would not show it), MON_DISK_LOW / MON_DISK_CRIT
// (free space of a monitor's data dir at or below mon_data_avail_warn / _crit percent),
// MON_DISK_BIG (a store file above mon_data_size_warn), MON_SLOW (a monitor whose recent store
// writes, issue to durable, have a p99 above mon_slow_write).
//
// Numbers: each monitor measures its own (statfs of the data dir, size of the store file, the
// durations of its store writes) every healthInterval on a goroutine, and answers them in
// Peer.Probe. Every quorum member (the leader, and peons too, so a peon answers Health without
// asking the leader) probes the other quorum members at the same interval and caches the
// answers; numbers older than healthStale are dropped (the monitor is then MON_DOWN or will be).

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/node"
)

// Health statuses and checks (Ceph's names).
const (
	HealthOK         = "HEALTH_OK"
	HealthWarn       = "HEALTH_WARN"
	HealthErr        = "HEALTH_ERR"
	CheckMonDown     = "MON_DOWN"
	CheckMonDiskLow  = "MON_DISK_LOW"
	CheckMonDiskCrit = "MON_DISK_CRIT"
	CheckMonDiskBig  = "MON_DISK_BIG"
	CheckMonSlow     = "MON_SLOW"
)

const (
	// healthInterval: how often a monitor measures itself and probes the quorum.
	healthInterval = time.Second
	// healthStale: peer numbers older than this are not used.
	healthStale = 3 * healthInterval
	// healthProbeTimeout bounds one probe of a peer.
	healthProbeTimeout = time.Second
	// writeSamples: store write durations kept for the p99.
	writeSamples = 256
)

// monStats are one monitor's numbers.
type monStats struct {
	AvailPercent float64
	StoreBytes   uint64
	WriteP99     time.Duration
	At           time.Time // when they were received (or measured, for ourselves)
}

// healthState is the loop's health bookkeeping.
type healthState struct {
	writes    []time.Duration // ring of recent store write durations
	writeNext int
	self      *monStats
	peers     map[int32]monStats // newest numbers per peer; At is when they came
	downSince map[int32]time.Time
	nextRound time.Time
	running   bool
}

func (m *Monitor) healthSt() *healthState {
	if m.l.health == nil {
		m.l.health = &healthState{peers: map[int32]monStats{}, downSince: map[int32]time.Time{}}
	}
	return m.l.health
}

// observeWrite records one store write's duration (on the loop).
func (h *healthState) observeWrite(d time.Duration) {
	if len(h.writes) < writeSamples {
		h.writes = append(h.writes, d)
		return
	}
	h.writes[h.writeNext] = d
	h.writeNext = (h.writeNext + 1) % writeSamples
}

// writeP99 of the recorded writes (0 without any).
func (h *healthState) writeP99() time.Duration {
	if len(h.writes) == 0 {
		return 0
	}
	s := slices.Clone(h.writes)
	slices.Sort(s)
	return s[(len(s)*99)/100]
}

// localStats measures the data dir's free space and the store file's size.
func localStats(dataDir string) (avail float64, size uint64, err error) {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dataDir, &fs); err != nil {
		return 0, 0, err
	}
	if fs.Blocks > 0 {
		avail = 100 * float64(fs.Bavail) / float64(fs.Blocks)
	}
	fi, err := os.Stat(filepath.Join(dataDir, StoreFile))
	if err != nil {
		return 0, 0, err
	}
	return avail, uint64(fi.Size()), nil
}

// healthTick starts a measuring round when one is due (on the loop, from tick).
func (m *Monitor) healthTick(now time.Time) {
	h := m.healthSt()
	if h.running || now.Before(h.nextRound) {
		return
	}
	h.running, h.nextRound = true, now.Add(healthInterval)
	st := m.l.node.Status()
	targets := map[int32]string{}
	if st.Role.InQuorum() {
		for _, mi := range m.l.monmap.GetMons() {
			if mi.GetRank() != m.l.rank && slices.Contains(st.Quorum, mi.GetRank()) {
				targets[mi.GetRank()] = mi.GetAddr()
			}
		}
	}
	dataDir := m.cfg.DataDir
	m.bgWG.Add(1)
	go func() {
		defer m.bgWG.Done()
		avail, size, lerr := localStats(dataDir)
		got := m.probeStats(targets)
		select {
		case m.events <- func() {
			h.running = false
			t := time.Now()
			if lerr != nil {
				m.lg.Warn("cannot measure the data dir", zap.Error(lerr))
			} else {
				h.self = &monStats{AvailPercent: avail, StoreBytes: size, At: t}
			}
			for r, s := range got {
				s.At = t
				h.peers[r] = s
			}
		}:
		case <-m.loopGone:
		}
	}()
}

// probeStats asks each target for its numbers over Peer.Probe, in parallel.
func (m *Monitor) probeStats(targets map[int32]string) map[int32]monStats {
	var mu sync.Mutex
	out := map[int32]monStats{}
	var wg sync.WaitGroup
	for r, addr := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cc, err := m.peerConn(addr)
			if err != nil {
				return
			}
			ctx, cancel := context.WithTimeout(m.bg, healthProbeTimeout)
			defer cancel()
			rep, err := minimonv1.NewPeerClient(cc).Probe(ctx, &minimonv1.ProbeMessage{
				Op: minimonv1.ProbeMessage_PROBE, Name: m.cfg.Name, Rank: m.l.rank, Fsid: m.fsid})
			if err != nil || !rep.GetHasStats() || rep.GetRank() != r {
				return
			}
			mu.Lock()
			out[r] = monStats{AvailPercent: rep.GetAvailPercent(), StoreBytes: rep.GetStoreBytes(),
				WriteP99: time.Duration(rep.GetStoreWriteP99Seconds() * float64(time.Second))}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

// addStats puts our numbers in a Peer.Probe answer (on the loop).
func (m *Monitor) addStats(r *minimonv1.ProbeMessage) {
	h := m.healthSt()
	if h.self == nil {
		return
	}
	r.HasStats = true
	r.AvailPercent, r.StoreBytes = h.self.AvailPercent, h.self.StoreBytes
	r.StoreWriteP99Seconds = h.writeP99().Seconds()
}

// healthMon is one member as the check computation sees it.
type healthMon struct {
	Rank      int32
	Name      string
	Addr      string
	InQuorum  bool
	Silent    bool      // in the quorum but not answering probes
	DownSince time.Time // zero when unknown or in quorum
	Stats     *monStats // nil when unknown
}

// healthThresholds are the options the checks compare against.
type healthThresholds struct {
	AvailWarn, AvailCrit int
	SizeWarn             int64
	SlowWrite            time.Duration
}

func thresholdsOf(c Config) healthThresholds {
	return healthThresholds{AvailWarn: c.MonDataAvailWarn, AvailCrit: c.MonDataAvailCrit,
		SizeWarn: c.MonDataSizeWarn, SlowWrite: c.MonSlowWrite}
}

// computeHealth is the pure check computation.
func computeHealth(now time.Time, mons []healthMon, quorumNames []string, th healthThresholds) *minimonv1.HealthReply {
	checks := map[string]*minimonv1.HealthCheck{}
	var down, low, crit, big, slow []healthMon
	for _, hm := range mons {
		if !hm.InQuorum || hm.Silent {
			down = append(down, hm)
			continue
		}
		s := hm.Stats
		if s == nil {
			continue
		}
		switch {
		case s.AvailPercent <= float64(th.AvailCrit):
			crit = append(crit, hm)
		case s.AvailPercent <= float64(th.AvailWarn):
			low = append(low, hm)
		}
		if s.StoreBytes > uint64(th.SizeWarn) {
			big = append(big, hm)
		}
		if s.WriteP99 > th.SlowWrite {
			slow = append(slow, hm)
		}
	}
	if len(down) > 0 {
		c := &minimonv1.HealthCheck{Severity: HealthWarn,
			Summary: fmt.Sprintf("%d/%d mons down, quorum %s", len(down), len(mons), strings.Join(quorumNames, ","))}
		for _, hm := range down {
			why := "out of quorum"
			if hm.InQuorum {
				why = "not responding"
			}
			d := fmt.Sprintf("mon.%s (rank %d) addr %s is down (%s)", hm.Name, hm.Rank, hm.Addr, why)
			if !hm.DownSince.IsZero() {
				d += fmt.Sprintf(" for %s", now.Sub(hm.DownSince).Round(time.Second))
			}
			c.Detail = append(c.Detail, d)
		}
		checks[CheckMonDown] = c
	}
	avail := func(hm healthMon) string {
		return fmt.Sprintf("mon.%s has %d%% avail", hm.Name, int(hm.Stats.AvailPercent))
	}
	if len(crit) > 0 {
		checks[CheckMonDiskCrit] = diskCheck(HealthErr, crit, "very low on available space", avail)
	}
	if len(low) > 0 {
		checks[CheckMonDiskLow] = diskCheck(HealthWarn, low, "low on available space", avail)
	}
	if len(big) > 0 {
		checks[CheckMonDiskBig] = diskCheck(HealthWarn, big, "using a lot of disk space", func(hm healthMon) string {
			return fmt.Sprintf("mon.%s is %s >= mon_data_size_warn (%s)", hm.Name,
				gib(int64(hm.Stats.StoreBytes)), gib(th.SizeWarn))
		})
	}
	if len(slow) > 0 {
		checks[CheckMonSlow] = diskCheck(HealthWarn, slow, "slow writing its store", func(hm healthMon) string {
			return fmt.Sprintf("mon.%s store write p99 %s > mon_slow_write (%s)", hm.Name,
				hm.Stats.WriteP99.Round(time.Millisecond), th.SlowWrite)
		})
	}
	st := HealthOK
	for _, c := range checks {
		if c.GetSeverity() == HealthErr {
			st = HealthErr
			break
		}
		st = HealthWarn
	}
	return &minimonv1.HealthReply{Status: st, Checks: checks}
}

// diskCheck: Ceph's "mon a is ..." / "mons a,b are ..." summary and one detail line each.
func diskCheck(sev string, mons []healthMon, what string, detail func(healthMon) string) *minimonv1.HealthCheck {
	names := make([]string, len(mons))
	for i, hm := range mons {
		names[i] = hm.Name
	}
	summary := fmt.Sprintf("mon %s is %s", names[0], what)
	if len(mons) > 1 {
		summary = fmt.Sprintf("mons %s are %s", strings.Join(names, ","), what)
	}
	c := &minimonv1.HealthCheck{Severity: sev, Summary: summary}
	for _, hm := range mons {
		c.Detail = append(c.Detail, detail(hm))
	}
	return c
}

func gib(b int64) string {
	return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
}

// healthReply computes the checks from what this monitor knows (on the loop).
func (m *Monitor) healthReply(st node.Status) *minimonv1.HealthReply {
	now := time.Now()
	h := m.healthSt()
	var mons []healthMon
	for _, mi := range m.l.monmap.GetMons() {
		r := mi.GetRank()
		hm := healthMon{Rank: r, Name: mi.GetName(), Addr: mi.GetAddr(), InQuorum: slices.Contains(st.Quorum, r)}
		if !hm.InQuorum {
			// Out of the quorum since it formed without it, unless we saw it leave earlier.
			if _, ok := h.downSince[r]; !ok {
				h.downSince[r] = st.QuorumSince
			}
			hm.DownSince = h.downSince[r]
		}
		switch {
		case r == m.l.rank && h.self != nil:
			s := *h.self
			s.WriteP99 = h.writeP99()
			hm.Stats = &s
		case r != m.l.rank:
			s, ok := h.peers[r]
			if ok && now.Sub(s.At) < healthStale {
				hm.Stats = &s
			}
			// Silent: no answer for healthStale, counted from when the quorum formed (or
			// from our last measuring round that could have reached it).
			if hm.InQuorum && now.Sub(st.QuorumSince) > healthStale && (!ok || now.Sub(s.At) > healthStale) {
				hm.Silent = true
				if _, ok := h.downSince[r]; !ok {
					h.downSince[r] = now
				}
				hm.DownSince = h.downSince[r]
			}
		}
		if hm.InQuorum && !hm.Silent {
			delete(h.downSince, r)
		}
		mons = append(mons, hm)
	}
	return computeHealth(now, mons, m.quorumNames(st.Quorum), thresholdsOf(m.cfg))
}
