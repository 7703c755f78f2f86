package monitor

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/client"
)

// kvRm removes key through tm and returns the committing version.
func kvRm(t *testing.T, tm *testMon, key string) uint64 {
	t.Helper()
	ctx, cancel := rpcCtx(waitTimeout)
	defer cancel()
	r, err := tm.c.KVRm(ctx, &minimonv1.KVRmRequest{Key: key})
	if err != nil {
		t.Fatalf("KVRm(%s) on %s: %v", key, tm.cfg.Name, err)
	}
	return r.GetVersion()
}

// recvOne receives the next event of a raw stream or fails.
func recvOne(t *testing.T, s grpc.ServerStreamingClient[minimonv1.WatchEvent]) *minimonv1.WatchEvent {
	t.Helper()
	ev, err := s.Recv()
	if err != nil {
		t.Fatalf("watch Recv: %v", err)
	}
	return ev
}

// kvEvent renders an event for comparison: "v<version> [snap] key=value key=<deleted> ...".
func kvEvent(ev *minimonv1.WatchEvent) string {
	var b strings.Builder
	fmt.Fprintf(&b, "v%d", ev.GetVersion())
	if ev.GetSnapshot() {
		b.WriteString(" snap")
	}
	for _, c := range ev.GetKv() {
		if c.GetDeleted() {
			fmt.Fprintf(&b, " %s=<deleted>", c.GetKey())
		} else {
			fmt.Fprintf(&b, " %s=%s", c.GetKey(), c.GetValue())
		}
	}
	return b.String()
}

// onLoopT runs fn on tm's loop.
func onLoopT(t *testing.T, tm *testMon, fn func()) {
	t.Helper()
	ctx, cancel := rpcCtx(waitTimeout)
	defer cancel()
	if err := tm.m.onLoop(ctx, func(time.Time) { fn() }); err != nil {
		t.Fatal(err)
	}
}

func watchers(t *testing.T, tm *testMon) int {
	var n int
	onLoopT(t, tm, func() { n = len(tm.m.l.watch.watchers) })
	return n
}

