package monitor

import (
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
)

// monStatuses reads every monitor's mon_status.
func monStatuses(t *testing.T, mons []*testMon) []*minimonv1.MonStatusReply {
	t.Helper()
	out := make([]*minimonv1.MonStatusReply, len(mons))
	for i, tm := range mons {
		ctx, cancel := rpcCtx(waitTimeout)
		st, err := tm.c.MonStatus(ctx, &minimonv1.MonStatusRequest{})
		cancel()
		if err != nil {
			t.Fatalf("MonStatus(%s): %v", tm.cfg.Name, err)
		}
		out[i] = st
	}
	return out
}

// A client with no rank in the member map probes every monitor: the answer is the member's
// REPLY plus the member map; another cluster's fsid is refused.
func TestProbeFromNonMember(t *testing.T) {
	cfgs, lis := newCluster(t, 3)
	mons := startAll(t, cfgs, lis)
	li := waitQuorum(t, mons)
	ver := kvSet(t, mons[li], "probe/k", "v")
	before := monStatuses(t, mons)
	leaderRank := before[li].GetRank()

	for i, tm := range mons {
		pc := minimonv1.NewPeerClient(tm.cc)
		for _, fsid := range []string{"", tm.m.FSID()} {
			ctx, cancel := rpcCtx(waitTimeout)
			r, err := pc.Probe(ctx, &minimonv1.ProbeMessage{Op: minimonv1.ProbeMessage_PROBE, Name: "newcomer", Rank: -1, Fsid: fsid})
			cancel()
			if err != nil {
				t.Fatalf("Probe(%s, fsid %q): %v", tm.cfg.Name, fsid, err)
			}
			if r.GetOp() != minimonv1.ProbeMessage_REPLY || r.GetName() != tm.cfg.Name || r.GetRank() != before[i].GetRank() ||
				r.GetFsid() != tm.m.FSID() {
				t.Fatalf("Probe(%s): op %v name %q rank %d fsid %q; want REPLY %q %d %q", tm.cfg.Name, r.GetOp(),
					r.GetName(), r.GetRank(), r.GetFsid(), tm.cfg.Name, before[i].GetRank(), tm.m.FSID())
			}
			if !r.GetHasLeader() || r.GetLeader() != leaderRank {
				t.Fatalf("Probe(%s): leader %d (has_leader %v), want %d", tm.cfg.Name, r.GetLeader(), r.GetHasLeader(), leaderRank)
			}
			q := slices.Clone(r.GetQuorum())
			slices.Sort(q)
			if !slices.Equal(q, []int32{0, 1, 2}) {
				t.Fatalf("Probe(%s): quorum %v, want [0 1 2]", tm.cfg.Name, r.GetQuorum())
			}
			if r.GetElectionEpoch() != before[i].GetElectionEpoch() || r.GetElectionEpoch()%2 != 0 {
				t.Fatalf("Probe(%s): election epoch %d, mon_status says %d", tm.cfg.Name, r.GetElectionEpoch(), before[i].GetElectionEpoch())
			}
			// The leader has committed the write; a peon may learn of it a little later.
			if i == li && r.GetLastCommitted() < ver {
				t.Fatalf("Probe(%s): last_committed %d < %d just written", tm.cfg.Name, r.GetLastCommitted(), ver)
			}
			if r.GetFirstCommitted() < 1 || r.GetFirstCommitted() > r.GetLastCommitted() {
				t.Fatalf("Probe(%s): first_committed %d, last_committed %d", tm.cfg.Name, r.GetFirstCommitted(), r.GetLastCommitted())
			}
			mm := r.GetMonmap()
			if len(mm.GetMons()) != 3 || mm.GetFsid() != tm.m.FSID() || r.GetMonmapEpoch() < 1 {
				t.Fatalf("Probe(%s): monmap %v, monmap_epoch %d", tm.cfg.Name, mm, r.GetMonmapEpoch())
			}
			for _, mi := range mm.GetMons() {
				if k := slices.IndexFunc(cfgs, func(c Config) bool { return c.Name == mi.GetName() }); k < 0 || cfgs[k].Addr != mi.GetAddr() {
					t.Fatalf("Probe(%s): monmap member %s@%s is not one of the cluster's", tm.cfg.Name, mi.GetName(), mi.GetAddr())
				}
			}
		}

		ctx, cancel := rpcCtx(waitTimeout)
		_, err := pc.Probe(ctx, &minimonv1.ProbeMessage{Op: minimonv1.ProbeMessage_PROBE, Name: "stranger", Fsid: "other-cluster"})
		cancel()
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("Probe(%s) with another fsid: %v, want PermissionDenied", tm.cfg.Name, err)
		}
	}

	// Answering changed nothing: same epoch and leader everywhere.
	after := monStatuses(t, mons)
	for i := range mons {
		if after[i].GetElectionEpoch() != before[i].GetElectionEpoch() || after[i].GetState() != before[i].GetState() {
			t.Fatalf("%s: %s/e%d before the probes, %s/e%d after", mons[i].cfg.Name, before[i].GetState(),
				before[i].GetElectionEpoch(), after[i].GetState(), after[i].GetElectionEpoch())
		}
	}
}

