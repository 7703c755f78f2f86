package monitor

import (
	"time"

	"google.golang.org/protobuf/proto"

	minimonv1 "github.com/minimon/minimon/api/proto/minimon/v1"
	"github.com/minimon/minimon/internal/node"
)

// The builders below run on the event loop.

// currentMonmap is the member map in force as a reply (a copy).
func (m *Monitor) currentMonmap() *minimonv1.MonMap {
	if cur := m.l.mm.Current(); cur != nil {
		return cur
	}
	return proto.Clone(m.l.monmap).(*minimonv1.MonMap)
}

func (m *Monitor) nameOf(rank int32) string {
	for _, mi := range m.l.monmap.GetMons() {
		if mi.GetRank() == rank {
			return mi.GetName()
		}
	}
	return ""
}

func (m *Monitor) quorumNames(q []int32) []string {
	names := make([]string, 0, len(q))
	for _, r := range q {
		names = append(names, m.nameOf(r))
	}
	return names
}

// monStatus answers for this monitor alone, in quorum or not.
func (m *Monitor) monStatus() *minimonv1.MonStatusReply {
	st := m.l.node.Status()
	r := &minimonv1.MonStatusReply{
		Name:          m.cfg.Name,
		Rank:          m.l.rank,
		State:         st.Role.String(),
		ElectionEpoch: st.ElectionEpoch,
		Paxos:         &minimonv1.PaxosVersions{FirstCommitted: st.FirstCommitted, LastCommitted: st.LastCommitted},
		Monmap:        m.currentMonmap(),
	}
	if st.Role.InQuorum() {
		r.Quorum = st.Quorum
	} else {
		// Ceph's outside_quorum: the monitors known to be out of any quorum; we know ourselves.
		r.OutsideQuorum = []string{m.cfg.Name}
	}
	return r
}

func (m *Monitor) statusReply(st node.Status) *minimonv1.StatusReply {
	mm := m.currentMonmap()
	return &minimonv1.StatusReply{
		Fsid:          m.fsid,
		Health:        m.healthReply(st),
		ElectionEpoch: st.Epoch,
		QuorumNames:   m.quorumNames(st.Quorum),
		Leader:        m.nameOf(st.Leader),
		MonmapEpoch:   mm.GetEpoch(),
		Paxos:         &minimonv1.PaxosVersions{FirstCommitted: st.FirstCommitted, LastCommitted: st.LastCommitted},
	}
}

func (m *Monitor) quorumStatus(now time.Time, st node.Status) *minimonv1.QuorumStatusReply {
	return &minimonv1.QuorumStatusReply{
		ElectionEpoch:    st.Epoch,
		Quorum:           st.Quorum,
		QuorumNames:      m.quorumNames(st.Quorum),
		QuorumLeaderName: m.nameOf(st.Leader),
		QuorumAge:        now.Sub(st.QuorumSince).Seconds(),
		Monmap:           m.currentMonmap(),
	}
}

func (m *Monitor) monStat(st node.Status) *minimonv1.MonStatReply {
	return &minimonv1.MonStatReply{
		Monmap:        m.currentMonmap(),
		ElectionEpoch: st.Epoch,
		LeaderRank:    st.Leader,
		LeaderName:    m.nameOf(st.Leader),
		Quorum:        st.Quorum,
		QuorumNames:   m.quorumNames(st.Quorum),
	}
}