func TestWatch(t *testing.T) {
	cfgs, lis := newCluster(t, 3)
	mons := startAll(t, cfgs, lis)
	li := waitQuorum(t, mons)
	leader, peon := mons[li], mons[(li+1)%3]
	v0 := kvSet(t, leader, "a/1", "x")
	kvSet(t, leader, "b/1", "other")

	t.Run("kv snapshot then every change once in order", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		s, err := peon.c.Watch(ctx, &minimonv1.WatchRequest{Target: WatchKV, Prefix: "a/"})
		if err != nil {
			t.Fatal(err)
		}
		snap := recvOne(t, s)
		if !snap.GetSnapshot() || snap.GetVersion() < v0 || len(snap.GetKv()) != 1 || snap.GetKv()[0].GetKey() != "a/1" ||
			string(snap.GetKv()[0].GetValue()) != "x" {
			t.Fatalf("first event = %s, want a snapshot with a/1=x", kvEvent(snap))
		}
		var want []string
		want = append(want, fmt.Sprintf("v%d a/2=y", kvSet(t, peon, "a/2", "y")))
		kvSet(t, leader, "b/2", "not watched")
		want = append(want, fmt.Sprintf("v%d a/1=<deleted>", kvRm(t, leader, "a/1")))
		want = append(want, fmt.Sprintf("v%d a/2=z", kvSet(t, mons[(li+2)%3], "a/2", "z")))
		want = append(want, fmt.Sprintf("v%d a/3=", kvSet(t, leader, "a/3", "")))
		for i, w := range want {
			if got := kvEvent(recvOne(t, s)); got != w {
				t.Fatalf("event %d = %q, want %q", i, got, w)
			}
		}
	})

	t.Run("monmap watch gets the current map", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		s, err := peon.c.Watch(ctx, &minimonv1.WatchRequest{Target: WatchMonmap})
		if err != nil {
			t.Fatal(err)
		}
		ev := recvOne(t, s)
		if !ev.GetSnapshot() || ev.GetMonmap().GetEpoch() != 1 || len(ev.GetMonmap().GetMons()) != 3 ||
			ev.GetMonmap().GetFsid() != leader.m.FSID() {
			t.Fatalf("monmap watch first event = %v", ev)
		}
	})

	t.Run("replay from a version without a snapshot", func(t *testing.T) {
		from := kvSet(t, leader, "r/1", "one")
		v2 := kvSet(t, leader, "r/2", "two")
		v3 := kvRm(t, leader, "r/1")
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		s, err := peon.c.Watch(ctx, &minimonv1.WatchRequest{Target: WatchKV, Prefix: "r/", FromVersion: from})
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []string{fmt.Sprintf("v%d r/2=two", v2), fmt.Sprintf("v%d r/1=<deleted>", v3)} {
			if got := kvEvent(recvOne(t, s)); got != w {
				t.Fatalf("replayed event = %q, want %q", got, w)
			}
		}
		v4 := kvSet(t, leader, "r/3", "three")
		if got, w := kvEvent(recvOne(t, s)), fmt.Sprintf("v%d r/3=three", v4); got != w {
			t.Fatalf("live event after the replay = %q, want %q", got, w)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		for _, req := range []*minimonv1.WatchRequest{{Target: "osdmap"}, {Target: WatchConfig}, {Target: ""}} {
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			s, err := peon.c.Watch(ctx, req)
			if err == nil {
				_, err = s.Recv()
			}
			cancel()
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("Watch(%v) = %v, want InvalidArgument", req, err)
			}
		}
	})

	t.Run("limit of concurrent watches", func(t *testing.T) {
		onLoopT(t, leader, func() { leader.m.l.watch.limit = 1 })
		defer onLoopT(t, leader, func() { leader.m.l.watch.limit = 0 })
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		s1, err := leader.c.Watch(ctx, &minimonv1.WatchRequest{Target: WatchMonmap})
		if err != nil {
			t.Fatal(err)
		}
		recvOne(t, s1)
		s2, err := leader.c.Watch(ctx, &minimonv1.WatchRequest{Target: WatchMonmap})
		if err == nil {
			_, err = s2.Recv()
		}
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("second watch with a limit of 1: %v, want ResourceExhausted", err)
		}
	})

	t.Run("a watcher that does not read is cut off", func(t *testing.T) {
		const qlen = 4
		onLoopT(t, leader, func() { leader.m.l.watch.queueLen = qlen })
		defer onLoopT(t, leader, func() { leader.m.l.watch.queueLen = 0 })
		// Small fixed flow-control windows (no BDP growth), so the server's sends block soon.
		cc, err := grpc.NewClient(leader.cfg.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		s, err := minimonv1.NewMonitorClient(cc).Watch(ctx, &minimonv1.WatchRequest{Target: WatchKV, Prefix: "slow/"})
		if err != nil {
			t.Fatal(err)
		}
		recvOne(t, s) // attached
		before := watchers(t, leader)
		val := strings.Repeat("v", 32<<10)
		var versions []uint64
		cut := false
		for i := 0; i < 40 && !cut; i++ {
			versions = append(versions, kvSet(t, leader, fmt.Sprintf("slow/%02d", i), val))
			// Bounded: never more than the queue holds waits for the sender.
			onLoopT(t, leader, func() {
				for w := range leader.m.l.watch.watchers {
					if w.spec.prefix == "slow/" && (len(w.q) > qlen || w.bytes.Load() > watchQueueBytes) {
						t.Errorf("queue of %d events, %d bytes above its bounds", len(w.q), w.bytes.Load())
					}
				}
			})
			cut = watchers(t, leader) < before
		}
		if !cut {
			t.Fatalf("a watcher that never reads was not cut off after %d writes of 32 KiB", len(versions))
		}
		// Now read: what was sent arrives in order, then the stream ends with Aborted.
		var got []uint64
		for {
			ev, err := s.Recv()
			if err != nil {
				if status.Code(err) != codes.Aborted || !strings.Contains(err.Error(), "watch fell behind; resume from version") {
					t.Fatalf("stream ended with %v, want Aborted (fell behind)", err)
				}
				break
			}
			got = append(got, ev.GetVersion())
		}
		if len(got) == 0 || len(got) >= len(versions) {
			t.Fatalf("received %d of %d events before the cut", len(got), len(versions))
		}
		for i, v := range got {
			if v != versions[i] {
				t.Fatalf("event %d has version %d, want %d (versions %v)", i, v, versions[i], versions)
			}
		}
		// Resuming from the last version received replays the rest, no snapshot.
		s2, err := leader.c.Watch(ctx, &minimonv1.WatchRequest{Target: WatchKV, Prefix: "slow/", FromVersion: got[len(got)-1]})
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range versions[len(got):] {
			ev := recvOne(t, s2)
			if ev.GetSnapshot() || ev.GetVersion() != v {
				t.Fatalf("resumed event: version %d snapshot %v, want version %d", ev.GetVersion(), ev.GetSnapshot(), v)
			}
		}
	})

	t.Run("client resumes on another monitor when its peon stops", func(t *testing.T) {
		other := mons[(li+2)%3]
		c, err := client.New(client.Config{Endpoints: []string{other.cfg.Addr, leader.cfg.Addr}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*waitTimeout)
		defer cancel()
		events := make(chan *minimonv1.WatchEvent, 64)
		errc := make(chan error, 1)
		go func() {
			defer close(events)
			for ev, err := range c.Watch(ctx, &minimonv1.WatchRequest{Target: WatchKV, Prefix: "c/"}) {
				if err != nil {
					errc <- err
					return
				}
				events <- ev
			}
		}()
		next := func() *minimonv1.WatchEvent {
			t.Helper()
			select {
			case ev, ok := <-events:
				if !ok {
					t.Fatalf("watch ended: %v", <-errc)
				}
				return ev
			case <-ctx.Done():
				t.Fatal("no watch event")
			}
			return nil
		}
		if ev := next(); !ev.GetSnapshot() || len(ev.GetKv()) != 0 {
			t.Fatalf("first event = %s, want an empty snapshot", kvEvent(ev))
		}
		var want []string
		for i := range 3 {
			want = append(want, fmt.Sprintf("v%d c/%d=before", kvSet(t, leader, fmt.Sprintf("c/%d", i), "before"), i))
		}
		for _, w := range want {
			if got := kvEvent(next()); got != w {
				t.Fatalf("event = %q, want %q", got, w)
			}
		}
		other.stop() // the watched peon goes away
		want = want[:0]
		for i := range 3 {
			want = append(want, fmt.Sprintf("v%d c/%d=after", kvSet(t, leader, fmt.Sprintf("c/%d", i), "after"), i))
		}
		want = append(want, fmt.Sprintf("v%d c/0=<deleted>", kvRm(t, leader, "c/0")))
		for _, w := range want {
			if got := kvEvent(next()); got != w {
				t.Fatalf("event after the reattach = %q, want %q", got, w)
			}
		}
		cancel()
		for range events {
		}
	})
}

// TestWatchEndsWhenQuorumLost: a watch on a monitor that leaves the quorum ends with
// Unavailable, so the client watches elsewhere.
func TestWatchEndsWhenQuorumLost(t *testing.T) {
	cfgs, lis := newCluster(t, 3)
	mons := startAll(t, cfgs, lis)
	li := waitQuorum(t, mons)
	tm := mons[(li+1)%3]
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTimeout)
	defer cancel()
	s, err := tm.c.Watch(ctx, &minimonv1.WatchRequest{Target: WatchMonmap})
	if err != nil {
		t.Fatal(err)
	}
	recvOne(t, s)
	for i, o := range mons {
		if o != tm {
			mons[i].stop()
		}
	}
	for {
		_, err := s.Recv()
		if err == nil {
			continue
		}
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("watch on a monitor that lost its quorum ended with %v, want Unavailable", err)
		}
		return
	}
}