// A non-member that opens Send streams and proposes an election or starts a Paxos round, with
// a rank no member has or with a member's rank under another name, changes nothing.
func TestNonMemberEnvelopesIgnored(t *testing.T) {
	cfgs, lis := newCluster(t, 3)
	mons := startAll(t, cfgs, lis)
	li := waitQuorum(t, mons)
	kvSet(t, mons[li], "nm/k", "1")
	before := monStatuses(t, mons)
	fsid := mons[0].m.FSID()

	// envelopes a non-member sends to the monitor of rank to: for each forged identity an
	// election PROPOSE far above the current epoch (a member would make every receiver join
	// that election) and a Paxos COLLECT with a huge pn in it.
	envelopes := func(to int32) []*minimonv1.PeerEnvelope {
		epoch := before[li].GetElectionEpoch() + 101
		var out []*minimonv1.PeerEnvelope
		for _, id := range []struct {
			rank int32
			name string
		}{{7, "x"}, {0, "intruder"}} {
			out = append(out,
				&minimonv1.PeerEnvelope{Fsid: fsid, FromRank: id.rank, FromName: id.name, Epoch: epoch,
					Body: &minimonv1.PeerEnvelope_Election{Election: &minimonv1.ElectionMessage{
						Op: minimonv1.ElectionMessage_PROPOSE, From: id.rank, To: to, Epoch: epoch,
						MonmapEpoch: 1, LastCommitted: 1 << 40,
					}}},
				&minimonv1.PeerEnvelope{Fsid: fsid, FromRank: id.rank, FromName: id.name, Epoch: epoch,
					Body: &minimonv1.PeerEnvelope_Paxos{Paxos: &minimonv1.PaxosMessage{
						Op: minimonv1.PaxosMessage_COLLECT, From: id.rank, To: to, Epoch: epoch,
						Incarnation: 1, Seq: 1, Pn: 1 << 60, LastCommitted: 1 << 40,
					}}})
		}
		return out
	}

	for i, tm := range mons {
		ctx, cancel := rpcCtx(waitTimeout)
		stream, err := minimonv1.NewPeerClient(tm.cc).Send(ctx)
		if err != nil {
			cancel()
			t.Fatalf("Send stream to %s: %v", tm.cfg.Name, err)
		}
		envs := envelopes(before[i].GetRank())
		for _, env := range envs {
			if err := stream.Send(env); err != nil {
				cancel()
				t.Fatalf("Send to %s: %v", tm.cfg.Name, err)
			}
		}
		// The server answers only after it has read (and filtered) every envelope.
		if _, err := stream.CloseAndRecv(); err != nil {
			cancel()
			t.Fatalf("CloseAndRecv(%s): %v", tm.cfg.Name, err)
		}
		cancel()
		if got := gather(t, tm.m)["minimon_peer_dropped_nonmember_total"]; got != float64(len(envs)) {
			t.Fatalf("%s: minimon_peer_dropped_nonmember_total = %v, want %d", tm.cfg.Name, got, len(envs))
		}
	}

	// Had any envelope reached an elector, it would have moved to the proposed epoch at once;
	// give the loops time to show it, then check through a write (which needs the quorum).
	time.Sleep(300 * time.Millisecond)
	kvSet(t, mons[li], "nm/k", "2")
	if v := kvGet(t, mons[(li+1)%3], "nm/k"); v != "2" {
		t.Fatalf("read %q after the write, want 2", v)
	}
	after := monStatuses(t, mons)
	for i := range mons {
		b, a := before[i], after[i]
		if a.GetElectionEpoch() != b.GetElectionEpoch() || a.GetState() != b.GetState() ||
			!slices.Equal(a.GetQuorum(), b.GetQuorum()) {
			t.Fatalf("%s: %s/e%d/q%v before the intruder, %s/e%d/q%v after", mons[i].cfg.Name,
				b.GetState(), b.GetElectionEpoch(), b.GetQuorum(), a.GetState(), a.GetElectionEpoch(), a.GetQuorum())
		}
	}
}
