package paxos

import "testing"

// BenchmarkCommit3 measures the core's own cost per committed value on three members (no I/O:
// in-memory stores, instant delivery).
func BenchmarkCommit3(b *testing.B) {
	c := newCluster(b, 3, nil)
	c.elect(0, 0, 1, 2)
	tx := encodeTx(b, kvPut("k", string(make([]byte, 128))))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.leaderP().Propose(c.now, tx); err != nil {
			b.Fatal(err)
		}
		c.stabilize()
	}
}