// TestWatchConfig: a config watch gets the entity's effective map first, then the map again
// each time a commit changes it (and only then), with its masks naming host and class.
func TestWatchConfig(t *testing.T) {
	cfgs, lis := newCluster(t, 3)
	mons := startAll(t, cfgs, lis)
	li := waitQuorum(t, mons)
	leader, peon := mons[li], mons[(li+1)%3]
	set := func(who, name, value string) {
		t.Helper()
		ctx, cancel := rpcCtx(waitTimeout)
		defer cancel()
		if _, err := peon.c.ConfigSet(ctx, &minimonv1.ConfigSetRequest{Who: who, Name: name, Value: value}); err != nil {
			t.Fatalf("ConfigSet(%s %s): %v", who, name, err)
		}
	}
	rm := func(who, name string) {
		t.Helper()
		ctx, cancel := rpcCtx(waitTimeout)
		defer cancel()
		if _, err := leader.c.ConfigRm(ctx, &minimonv1.ConfigRmRequest{Who: who, Name: name}); err != nil {
			t.Fatalf("ConfigRm(%s %s): %v", who, name, err)
		}
	}
	set("global", "x", "0")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	s, err := peon.c.Watch(ctx, &minimonv1.WatchRequest{Target: WatchConfig, Who: "osd.3/host:h1"})
	if err != nil {
		t.Fatal(err)
	}
	render := func(ev *minimonv1.WatchEvent) string {
		keys := make([]string, 0, len(ev.GetConfig()))
		for k, v := range ev.GetConfig() {
			keys = append(keys, k+"="+v)
		}
		slices.Sort(keys)
		return strings.Join(keys, ",")
	}
	first := recvOne(t, s)
	if !first.GetSnapshot() || render(first) != "x=0" {
		t.Fatalf("first event: snapshot %v config %q, want a snapshot x=0", first.GetSnapshot(), render(first))
	}
	last := first.GetVersion()
	expect := func(want string) {
		t.Helper()
		ev := recvOne(t, s)
		if ev.GetSnapshot() || ev.GetVersion() <= last || render(ev) != want {
			t.Fatalf("event v%d (after v%d) snapshot %v config %q, want %q", ev.GetVersion(), last, ev.GetSnapshot(), render(ev), want)
		}
		last = ev.GetVersion()
	}
	set("global", "a", "1")
	expect("a=1,x=0")
	set("osd.4", "b", "2")       // another entity: no event
	set("osd/host:h2", "c", "3") // another host: no event
	set("global", "x", "0")      // no change at all
	set("osd.3", "a", "2")       // the entity's own section wins over global
	expect("a=2,x=0")
	set("osd/host:h1", "d", "4") // a mask that matches
	expect("a=2,d=4,x=0")
	rm("global", "a") // hidden by osd.3's a: no event
	rm("osd.3", "a")
	expect("d=4,x=0")
}
