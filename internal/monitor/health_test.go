package monitor

import (
	"slices"
	"strings"
	"testing"
	"time"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

func TestComputeHealth(t *testing.T) {
	now := time.Unix(1000, 0)
	th := thresholdsOf(DefaultConfig())
	ok := monStats{AvailPercent: 80, StoreBytes: 1 << 20, WriteP99: time.Millisecond}
	mon := func(r int32, name string, in bool, s *monStats) healthMon {
		return healthMon{Rank: r, Name: name, Addr: "127.0.0.1:" + name, InQuorum: in, Stats: s}
	}
	withAvail := func(p float64) *monStats { s := ok; s.AvailPercent = p; return &s }

	h := computeHealth(now, []healthMon{mon(0, "a", true, &ok), mon(1, "b", true, &ok), mon(2, "c", true, nil)}, []string{"a", "b", "c"}, th)
	if h.GetStatus() != HealthOK || len(h.GetChecks()) != 0 {
		t.Fatalf("healthy cluster: %v", h)
	}

	down := mon(2, "c", false, nil)
	down.DownSince = now.Add(-90 * time.Second)
	big := ok
	big.StoreBytes = 16 << 30
	slow := ok
	slow.WriteP99 = 2 * time.Second
	h = computeHealth(now, []healthMon{mon(0, "a", true, withAvail(25)), mon(1, "b", true, &big), down, mon(3, "d", true, &slow)},
		[]string{"a", "b", "d"}, th)
	if h.GetStatus() != HealthWarn {
		t.Fatalf("status %s, want HEALTH_WARN", h.GetStatus())
	}
	want := map[string][]string{
		CheckMonDown:    {"1/4 mons down, quorum a,b,d", "mon.c (rank 2) addr 127.0.0.1:c is down (out of quorum) for 1m30s"},
		CheckMonDiskLow: {"mon a is low on available space", "mon.a has 25% avail"},
		CheckMonDiskBig: {"mon b is using a lot of disk space", "mon.b is 16.0 GiB >= mon_data_size_warn (15.0 GiB)"},
		CheckMonSlow:    {"mon d is slow writing its store", "mon.d store write p99 2s > mon_slow_write (1s)"},
	}
	if len(h.GetChecks()) != len(want) {
		t.Fatalf("checks %v", h.GetChecks())
	}
	for name, w := range want {
		c := h.GetChecks()[name]
		if c.GetSeverity() != HealthWarn || c.GetSummary() != w[0] || !slices.Equal(c.GetDetail(), w[1:]) {
			t.Fatalf("%s = %v, want %q", name, c, w)
		}
	}

	silent := mon(1, "b", true, nil)
	silent.Silent, silent.DownSince = true, now.Add(-5*time.Second)
	h = computeHealth(now, []healthMon{mon(0, "a", true, &ok), silent}, []string{"a", "b"}, th)
	if d := h.GetChecks()[CheckMonDown].GetDetail(); len(d) != 1 || d[0] != "mon.b (rank 1) addr 127.0.0.1:b is down (not responding) for 5s" {
		t.Fatalf("silent peon: %v", h)
	}

	// Below the critical threshold: HEALTH_ERR, and not also MON_DISK_LOW for the same mon.
	h = computeHealth(now, []healthMon{mon(0, "a", true, withAvail(4)), mon(1, "b", true, withAvail(5)), mon(2, "c", true, withAvail(29))},
		[]string{"a", "b", "c"}, th)
	if h.GetStatus() != HealthErr {
		t.Fatalf("status %s, want HEALTH_ERR", h.GetStatus())
	}
	crit, low := h.GetChecks()[CheckMonDiskCrit], h.GetChecks()[CheckMonDiskLow]
	if crit.GetSeverity() != HealthErr || crit.GetSummary() != "mons a,b are very low on available space" ||
		!slices.Equal(crit.GetDetail(), []string{"mon.a has 4% avail", "mon.b has 5% avail"}) {
		t.Fatalf("MON_DISK_CRIT = %v", crit)
	}
	if !slices.Equal(low.GetDetail(), []string{"mon.c has 29% avail"}) {
		t.Fatalf("MON_DISK_LOW = %v", low)
	}
}

func TestWriteP99(t *testing.T) {
	var h healthState
	if h.writeP99() != 0 {
		t.Fatal("p99 without samples")
	}
	for i := range 2 * writeSamples {
		d := time.Millisecond
		if i >= 2*writeSamples-5 {
			d = time.Second // the 5 newest of 256 are slow: above the 99th percentile
		}
		h.observeWrite(d)
	}
	if len(h.writes) != writeSamples || h.writeP99() != time.Second {
		t.Fatalf("%d samples, p99 %s", len(h.writes), h.writeP99())
	}
}

func TestLocalStats(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := localStats(dir); err == nil {
		t.Fatal("no store file, no error")
	}
}

// TestHealthCluster: a stopped monitor is MON_DOWN by name; with mon_data_avail_warn at 100
// every live monitor's disk check fires with its own name (peers' numbers come over Probe).
func TestHealthCluster(t *testing.T) {
	cfgs, lis := newCluster(t, 3)
	for i := range cfgs {
		cfgs[i].MonDataAvailWarn = 100
		cfgs[i].MonDataAvailCrit = 0
	}
	mons := startAll(t, cfgs, lis)
	li := waitQuorum(t, mons)
	gone := (li + 2) % 3
	mons[gone].stop()
	var rest []*testMon
	for i, tm := range mons {
		if i != gone {
			rest = append(rest, tm)
		}
	}
	waitQuorum(t, rest)
	goneName := cfgs[gone].Name
	for _, tm := range rest {
		var last *minimonv1.HealthReply
		deadline := time.Now().Add(waitTimeout)
		for {
			ctx, cancel := rpcCtx(time.Second)
			h, err := tm.c.Health(ctx, &minimonv1.HealthRequest{})
			cancel()
			if err == nil {
				last = h
				down, low := h.GetChecks()[CheckMonDown], h.GetChecks()[CheckMonDiskLow]
				if h.GetStatus() == HealthWarn && down != nil && low != nil && len(low.GetDetail()) == 2 {
					if len(down.GetDetail()) != 1 || !strings.HasPrefix(down.GetDetail()[0], "mon."+goneName+" ") {
						t.Fatalf("mon.%s: MON_DOWN %v, want mon.%s", tm.cfg.Name, down, goneName)
					}
					for i, r := range rest {
						if !strings.HasPrefix(low.GetDetail()[i], "mon."+r.cfg.Name+" has ") {
							t.Fatalf("mon.%s: MON_DISK_LOW %v", tm.cfg.Name, low)
						}
					}
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("mon.%s: health %v (err %v)", tm.cfg.Name, last, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		ctx, cancel := rpcCtx(time.Second)
		st, err := tm.c.Status(ctx, &minimonv1.StatusRequest{})
		cancel()
		if err != nil || st.GetHealth().GetChecks()[CheckMonDiskLow] == nil {
			t.Fatalf("mon.%s: status health %v (%v)", tm.cfg.Name, st.GetHealth(), err)
		}
	}
}
